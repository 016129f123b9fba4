//! DNS exchanges with deadlines: series of UDP queries, each from a socket of its own (so a fresh
//! source port, a fresh conntrack entry and a fresh DNAT choice behind a Service VIP), and single
//! TCP exchanges. The DNS engine reaches them through [`Transport`]; [`DnsSockets`] is the real one.
//!
//! A socket may carry a group of queries sent back to back (A then AAAA, as glibc's stub resolver
//! sends them from one socket): the pattern behind the conntrack insert race, kubernetes#56903.
//!
//! Every exchange keeps listening a grace period after its timeout, so an answer that comes late
//! is told apart from one that never comes. A query in its grace period no longer holds a
//! concurrency slot: a dead server costs one grace period per run, not one per query.

#![allow(unsafe_code)] // libc calls the OS offers no safe wrapper for here; each with a SAFETY comment.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use super::conntrack::ConntrackStats;

/// Why an exchange failed outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing listens there (ICMP port unreachable for UDP, RST for TCP).
    Refused,
    /// No route to the address (ICMP host or network unreachable, or none in our table).
    NoRoute,
    /// The server accepted the TCP connection, took the query and closed (or reset) it without
    /// a reply: the server itself turns us away (an ACL, a rate limiter), not the path.
    Closed,
    /// Anything else the socket said.
    Other,
}

impl FailureKind {
    fn of(err: &io::Error) -> FailureKind {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => FailureKind::NoRoute,
            _ => FailureKind::Other,
        }
    }
}

/// How an exchange ended.
#[derive(Debug)]
pub enum Exchange<T> {
    /// `accept` took this reply after this long, within the timeout.
    Reply(T, Duration),
    /// A reply came after the timeout, within the grace period.
    Late(T, Duration),
    /// Nothing acceptable before the timeout and its grace period.
    Timeout,
    /// The socket failed (e.g. ICMP port unreachable, connection refused, no route).
    Failed(FailureKind, String),
}

/// How a series of UDP queries to one server is paced.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub count: u32,
    /// Between query starts; zero sends as fast as `concurrency` allows.
    pub interval: Duration,
    /// Queries in flight (within their timeout) at most.
    pub concurrency: u32,
    pub timeout: Duration,
    /// How long past `timeout` a query keeps listening for a late reply.
    pub grace: Duration,
    /// What each query is sent from.
    pub sockets: SocketUse,
}

/// Whether each query gets a socket (and a source port) of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketUse {
    /// A fresh socket per query, as glibc's resolver opens one: a new source port, so a new
    /// connection-tracking entry and a new DNAT choice behind a Service.
    #[default]
    PerQuery,
    /// At most `concurrency` sockets, each sending its next query once its last one was answered,
    /// as dnsperf does: a third of the system calls at high rates, and as many connection-tracking
    /// entries as sockets; behind a Service each socket keeps its backend (for conntrack's UDP
    /// timeout, 30 s by default).
    Reused,
}

impl SocketUse {
    pub fn is_per_query(&self) -> bool {
        *self == SocketUse::PerQuery
    }
}

/// The DNS exchanges the engine needs, and the one OS counter it reads. `udp_series` blocks (run
/// it on a thread of its own); `tcp` is one exchange on the caller's runtime.
pub trait Transport: Send + Sync + 'static {
    /// `pacing.count` sockets to `server`, each sending every query of `group` back to back.
    /// `next_id` gives each query's ID (written into its first two bytes); `accept(index, id,
    /// bytes)` takes the reply to `group[index]`. Returns, per socket in completion order, one
    /// exchange per query of the group, in the group's order.
    fn udp_series<T>(
        &self,
        server: SocketAddr,
        group: &[Vec<u8>],
        pacing: Pacing,
        next_id: impl FnMut() -> u16,
        accept: impl FnMut(usize, u16, &[u8]) -> Option<T>,
    ) -> Vec<Vec<Exchange<T>>>;

    /// This network namespace's conntrack statistics, summed over CPUs.
    fn conntrack(&self) -> Result<ConntrackStats, String>;

    /// One query over TCP, within `timeout` (then `grace` more for a late reply).
    fn tcp<T: Send>(
        &self,
        server: SocketAddr,
        query: &[u8],
        timeout: Duration,
        grace: Duration,
        accept: impl Fn(&[u8]) -> Option<T> + Send,
    ) -> impl Future<Output = Exchange<T>> + Send;
}

