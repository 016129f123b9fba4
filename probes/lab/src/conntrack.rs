//! Filling a namespace's connection tracking table, as a busy node's fills: TCP connections over
//! loopback, each a handshake the kernel tracks and marks assured (so a new flow cannot evict it to
//! make room), closed with a reset so no socket lingers, the entries kept for minutes. When the
//! table is full, the next connection's first packet is dropped: the kernel counts it in `drop` and
//! logs "nf_conntrack: table full, dropping packet". (Its garbage collector does evict closing TCP
//! entries, slowly, once the table is over 95% full: the table then hovers just under the limit.)
//!
//! The limit is the host's (nf_conntrack_max is read-only in a child namespace, 262,144 by default),
//! the count the namespace's own: filling it takes that many entries (about 80 MiB of kernel
//! memory, freed with the namespace), about 10 s on 2 cores.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::{LabError, Netns, Result};

/// Connections per destination address: fewer than the ephemeral ports, so every one is a new
/// entry.
const PER_DESTINATION: u32 = 2000;
const PORT: u16 = 7000;

/// Makes tracking start in `ns` (a rule that uses it), keeps closed connections' entries for 10
/// minutes, and opens up to `flows` connections, stopping at the first that does not complete
/// within a second while the table is full (99% of the limit). Returns how many completed.
pub fn fill(ns: &Netns, flows: u32) -> Result<u32> {
    ns.sh("ip link set lo up && \
         nft add table inet np_conntrack && \
         nft add chain inet np_conntrack out '{ type filter hook output priority 0; }' && \
         nft add rule inet np_conntrack out ct state new counter && \
         sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_close=600")?;
    let ns = ns.clone();
    std::thread::spawn(move || -> Result<u32> {
        ns.enter_current_thread()?;
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))
            .map_err(|e| LabError(format!("listening on {PORT}: {e}")))?;
        let (mut made, mut timeouts) = (0, 0);
        for i in 0..flows {
            let d = i / PER_DESTINATION;
            let to = SocketAddr::from((Ipv4Addr::new(127, 1, (d / 250) as u8, (1 + d % 250) as u8), PORT));
            let Ok(client) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
                // Full, or a loaded machine that took a second: go on unless the table is full (or
                // it keeps timing out: the lab's own assertions then say what the table holds).
                timeouts += 1;
                if full()? || timeouts >= 5 {
                    break;
                }
                continue;
            };
            let (server, _) = listener.accept().map_err(|e| LabError(format!("accepting: {e}")))?;
            reset_on_close(&client);
            reset_on_close(&server);
            made += 1;
        }
        Ok(made)
    })
    .join()
    .map_err(|_| LabError("the filling thread panicked".into()))?
}

/// Whether this thread's namespace's table is at 99% of its limit or more.
fn full() -> Result<bool> {
    let read = |name: &str| -> Result<u64> {
        let path = format!("/proc/sys/net/netfilter/{name}");
        let text = std::fs::read_to_string(&path).map_err(|e| LabError(format!("reading {path}: {e}")))?;
        text.trim().parse().map_err(|_| LabError(format!("{path}: not a number")))
    };
    Ok(read("nf_conntrack_count")? * 100 >= read("nf_conntrack_max")? * 99)
}

/// SO_LINGER 0: close sends a reset, and the socket (not the entry) is gone at once.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads one linger struct from a valid pointer, on an open socket.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Sends `flows` UDP datagrams from one socket in `ns`, each to a new destination port of
/// `upstream` (and the addresses after it, 64,000 ports each: a DNS server that never answers,
/// say), which `ns` must route somewhere: each is a new, unanswered entry, the kind the kernel
/// evicts first when the table is full. Returns how many the kernel took.
pub fn unanswered_udp(ns: &Netns, upstream: Ipv4Addr, flows: u32) -> Result<u32> {
    let ns = ns.clone();
    std::thread::spawn(move || -> Result<u32> {
        ns.enter_current_thread()?;
        let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| LabError(format!("a UDP socket: {e}")))?;
        let mut sent = 0;
        for i in 0..flows {
            let port = 1024 + (i % 64_000) as u16;
            let to = Ipv4Addr::from(u32::from(upstream) + i / 64_000);
            sent += u32::from(socket.send_to(b"q", (to, port)).is_ok());
        }
        Ok(sent)
    })
    .join()
    .map_err(|_| LabError("the sending thread panicked".into()))?
}
