//! DNS messages on the wire: a query's bytes in, the response's bytes out, through
//! hickory-proto — and every way a packet can be wrong, mapped to FORMERR, NOTIMP, BADVERS
//! or silence. Pure apart from the injected random number generator, so each case is
//! tested without a socket.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet as EcsOption, EdnsOption};

use crate::answer::{self, ClientSubnet, Question};
use crate::directory::{Index, SiteId};

pub mod opt;

/// The size every DNS client accepts over UDP (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// The EDNS UDP payload size we advertise and cap answers at by default (DNS flag day 2020:
/// fits the smallest common path MTU without fragmentation).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// The largest query accepted: a question plus an OPT record with options and a TSIG fit
/// well within it. Anything longer is not a query we could answer, so it is dropped.
pub const MAX_QUERY: usize = 4096;

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to the client's payload size and truncated beyond it.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
}

impl Transport {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Why a packet got no normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Too short to hold a DNS header: dropped (there is no ID to answer).
    Short,
    /// Longer than [`MAX_QUERY`]: dropped.
    Oversized,
    /// The QR bit says it is a response: dropped, so that no two servers bounce packets.
    NotQuery,
    /// The header parses but the rest does not, or has not exactly one question, or a bad
    /// EDNS Client Subnet: answered FORMERR.
    Format,
}

impl Malformed {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Oversized => "oversized",
            Self::NotQuery => "not_query",
            Self::Format => "format",
        }
    }
}

/// What handling one packet produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The response's bytes; `None` when the packet is dropped.
    pub response: Option<Vec<u8>>,
    /// The response code sent.
    pub rcode: ResponseCode,
    /// The type asked, when a question was read.
    pub qtype: Option<RecordType>,
    /// The Site asked about.
    pub site: Option<SiteId>,
    /// Whether the answer did not fit and was sent truncated (TC).
    pub truncated: bool,
    /// Set when the packet was malformed.
    pub malformed: Option<Malformed>,
}

impl Outcome {
    fn dropped(reason: Malformed) -> Self {
        Self {
            response: None,
            rcode: ResponseCode::FormErr,
            qtype: None,
            site: None,
            truncated: false,
            malformed: Some(reason),
        }
    }
}

/// Server settings that shape responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The EDNS UDP payload size advertised and the most a UDP answer may take.
    pub max_udp_payload: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// Answers the query in `packet`, which came from `source` over `transport`.