/// The real sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsSockets;

impl Transport for DnsSockets {
    /// One poll(2) over all in-flight sockets: no reactor registration per socket, which is most
    /// of the cost at high rates (benchmarked: 1.33-1.43x dnsperf against 2.1-2.5x with tokio).
    fn udp_series<T>(
        &self,
        server: SocketAddr,
        group: &[Vec<u8>],
        pacing: Pacing,
        mut next_id: impl FnMut() -> u16,
        mut accept: impl FnMut(usize, u16, &[u8]) -> Option<T>,
    ) -> Vec<Vec<Exchange<T>>> {
        /// One socket and its group of queries; `results[i]` is filled when query i ends.
        struct InFlight<T> {
            socket: std::net::UdpSocket,
            ids: Vec<u16>,
            sent: Instant,
            results: Vec<Option<Exchange<T>>>,
        }
        impl<T> InFlight<T> {
            fn finished(&self) -> bool {
                self.results.iter().all(Option::is_some)
            }
        }
        let mut done: Vec<Vec<Exchange<T>>> = Vec::with_capacity(pacing.count as usize);
        let mut in_flight: Vec<InFlight<T>> = Vec::with_capacity(pacing.concurrency as usize);
        // With reused sockets: those whose every query was answered, ready for the next. A socket
        // with a query that timed out or failed is closed (a late reply would meet the next query).
        let mut idle: Vec<std::net::UdpSocket> = Vec::new();
        let mut queries = group.to_vec();
        let mut buf = vec![0u8; 65_535];
        let mut sent = 0u32;
        let mut next_send = Instant::now();
        let slots = pacing.concurrency.max(1) as usize;
        // Sockets within their timeout hold a slot; those in their grace period do not.
        let busy = |in_flight: &[InFlight<T>], now: Instant| {
            in_flight.iter().filter(|q| now < q.sent + pacing.timeout).count()
        };
        while sent < pacing.count || !in_flight.is_empty() {
            // Start what pacing allows.
            while sent < pacing.count
                && busy(&in_flight, Instant::now()) < slots
                && Instant::now() >= next_send
            {
                sent += 1;
                next_send += pacing.interval;
                let ids: Vec<u16> = queries.iter().map(|_| next_id()).collect();
                for (query, id) in queries.iter_mut().zip(&ids) {
                    query[..2].copy_from_slice(&id.to_be_bytes());
                }
                let started = Instant::now();
                // Back to back from one socket: the second send follows the first within
                // microseconds, as glibc's (its sendmmsg is one system call for both).
                let socket = match idle.pop() {
                    Some(socket) => Ok(socket),
                    None => connected_udp(server),
                };
                let opened =
                    socket.and_then(|s| queries.iter().try_for_each(|q| s.send(q).map(drop)).map(|()| s));
                match opened {
                    Ok(socket) => {
                        let results = queries.iter().map(|_| None).collect();
                        in_flight.push(InFlight { socket, ids, sent: started, results });
                    }
                    Err(e) => done.push(
                        queries
                            .iter()
                            .map(|_| Exchange::Failed(FailureKind::of(&e), format!("udp send: {e}")))
                            .collect(),
                    ),
                }
            }
            // Wait for a reply, the next timeout or expiry, or the next send.
            let now = Instant::now();
            let mut wake = in_flight
                .iter()
                .map(|q| {
                    let timeout = q.sent + pacing.timeout;
                    if now < timeout {
                        timeout
                    } else {
                        timeout + pacing.grace
                    }
                })
                .min()
                .unwrap_or(now + pacing.timeout);
            if sent < pacing.count && busy(&in_flight, now) < slots {
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
            let ready = unsafe {
                libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &timeout, std::ptr::null())
            };
            let now = Instant::now();
            if ready > 0 {
                for index in (0..fds.len()).filter(|&i| fds[i].revents != 0) {
                    let q = &mut in_flight[index];
                    // Drain: a stray datagram (wrong ID) must not hide the real one behind it.
                    while !q.finished() {
                        match q.socket.recv(&mut buf) {
                            Ok(n) => {
                                let waiting = (0..q.ids.len()).filter(|&i| q.results[i].is_none());
                                let matched = waiting
                                    .into_iter()
                                    .find_map(|i| accept(i, q.ids[i], &buf[..n]).map(|reply| (i, reply)));
                                if let Some((i, reply)) = matched {
                                    let took = now.duration_since(q.sent);
                                    q.results[i] = Some(if took <= pacing.timeout {
                                        Exchange::Reply(reply, took)
                                    } else {
                                        Exchange::Late(reply, took)
                                    });
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                // The socket failed (an ICMP error): every query still waiting on it.
                                for result in q.results.iter_mut().filter(|r| r.is_none()) {
                                    *result = Some(Exchange::Failed(
                                        FailureKind::of(&e),
                                        format!("udp receive: {e}"),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            for q in in_flight.iter_mut().filter(|q| now >= q.sent + pacing.timeout + pacing.grace) {
                for result in q.results.iter_mut().filter(|r| r.is_none()) {
                    *result = Some(Exchange::Timeout);
                }
            }
            // Dropping a socket closes it; close(2) also takes it out of any poll set.
            let (finished, waiting): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(InFlight::finished);
            in_flight = waiting;
            for q in finished {
                let answered = q.results.iter().all(|r| matches!(r, Some(Exchange::Reply(..))));
                if pacing.sockets == SocketUse::Reused && answered && sent < pacing.count {
                    idle.push(q.socket);
                }
                done.push(q.results.into_iter().flatten().collect());
            }
        }
        done
    }

    fn conntrack(&self) -> Result<ConntrackStats, String> {
        super::conntrack::read()
    }

    /// RFC 1035 4.2.2: a two-byte length before each message.
    async fn tcp<T: Send>(
        &self,
        server: SocketAddr,
        query: &[u8],
        timeout: Duration,
        grace: Duration,
        accept: impl Fn(&[u8]) -> Option<T> + Send,
    ) -> Exchange<T> {
        let start = Instant::now();
        let exchange = async {
            let mut stream = TcpStream::connect(server)
                .await
                .map_err(|e| (FailureKind::of(&e), format!("tcp connect: {e}")))?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.map_err(|e| (FailureKind::of(&e), format!("tcp send: {e}")))?;
            // Connected and sent: an end or a reset now is the server's own doing.
            let received = |e: io::Error| {
                let kind = match e.kind() {
                    io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted => FailureKind::Closed,
                    _ => FailureKind::of(&e),
                };
                (kind, format!("tcp receive: {e}"))
            };
            let length = stream.read_u16().await.map_err(received)?;
            let mut reply = vec![0u8; usize::from(length)];
            stream.read_exact(&mut reply).await.map_err(received)?;
            Ok::<_, (FailureKind, String)>(reply)
        };
        match tokio::time::timeout(timeout + grace, exchange).await {
            Err(_) => Exchange::Timeout,
            Ok(Err((kind, e))) => Exchange::Failed(kind, e),
            Ok(Ok(bytes)) => match accept(&bytes) {
                Some(reply) if start.elapsed() <= timeout => Exchange::Reply(reply, start.elapsed()),
                Some(reply) => Exchange::Late(reply, start.elapsed()),
                None => Exchange::Failed(FailureKind::Other, "tcp reply did not match the query".into()),
            },
        }
    }
}

/// A non-blocking std UDP socket connected to `server`, for [`DnsSockets::udp_series`].
fn connected_udp(server: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = if server.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd right after.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let socket = std::net::UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    socket.connect(server)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_from_errors() {
        assert_eq!(FailureKind::of(&io::Error::from(io::ErrorKind::ConnectionRefused)), FailureKind::Refused);
        assert_eq!(FailureKind::of(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)), FailureKind::NoRoute);
        assert_eq!(FailureKind::of(&io::Error::from_raw_os_error(libc::ENETUNREACH)), FailureKind::NoRoute);
        assert_eq!(FailureKind::of(&io::Error::from(io::ErrorKind::PermissionDenied)), FailureKind::Other);
    }
}
