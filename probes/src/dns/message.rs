//! DNS messages for the probe: the query we send and the checks a reply must pass (same ID, same
//! question, a response) before it counts. Encoding and decoding are hickory-proto's.

use std::collections::BTreeSet;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// A reply that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub rcode: ResponseCode,
    /// The answer section, one entry per record, TTLs left out: `10.96.0.1` for records of the
    /// asked type, `CNAME other.example.` for others.
    pub answers: BTreeSet<String>,
    /// The TC bit: the answer did not fit in UDP and must be asked again over TCP.
    pub truncated: bool,
}

/// A query for `name`/`rtype` with `id`, recursion desired, as a stub resolver sends it: without
/// EDNS (glibc sends none), or with an OPT record offering `edns_bufsize` bytes (dig's +bufsize).
pub fn query(id: u16, name: &Name, rtype: RecordType, edns_bufsize: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, hickory_proto::op::OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), rtype));
    if let Some(size) = edns_bufsize {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        message.set_edns(edns);
    }
    // Encoding a message we built from a valid Name cannot fail.
    message.to_vec().expect("a plain query encodes")
}

/// Checks `bytes` as the reply to our query; `None` when it is not (another ID, another question,
/// not a response, or undecodable), so the caller keeps waiting for the real one.
pub fn check_reply(bytes: &[u8], id: u16, name: &Name, rtype: RecordType) -> Option<Reply> {
    let message = Message::from_vec(bytes).ok()?;
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        return None;
    }
    match &message.queries[..] {
        [question] if question.query_type() == rtype && question.name() == name => {}
        // An error reply may carry no question at all: Unbound's REFUSED (access-control:
        // refuse) does, and so do some FORMERR and NOTIMP replies. The ID still ties it to us.
        [] if message.metadata.response_code != ResponseCode::NoError => {}
        _ => return None,
    }
    let answers = message
        .answers
        .iter()
        .map(|record| {
            if record.record_type() == rtype {
                record.data.to_string()
            } else {
                format!("{} {}", record.record_type(), record.data)
            }
        })
        .collect();
    Some(Reply { rcode: message.metadata.response_code, answers, truncated: message.metadata.truncation })
}

/// The RCODE as dig prints it (NOERROR, SERVFAIL, NXDOMAIN, ...).
pub fn rcode_name(rcode: ResponseCode) -> String {
    let name = match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADVERS => "BADVERS",
        other => return format!("RCODE{}", u16::from(other)),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{RData, Record};

    fn name() -> Name {
        Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap()
    }

    #[test]
    fn query_bytes() {
        let bytes = query(0x1234, &name(), RecordType::A, None);
        #[rustfmt::skip]
        let header = [
            0x12, 0x34, // ID
            0x01, 0x00, // flags: query, RD
            0x00, 0x01, // one question
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // no answer, authority or additional records
        ];
        assert_eq!(&bytes[..12], &header);
        assert_eq!(&bytes[12..23], b"\x0akubernetes");
        assert_eq!(&bytes[bytes.len() - 4..], &[0x00, 0x01, 0x00, 0x01], "type A, class IN");
        // With an EDNS buffer size: one additional record, OPT, offering that many bytes.
        let edns = query(0x1234, &name(), RecordType::A, Some(1232));
        assert_eq!(&edns[10..12], &[0x00, 0x01], "one additional record");
        let opt = &edns[bytes.len()..];
        #[rustfmt::skip]
        let want = [
            0x00,       // root name
            0x00, 0x29, // type OPT
            0x04, 0xd0, // class: the UDP payload size, 1232
            0x00, 0x00, 0x00, 0x00, // extended RCODE, version, flags
            0x00, 0x00, // no options
        ];
        assert_eq!(opt, &want);
    }

    fn reply(id: u16, question: &str, rtype: RecordType) -> Message {
        let mut message = Message::response(id, hickory_proto::op::OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(question).unwrap(), rtype));
        message
    }

    #[test]
    fn accepts_the_matching_reply_and_lists_answers_without_ttls() {
        // Names compare without case (servers may echo 0x20-mixed case).
        let mut message = reply(7, "KUBERNETES.default.svc.cluster.local.", RecordType::A);
        message.add_answer(Record::from_rdata(name(), 30, RData::A(A::new(10, 96, 0, 1))));
        message.add_answer(Record::from_rdata(
            name(),
            5,
            RData::CNAME(CNAME(Name::from_ascii("x.example.").unwrap())),
        ));
        let got = check_reply(&message.to_vec().unwrap(), 7, &name(), RecordType::A).unwrap();
        assert_eq!(got.rcode, ResponseCode::NoError);
        let answers: Vec<&str> = got.answers.iter().map(String::as_str).collect();
        assert_eq!(answers, vec!["10.96.0.1", "CNAME x.example."]);
        assert!(!got.truncated);
    }

    #[test]
    fn rejects_other_ids_questions_and_queries() {
        let ok = reply(7, "kubernetes.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
        assert!(check_reply(&ok, 8, &name(), RecordType::A).is_none(), "ID");
        assert!(check_reply(&ok, 7, &name(), RecordType::AAAA).is_none(), "type");
        let other = reply(7, "other.example.", RecordType::A).to_vec().unwrap();
        assert!(check_reply(&other, 7, &name(), RecordType::A).is_none(), "name");
        let mut no_question = Message::response(7, hickory_proto::op::OpCode::Query);
        assert!(
            check_reply(&no_question.to_vec().unwrap(), 7, &name(), RecordType::A).is_none(),
            "NOERROR needs the question"
        );
        no_question.metadata.response_code = ResponseCode::Refused;
        let refused = check_reply(&no_question.to_vec().unwrap(), 7, &name(), RecordType::A).unwrap();
        assert_eq!(refused.rcode, ResponseCode::Refused, "as Unbound refuses: no question section");
        let our_query = query(7, &name(), RecordType::A, None);
        assert!(check_reply(&our_query, 7, &name(), RecordType::A).is_none(), "not a response");
        assert!(check_reply(b"\x00\x07garbage", 7, &name(), RecordType::A).is_none());
    }

    #[test]
    fn rcodes_and_truncation() {
        let mut message = reply(9, "kubernetes.default.svc.cluster.local.", RecordType::A);
        message.metadata.response_code = ResponseCode::NXDomain;
        message.metadata.truncation = true;
        let got = check_reply(&message.to_vec().unwrap(), 9, &name(), RecordType::A).unwrap();
        assert_eq!(rcode_name(got.rcode), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::from(1, 7)), "RCODE23");
        assert!(got.truncated);
    }
}