///
/// Guarantees: never panics on any input; a packet shorter than a header, longer than
/// [`MAX_QUERY`], or flagged as a response gets no answer; one whose header parses but whose
/// body does not, or whose EDNS Client Subnet option RFC 7871 §6 refuses (see
/// [`opt::client_subnet`]), gets FORMERR with its ID; an opcode other than QUERY gets
/// NOTIMP; an EDNS version above 0 gets BADVERS. Every response to a query that carried an
/// OPT record carries one too (RFC 6891 §6.1.1), FORMERR included whenever the OPT record
/// can be found in the bytes, with the query's DO bit copied (RFC 3225 §3). A UDP answer
/// longer than the client's limit (512 bytes, or its EDNS payload size capped at
/// [`Limits::max_udp_payload`]) is replaced by the header, question and OPT with TC set, so
/// the client retries over TCP.
pub fn respond(
    index: &Index,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
    limits: Limits,
    rng: &mut fastrand::Rng,
) -> Outcome {
    if packet.len() < 12 {
        return Outcome::dropped(Malformed::Short);
    }
    if packet.len() > MAX_QUERY {
        return Outcome::dropped(Malformed::Oversized);
    }
    // QR is the top bit of the third byte.
    if packet[2] & 0x80 != 0 {
        return Outcome::dropped(Malformed::NotQuery);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    // Read apart from hickory's decoding: a query that does not decode still shows
    // whether it had OPT, and the ECS option is checked on its exact octets.
    let raw_opt = opt::find(packet);
    let request = match Message::from_vec(packet) {
        Ok(request) if request.queries.len() == 1 => request,
        Ok(request) => {
            let dnssec_ok = request.edns.as_ref().map(|e| e.flags().dnssec_ok);
            return format_error(id, op_code, packet, dnssec_ok, limits);
        }
        Err(_) => {
            let dnssec_ok = raw_opt.map(|o| o.dnssec_ok);
            return format_error(id, op_code, packet, dnssec_ok, limits);
        }
    };
    let query = &request.queries[0];
    let qtype = Some(query.query_type());
    let mut response = Message::response(id, op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.add_query(query.clone());

    let mut request_ecs = None;
    if let Some(edns) = &request.edns {
        let dnssec_ok = edns.flags().dnssec_ok;
        response.set_edns(reply_opt(limits, dnssec_ok));
        // Before the options: what they mean depends on the version (RFC 6891 §6.1.3).
        if edns.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return finish(response, qtype, None, transport, limits, &request);
        }
        match raw_opt.as_ref().map(opt::client_subnet) {
            Some(Ok(ecs)) => request_ecs = ecs,
            Some(Err(_)) => return format_error(id, op_code, packet, Some(dnssec_ok), limits),
            // hickory found an OPT the byte walk did not: no known packet does this; the
            // query is answered without steering by subnet rather than refused on a guess.
            None => {}
        }
    }
    if op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return finish(response, qtype, None, transport, limits, &request);
    }

    let client = request_ecs.unwrap_or_else(|| ClientSubnet::from_address(source));
    let question = Question {
        name: query.name(),
        qtype: query.query_type(),
        qclass: query.query_class(),
    };
    let answer = answer::answer(index, &question, client, rng);
    response.metadata.response_code = answer.rcode;
    response.metadata.authoritative = answer.authoritative;
    response.answers = answer.answers;
    response.authorities = answer.authority;
    response.additionals = answer.additionals;
    if let (Some(ecs), Some(edns)) = (request_ecs, response.edns.as_mut()) {
        edns.options_mut().insert(EdnsOption::Subnet(EcsOption::new(
            ecs.address,
            ecs.source_prefix,
            answer.scope_prefix,
        )));
    }
    finish(response, qtype, answer.site, transport, limits, &request)
}

/// The OPT record of a response: our payload size, version 0, the query's DO bit.
fn reply_opt(limits: Limits, dnssec_ok: bool) -> Edns {
    let mut reply = Edns::new();
    reply.set_max_payload(limits.max_udp_payload.max(512));
    reply.set_version(0);
    reply.set_dnssec_ok(dnssec_ok);
    reply
}

/// FORMERR for a packet whose header was readable: the ID and opcode echoed, no question;
/// an OPT record when the query had one (`dnssec_ok` is its DO bit), as RFC 6891 §6.1.1
/// asks of every response, so a client learns it was EDNS that it got wrong.
fn format_error(
    id: u16,
    op_code: OpCode,
    packet: &[u8],
    dnssec_ok: Option<bool>,
    limits: Limits,
) -> Outcome {
    let mut response = Message::error_msg(id, op_code, ResponseCode::FormErr);
    response.metadata.recursion_desired = packet[2] & 0x01 != 0;
    if let Some(dnssec_ok) = dnssec_ok {
        response.set_edns(reply_opt(limits, dnssec_ok));
    }
    Outcome {
        response: response.to_vec().ok(),
        rcode: ResponseCode::FormErr,
        qtype: None,
        site: None,
        truncated: false,
        malformed: Some(Malformed::Format),
    }
}

