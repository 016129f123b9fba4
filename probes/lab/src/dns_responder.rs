//! A minimal authoritative DNS responder for labs on machines without dnsmasq: over UDP, it answers
//! every A question for one name with one address, and anything else with NXDOMAIN.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{Netns, NsThread, Result};

/// Serves `name` (e.g. `kubernetes.default.svc.cluster.local`) -> `answer` on `listen`:53 inside
/// `ns` until the returned thread is dropped.
pub fn serve(ns: &Netns, listen: Ipv4Addr, name: &str, answer: Ipv4Addr) -> Result<NsThread> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let (thread, ()) = NsThread::start(ns, move |stop, ready| {
        let Ok(socket) = UdpSocket::bind((listen, 53)) else { return };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = ready.send(());
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
            if let Some(reply) = respond(&buf[..n], &name, answer) {
                let _ = socket.send_to(&reply, peer);
            }
        }
    })?;
    Ok(thread)
}

/// The reply to one query, or `None` for anything that is not a plain one-question query.
fn respond(query: &[u8], name: &str, answer: Ipv4Addr) -> Option<Vec<u8>> {
    // Header: ID(2) flags(2) QDCOUNT(2) ANCOUNT(2) NSCOUNT(2) ARCOUNT(2).
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let question_end = at + 4; // QTYPE(2) QCLASS(2)
    let qtype = query.get(at..at + 2)?;
    let matches = labels.join(".") == name;
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    let rcode = if matches { 0 } else { 3 };
    reply.extend_from_slice(&[0x84 | (query[2] & 0x01), 0x80 | rcode]); // QR AA (RD copied) RA, RCODE
    let answers: u8 = (matches && qtype == [0, 1]).into();
    reply.extend_from_slice(&[0, 1, 0, answers, 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if answers == 1 {
        // Name: pointer to the question (offset 12); type A, class IN, TTL 30, 4 bytes of address.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        reply.extend_from_slice(&answer.octets());
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u8) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, qtype, 0, 1]);
        q
    }

    #[test]
    fn answers_its_name_and_refuses_others() {
        let reply = respond(
            &query("Kubernetes.default.svc.cluster.local", 1),
            "kubernetes.default.svc.cluster.local",
            Ipv4Addr::new(10, 96, 0, 1),
        )
        .unwrap();
        assert_eq!(&reply[..4], &[0x12, 0x34, 0x85, 0x80], "ID, QR AA RD, RA NOERROR");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 96, 0, 1]);
        let other = respond(
            &query("example.org", 1),
            "kubernetes.default.svc.cluster.local",
            Ipv4Addr::new(10, 96, 0, 1),
        )
        .unwrap();
        assert_eq!(other[3] & 0x0f, 3, "NXDOMAIN");
        assert!(respond(&[0; 5], "x", Ipv4Addr::LOCALHOST).is_none());
    }
}
