//! A user-space UDP relay in front of a real DNS server, for paths the kernel cannot stage here
//! (no netem, and no way to make the conntrack insert race happen on demand): every reply held
//! back by a delay (answers that arrive late), or the second of two queries that came back to back
//! from one source port dropped, as the loser of conntrack's insert race is (kubernetes#56903).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{Netns, NsThread, Result};

/// A query that follows another from the same source address and port within this long counts
/// as sent back to back (glibc's A and AAAA leave microseconds apart).
const BACK_TO_BACK: Duration = Duration::from_millis(50);

/// Relays UDP queries arriving at `listen`:53 in `ns` to `upstream`:53 and its replies back,
/// each reply `delay` after it came, until the returned thread is dropped.
pub fn delayed(ns: &Netns, listen: Ipv4Addr, upstream: Ipv4Addr, delay: Duration) -> Result<NsThread> {
    relay(ns, listen, upstream, delay, false)
}

/// Relays as [`delayed`] without delay, dropping every query that comes within 50 ms of the
/// previous one from the same source address and port: a lone query per socket is answered, the
/// second of a back-to-back pair never is.
pub fn racing(ns: &Netns, listen: Ipv4Addr, upstream: Ipv4Addr) -> Result<NsThread> {
    relay(ns, listen, upstream, Duration::ZERO, true)
}

fn relay(
    ns: &Netns,
    listen: Ipv4Addr,
    upstream: Ipv4Addr,
    delay: Duration,
    drop_back_to_back: bool,
) -> Result<NsThread> {
    let (thread, ()) = NsThread::start(ns, move |stop, ready| {
        let (Ok(front), Ok(back)) = (UdpSocket::bind((listen, 53)), UdpSocket::bind((listen, 0))) else {
            return;
        };
        let _ = front.set_nonblocking(true);
        let _ = back.set_nonblocking(true);
        let _ = ready.send(());
        let mut buf = [0u8; 4096];
        // Query ID -> the client that asked; replies waiting for their time.
        let mut clients: HashMap<[u8; 2], SocketAddr> = HashMap::new();
        let mut held: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
        // Source address and port -> when its last query came.
        let mut last_query: HashMap<SocketAddr, Instant> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            while let Ok((n, client)) = front.recv_from(&mut buf) {
                let now = Instant::now();
                let follows = last_query.insert(client, now).is_some_and(|then| now - then < BACK_TO_BACK);
                if drop_back_to_back && follows {
                    continue;
                }
                if n >= 2 {
                    clients.insert([buf[0], buf[1]], client);
                    let _ = back.send_to(&buf[..n], (upstream, 53));
                }
            }
            while let Ok((n, _)) = back.recv_from(&mut buf) {
                if let Some(client) = (n >= 2).then(|| clients.remove(&[buf[0], buf[1]])).flatten() {
                    held.push((Instant::now() + delay, client, buf[..n].to_vec()));
                }
            }
            let now = Instant::now();
            last_query.retain(|_, then| now - *then < BACK_TO_BACK);
            held.retain(|(due, client, reply)| {
                if *due <= now {
                    let _ = front.send_to(reply, client);
                    false
                } else {
                    true
                }
            });
            std::thread::sleep(Duration::from_millis(2));
        }
    })?;
    Ok(thread)
}