fn finish(
    response: Message,
    qtype: Option<RecordType>,
    site: Option<SiteId>,
    transport: Transport,
    limits: Limits,
    request: &Message,
) -> Outcome {
    let rcode = response.metadata.response_code;
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match &request.edns {
            Some(edns) => {
                usize::from(edns.max_payload().min(limits.max_udp_payload)).max(CLASSIC_UDP_LIMIT)
            }
            None => CLASSIC_UDP_LIMIT,
        },
    };
    let Ok(bytes) = response.to_vec() else {
        return server_failure(&response, qtype, site);
    };
    if bytes.len() <= limit {
        return Outcome {
            response: Some(bytes),
            rcode,
            qtype,
            site,
            truncated: false,
            malformed: None,
        };
    }
    // Header, question and OPT only: a partial RRset would be taken for the whole one.
    let truncated = response.truncate();
    match truncated.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Outcome {
            response: Some(bytes),
            rcode,
            qtype,
            site,
            truncated: true,
            malformed: None,
        },
        _ => server_failure(&response, qtype, site),
    }
}

/// SERVFAIL for an answer that cannot be encoded (no known directory produces one).
fn server_failure(response: &Message, qtype: Option<RecordType>, site: Option<SiteId>) -> Outcome {
    let failure = Message::error_msg(
        response.metadata.id,
        response.metadata.op_code,
        ResponseCode::ServFail,
    );
    Outcome {
        response: failure.to_vec().ok(),
        rcode: ResponseCode::ServFail,
        qtype,
        site,
        truncated: false,
        malformed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::sample;
    use crate::directory::{AnswerPolicy, Directory, Endpoint};
    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::rdata::opt::EdnsCode;
    use hickory_proto::rr::{DNSClass, Name};

    fn index(count: usize) -> Index {
        let mut directory: Directory = sample();
        // Enough front-ends that 40 A records overflow 512 bytes.
        directory.frontends[1].endpoints = (1..=40)
            .map(|i| Endpoint {
                address: IpAddr::from([203, 0, 113, i]),
                ready: true,
                headroom: 1.0,
            })
            .collect();
        directory
            .compile(
                AnswerPolicy {
                    ttl: 30,
                    answer_count: count,
                },
                1,
            )
            .expect("compiles")
    }

    fn query(name: &str, qtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        message.to_vec().expect("encodes")
    }

    fn run(index: &Index, packet: &[u8], transport: Transport) -> Outcome {
        respond(
            index,
            packet,
            "192.0.2.1".parse().expect("ip"),
            transport,
            Limits::default(),
            &mut fastrand::Rng::with_seed(5),
        )
    }

    fn decode(outcome: &Outcome) -> Message {
        Message::from_vec(outcome.response.as_ref().expect("answered")).expect("decodes")
    }

    #[test]
    fn answers_a_query_with_its_id_flags_and_question() {
        let index = index(2);
        let got = run(
            &index,
            &query("shop.example.com.", RecordType::A, None),
            Transport::Udp,
        );
        let message = decode(&got);
        assert_eq!(message.metadata.id, 0x1234);
        assert_eq!(message.metadata.message_type, MessageType::Response);
        assert!(message.metadata.authoritative);
        assert!(message.metadata.recursion_desired);
        assert!(!message.metadata.recursion_available);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.answers.len(), 2);
        assert!(message.edns.is_none(), "no OPT without one in the query");
        assert_eq!(got.site, Some(0));
        assert_eq!(got.qtype, Some(RecordType::A));
    }

    #[test]
    fn truncates_over_the_udp_limit_and_not_over_tcp() {
        let index = index(40);
        let packet = query("shop.example.com.", RecordType::A, None);
        let udp = run(&index, &packet, Transport::Udp);
        assert!(udp.truncated);
        let message = decode(&udp);
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty());
        assert!(udp.response.as_ref().is_some_and(|r| r.len() <= 512));
        let tcp = run(&index, &packet, Transport::Tcp);
        assert!(!tcp.truncated);
        assert_eq!(decode(&tcp).answers.len(), 40);
        // A client announcing 1232 bytes gets all 40 (16 bytes each) over UDP.
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let big = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(edns)),
            Transport::Udp,
        );
        assert!(!big.truncated);
        let message = decode(&big);
        assert_eq!(message.answers.len(), 40);
        assert_eq!(message.edns.as_ref().map(Edns::max_payload), Some(1232));
    }

    #[test]
    fn ecs_steers_and_comes_back_with_a_scope() {
        let index = index(1);
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Subnet(EcsOption::new(
            "10.1.2.0".parse().expect("ip"),
            24,
            0,
        )));
        let got = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(edns)),
            Transport::Udp,
        );
        let message = decode(&got);
        assert!(
            message.answers[0]
                .data
                .to_string()
                .starts_with("198.51.100.")
        );
        let Some(EdnsOption::Subnet(ecs)) = message
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
        else {
            panic!("no ECS in {message:?}");
        };
        assert_eq!(ecs.source_prefix(), 24);
        assert_eq!(ecs.scope_prefix(), 16);
    }

    #[test]
    fn bad_ecs_is_a_format_error() {
        let index = index(1);
        let mut edns = Edns::new();
        // 10.1.0.0/12: a bit set beyond the 12-bit source prefix (raw, as the encoder would
        // drop it).
        edns.options_mut()
            .insert(EdnsOption::Unknown(8, vec![0, 1, 12, 0, 10, 1]));
        let got = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(edns)),
            Transport::Udp,
        );
        assert_eq!(got.rcode, ResponseCode::FormErr);
        assert_eq!(got.malformed, Some(Malformed::Format));
        let message = decode(&got);
        assert_eq!(message.metadata.id, 0x1234);
        assert!(
            message.edns.is_some(),
            "FORMERR to an EDNS query carries OPT"
        );
    }

    /// A query for shop.example.com A with one raw ECS option (code 8, `value`) and DO.
    fn ecs_query(value: &[u8]) -> Vec<u8> {
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        edns.options_mut()
            .insert(EdnsOption::Unknown(8, value.to_vec()));
        query("shop.example.com.", RecordType::A, Some(edns))
    }

    fn assert_formerr_with_opt(got: &Outcome, dnssec_ok: bool, case: &str) {
        assert_eq!(got.rcode, ResponseCode::FormErr, "{case}");
        assert_eq!(got.malformed, Some(Malformed::Format), "{case}");
        let message = decode(got);
        let edns = message
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{case}: no OPT"));
        assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "{case}: DO");
        assert_eq!(edns.version(), 0, "{case}");
        assert_eq!(edns.max_payload(), DEFAULT_MAX_UDP_PAYLOAD, "{case}");
        assert!(
            edns.option(EdnsCode::Subnet).is_none(),
            "{case}: a refused ECS is not echoed"
        );
    }

    #[test]
    fn ecs_with_surplus_octets_or_a_scope_is_a_format_error_with_opt() {
        let index = index(1);
        // 10.1.2.0/24 in four octets, where /24 needs three: hickory's decoder takes it.
        let surplus = ecs_query(&[0, 1, 24, 0, 10, 1, 2, 0]);
        assert!(Message::from_vec(&surplus).is_ok(), "hickory decodes it");
        assert_formerr_with_opt(&run(&index, &surplus, Transport::Udp), true, "surplus");
        let scope = ecs_query(&[0, 1, 24, 24, 10, 1, 2]);
        assert_formerr_with_opt(&run(&index, &scope, Transport::Udp), true, "scope");
        // Too few octets: hickory itself fails to decode the message; still OPT.
        let short = ecs_query(&[0, 1, 24, 0, 10]);
        assert!(Message::from_vec(&short).is_err(), "hickory refuses it");
        assert_formerr_with_opt(&run(&index, &short, Transport::Udp), true, "short");
        let family = ecs_query(&[0, 9, 0, 0]);
        assert_formerr_with_opt(&run(&index, &family, Transport::Tcp), true, "family");
        // The exact form is answered, and steered.
        let good = run(&index, &ecs_query(&[0, 1, 24, 0, 10, 1, 2]), Transport::Udp);
        assert_eq!(good.rcode, ResponseCode::NoError);
        assert_eq!(good.malformed, None);
    }

    #[test]
    fn every_format_error_to_a_query_with_opt_carries_opt() {
        let index = index(1);
        // Two questions and OPT: decodes, refused.
        let mut two = Message::query();
        for name in ["a.example.com.", "b.example.com."] {
            two.add_query(Query::query(
                Name::from_ascii(name).expect("n"),
                RecordType::A,
            ));
        }
        two.set_edns(Edns::new());
        let got = run(&index, &two.to_vec().expect("encodes"), Transport::Udp);
        assert_formerr_with_opt(&got, false, "two questions");
        // Two OPT records (RFC 6891 §6.1.1 says FORMERR): a second one appended by hand.
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        let mut twice = query("shop.example.com.", RecordType::A, Some(edns));
        twice[11] = 2;
        twice.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        assert_formerr_with_opt(&run(&index, &twice, Transport::Udp), true, "two OPT");
        // Garbage between the question and the OPT record cannot be walked past: no OPT
        // can be claimed for it, and none is invented.
        let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0x3f, b'x', b'y']);
        let got = run(&index, &garbage, Transport::Udp);
        assert_eq!(got.rcode, ResponseCode::FormErr);
        assert!(decode(&got).edns.is_none());
        // A query without OPT gets a FORMERR without OPT.
        let mut plain_two = two.clone();
        plain_two.edns = None;
        let got = run(
            &index,
            &plain_two.to_vec().expect("encodes"),
            Transport::Udp,
        );
        assert_eq!(got.rcode, ResponseCode::FormErr);
        assert!(decode(&got).edns.is_none());
    }

    #[test]
    fn the_do_bit_is_copied_into_every_response() {
        let index = index(40);
        let with_do = |dnssec_ok: bool| {
            let mut edns = Edns::new();
            edns.set_dnssec_ok(dnssec_ok);
            edns
        };
        for (name, qtype, rcode) in [
            ("shop.example.com.", RecordType::A, ResponseCode::NoError),
            ("nope.example.com.", RecordType::A, ResponseCode::NXDomain),
            ("example.net.", RecordType::A, ResponseCode::Refused),
        ] {
            for dnssec_ok in [true, false] {
                let got = run(
                    &index,
                    &query(name, qtype, Some(with_do(dnssec_ok))),
                    Transport::Tcp,
                );
                assert_eq!(got.rcode, rcode, "{name}");
                let message = decode(&got);
                let edns = message.edns.as_ref().expect("OPT");
                assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "{name} DO={dnssec_ok}");
            }
        }
        // Truncated (40 A records over a 512-byte EDNS limit) and BADVERS keep it too.
        let mut small = with_do(true);
        small.set_max_payload(512);
        let truncated = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(small)),
            Transport::Udp,
        );
        assert!(truncated.truncated);
        assert!(decode(&truncated).edns.is_some_and(|e| e.flags().dnssec_ok));
        let mut future = with_do(true);
        future.set_version(1);
        let badvers = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(future)),
            Transport::Udp,
        );
        assert_eq!(badvers.rcode, ResponseCode::BADVERS);
        assert!(decode(&badvers).edns.is_some_and(|e| e.flags().dnssec_ok));
    }

    fn class_query(qclass: DNSClass) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x4321;
        let mut question = Query::query(
            Name::from_ascii("shop.example.com.").expect("name"),
            RecordType::A,
        );
        question.set_query_class(qclass);
        message.add_query(question);
        message.to_vec().expect("encodes")
    }

    #[test]
    fn class_any_is_answered_from_in_and_other_classes_are_refused() {
        let index = index(2);
        let any = run(&index, &class_query(DNSClass::ANY), Transport::Udp);
        assert_eq!(any.rcode, ResponseCode::NoError);
        let message = decode(&any);
        assert!(message.metadata.authoritative);
        assert_eq!(
            message.queries[0].query_class(),
            DNSClass::ANY,
            "question echoed"
        );
        assert_eq!(message.answers.len(), 2);
        assert!(
            message.answers.iter().all(|r| r.dns_class == DNSClass::IN),
            "the records are IN, the one class held: {message:?}"
        );
        for qclass in [
            DNSClass::CH,
            DNSClass::HS,
            DNSClass::NONE,
            DNSClass::Unknown(2),
        ] {
            let got = run(&index, &class_query(qclass), Transport::Udp);
            assert_eq!(got.rcode, ResponseCode::Refused, "{qclass:?}");
            let message = decode(&got);
            assert!(!message.metadata.authoritative, "{qclass:?}");
            assert!(message.answers.is_empty(), "{qclass:?}");
            assert_eq!(message.queries[0].query_class(), qclass);
        }
    }

    #[test]
    fn malformed_packets_are_dropped_or_formerr() {
        let index = index(1);
        assert_eq!(
            run(&index, &[0; 5], Transport::Udp).malformed,
            Some(Malformed::Short)
        );
        assert!(run(&index, &[0; 5], Transport::Udp).response.is_none());
        let oversized = vec![0; MAX_QUERY + 1];
        assert_eq!(
            run(&index, &oversized, Transport::Tcp).malformed,
            Some(Malformed::Oversized)
        );
        // A response is never answered.
        let mut response = query("shop.example.com.", RecordType::A, None);
        response[2] |= 0x80;
        assert_eq!(
            run(&index, &response, Transport::Udp).malformed,
            Some(Malformed::NotQuery)
        );
        // Header says one question, body is garbage: FORMERR with the ID.
        let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0x3f, b'x', b'y']);
        let got = run(&index, &garbage, Transport::Udp);
        assert_eq!(got.rcode, ResponseCode::FormErr);
        let message = decode(&got);
        assert_eq!(message.metadata.id, 0xabcd);
        assert!(message.metadata.recursion_desired);
        // Two questions: FORMERR.
        let mut two = Message::query();
        two.add_query(Query::query(
            Name::from_ascii("a.example.com.").expect("n"),
            RecordType::A,
        ));
        two.add_query(Query::query(
            Name::from_ascii("b.example.com.").expect("n"),
            RecordType::A,
        ));
        let got = run(&index, &two.to_vec().expect("encodes"), Transport::Udp);
        assert_eq!(got.rcode, ResponseCode::FormErr);
        // Every truncation of a valid query is handled without a panic.
        let valid = query("shop.example.com.", RecordType::A, Some(Edns::new()));
        for end in 0..valid.len() {
            let _ = run(&index, &valid[..end], Transport::Udp);
        }
    }

    #[test]
    fn other_opcodes_and_edns_versions() {
        let index = index(1);
        let mut notify = query("example.com.", RecordType::SOA, None);
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        let got = run(&index, &notify, Transport::Udp);
        assert_eq!(got.rcode, ResponseCode::NotImp);
        let mut edns = Edns::new();
        edns.set_version(1);
        let got = run(
            &index,
            &query("shop.example.com.", RecordType::A, Some(edns)),
            Transport::Udp,
        );
        assert_eq!(got.rcode, ResponseCode::BADVERS);
        // 16 on the wire (BADVERS and BADSIG share the code).
        assert_eq!(u16::from(decode(&got).metadata.response_code), 16);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let index = index(1);
        let got = run(
            &index,
            &query("nope.example.com.", RecordType::A, None),
            Transport::Udp,
        );
        let message = decode(&got);
        assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(message.authorities[0].record_type(), RecordType::SOA);
        let refused = run(
            &index,
            &query("example.net.", RecordType::A, None),
            Transport::Udp,
        );
        assert_eq!(refused.rcode, ResponseCode::Refused);
        assert!(!decode(&refused).metadata.authoritative);
    }
}
