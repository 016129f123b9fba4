//! A user-space UDP relay in front of a real DNS server, for paths the kernel cannot stage here
//! (no netem): every reply held back by a delay (answers that arrive late).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{Netns, NsThread, Result};

/// Relays UDP queries arriving at `listen`:53 in `ns` to `upstream`:53 and its replies back,
/// each reply `delay` after it came, until the returned thread is dropped.
pub fn delayed(ns: &Netns, listen: Ipv4Addr, upstream: Ipv4Addr, delay: Duration) -> Result<NsThread> {
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
        while !stop.load(Ordering::Relaxed) {
            while let Ok((n, client)) = front.recv_from(&mut buf) {
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
