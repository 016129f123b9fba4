//! DNS exchanges with deadlines: series of UDP queries, each from a socket of its own (so a fresh
//! source port, a fresh conntrack entry and a fresh DNAT choice behind a Service VIP), and single
//! TCP exchanges.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How an exchange ended.
#[derive(Debug)]
pub enum Exchange<T> {
    /// `accept` took this reply after this long.
    Reply(T, Duration),
    /// Nothing acceptable before the timeout.
    Timeout,
    /// The socket failed at once (e.g. ICMP port unreachable, connection refused).
    Failed(String),
}

/// How a series of UDP queries to one server is paced.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub count: u32,
    /// Between query starts; zero sends as fast as `concurrency` allows.
    pub interval: Duration,
    /// Queries in flight at most.
    pub concurrency: u32,
    pub timeout: Duration,
}

/// Runs `pacing.count` UDP queries to `server`, each from a socket of its own (a fresh source port),
/// with one poll(2) over all in-flight sockets: no reactor registration per socket, which is most
/// of the cost at high rates. `template` is the query; `next_id` gives each query's ID (written into
/// its first two bytes); `accept(id, bytes)` takes the matching reply. Blocking: run it on a thread
/// of its own. Returns one exchange per query, in completion order.
pub fn udp_series<T>(
    server: SocketAddr,
    template: &[u8],
    pacing: Pacing,
    mut next_id: impl FnMut() -> u16,
    mut accept: impl FnMut(u16, &[u8]) -> Option<T>,
) -> Vec<Exchange<T>> {
    struct InFlight {
        socket: std::net::UdpSocket,
        id: u16,
        sent: Instant,
    }
    let mut done = Vec::with_capacity(pacing.count as usize);
    let mut in_flight: Vec<InFlight> = Vec::with_capacity(pacing.concurrency as usize);
    let mut query = template.to_vec();
    let mut buf = vec![0u8; 4096];
    let mut sent = 0u32;
    let mut next_send = Instant::now();
    while sent < pacing.count || !in_flight.is_empty() {
        // Start what pacing allows.
        while sent < pacing.count
            && in_flight.len() < pacing.concurrency.max(1) as usize
            && Instant::now() >= next_send
        {
            sent += 1;
            next_send += pacing.interval;
            let id = next_id();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let started = Instant::now();
            match connected_udp(server).and_then(|s| s.send(&query).map(|_| s)) {
                Ok(socket) => in_flight.push(InFlight { socket, id, sent: started }),
                Err(e) => done.push(Exchange::Failed(format!("udp send: {e}"))),
            }
        }
        // Wait for a reply, the next expiry, or the next send.
        let now = Instant::now();
        let mut wake =
            in_flight.iter().map(|q| q.sent + pacing.timeout).min().unwrap_or(now + pacing.timeout);
        if sent < pacing.count && in_flight.len() < pacing.concurrency.max(1) as usize {
            wake = wake.min(next_send);
        }
        let mut fds: Vec<libc::pollfd> = in_flight
            .iter()
            .map(|q| libc::pollfd { fd: q.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let wait = wake.saturating_duration_since(now);
        let timeout =
            libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as _ };
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready =
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &timeout, std::ptr::null()) };
        let now = Instant::now();
        let mut finished = vec![false; in_flight.len()];
        if ready > 0 {
            for index in (0..fds.len()).filter(|&i| fds[i].revents != 0) {
                let q = &in_flight[index];
                // Drain: a stray datagram (wrong ID) must not hide the real one behind it.
                loop {
                    match q.socket.recv(&mut buf) {
                        Ok(n) => {
                            if let Some(reply) = accept(q.id, &buf[..n]) {
                                done.push(Exchange::Reply(reply, now.duration_since(q.sent)));
                                finished[index] = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            done.push(Exchange::Failed(format!("udp receive: {e}")));
                            finished[index] = true;
                            break;
                        }
                    }
                }
            }
        }
        for (index, q) in in_flight.iter().enumerate() {
            if !finished[index] && now >= q.sent + pacing.timeout {
                done.push(Exchange::Timeout);
                finished[index] = true;
            }
        }
        // Dropping a socket closes it; close(2) also takes it out of any poll set.
        let mut index = 0;
        in_flight.retain(|_| {
            index += 1;
            !finished[index - 1]
        });
    }
    done
}

/// A non-blocking std UDP socket connected to `server`, for [`udp_series`].
fn connected_udp(server: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let family = if server.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd right after.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let socket = std::net::UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    socket.connect(server)?;
    Ok(socket)
}

/// Sends `query` to `server` over TCP (RFC 1035 4.2.2: a two-byte length before each message) and
/// reads one reply, all within `timeout`.
pub async fn tcp<T>(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
    accept: impl Fn(&[u8]) -> Option<T>,
) -> Exchange<T> {
    let start = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.map_err(|e| format!("tcp connect: {e}"))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(|e| format!("tcp send: {e}"))?;
        let length = stream.read_u16().await.map_err(|e| format!("tcp receive: {e}"))?;
        let mut reply = vec![0u8; usize::from(length)];
        stream.read_exact(&mut reply).await.map_err(|e| format!("tcp receive: {e}"))?;
        Ok::<_, String>(reply)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Exchange::Timeout,
        Ok(Err(e)) => Exchange::Failed(e),
        Ok(Ok(bytes)) => match accept(&bytes) {
            Some(reply) => Exchange::Reply(reply, start.elapsed()),
            None => Exchange::Failed("tcp reply did not match the query".into()),
        },
    }
}
