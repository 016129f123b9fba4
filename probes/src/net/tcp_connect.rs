//! A TCP connect to a service every interval, timed, on a thread of its own (`arp --watch --tcp`):
//! the stalls a client of the VIP sees, to set beside the ARP events.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::now_since_epoch;

/// One connect: when it started (wall clock) and how long it took, or why it failed.
pub type ConnectResult = (Duration, Result<Duration, String>);

/// Where a watch gets its connect results from.
pub trait ConnectTimer {
    /// The connects that finished since the last call, oldest first.
    fn finished(&mut self) -> Vec<ConnectResult>;
}

/// Connects to `target` every `interval` until dropped.
pub struct ConnectLoop {
    results: mpsc::Receiver<ConnectResult>,
    stop: Arc<AtomicBool>,
}

impl ConnectLoop {
    pub fn start(target: SocketAddr, interval: Duration, timeout: Duration) -> ConnectLoop {
        let (tx, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // The thread sees the flag (or the closed channel) after its current connect and ends by
        // itself; nobody waits for it, which could add a whole connect timeout to the run.
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let started = now_since_epoch();
                let clock = Instant::now();
                let result = TcpStream::connect_timeout(&target, timeout)
                    .map(|_| clock.elapsed())
                    .map_err(|e| e.to_string());
                if tx.send((started, result)).is_err() {
                    break;
                }
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        ConnectLoop { results, stop }
    }
}

impl ConnectTimer for ConnectLoop {
    fn finished(&mut self) -> Vec<ConnectResult> {
        self.results.try_iter().collect()
    }
}

impl Drop for ConnectLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
