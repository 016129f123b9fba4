//! One DNS exchange over UDP or TCP with a deadline. Each UDP query gets a socket of its own, so a
//! fresh source port and a fresh conntrack entry (and a fresh DNAT choice behind a Service VIP).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

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

/// Sends `query` to `server` over UDP and waits up to `timeout` for a datagram from `server` that
/// `accept` takes; other datagrams (wrong ID, wrong question) are ignored.
pub async fn udp<T>(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
    accept: impl Fn(&[u8]) -> Option<T>,
) -> Exchange<T> {
    let socket = match connected_udp(server) {
        Ok(s) => s,
        Err(e) => return Exchange::Failed(format!("udp socket: {e}")),
    };
    let start = Instant::now();
    if let Err(e) = socket.send(query).await {
        return Exchange::Failed(format!("udp send: {e}"));
    }
    let deadline = tokio::time::Instant::from_std(start + timeout);
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Exchange::Timeout,
            Ok(Err(e)) => return Exchange::Failed(format!("udp receive: {e}")),
            Ok(Ok(n)) => {
                if let Some(reply) = accept(&buf[..n]) {
                    return Exchange::Reply(reply, start.elapsed());
                }
            }
        }
    }
}

/// A non-blocking UDP socket connected to `server`. connect(2) picks the fresh source port (no bind
/// call needed) and makes the kernel drop datagrams from any other address.
fn connected_udp(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let family = if server.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd right after.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let socket = std::net::UdpSocket::from(owned);
    socket.connect(server)?;
    UdpSocket::from_std(socket)
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
