//! Fuzzes the redirector's query path, raw packet to response bytes (`wire::respond`), over
//! UDP and TCP, against the sample directory its unit tests use (`fixtures::sample`). Any
//! packet may arrive on port 53: none may panic the server, and a response, when one is sent,
//! must be a DNS message that parses, answers the query's ID and opcode, fits the transport's
//! size limit, and carries the query's question when it answers one.
//!
//! Input: the packet, as a UDP datagram's payload (or a TCP message without its length).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use causeway_redirector::directory::{AnswerPolicy, Index};
use causeway_redirector::fixtures;
use causeway_redirector::wire::{self, CLASSIC_UDP_LIMIT, Limits, MAX_QUERY, Transport};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use libfuzzer_sys::fuzz_target;

/// The redirector's sample directory, shared with its unit tests: every kind of answer the
/// index gives.
static INDEX: LazyLock<Index> = LazyLock::new(|| {
    fixtures::sample()
        .compile(AnswerPolicy::default(), 1)
        .expect("the sample directory compiles")
});

/// The client address when the query carries no EDNS Client Subnet: inside the eu region.
const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

fuzz_target!(|packet: &[u8]| {
    let index = &*INDEX;
    let limits = Limits::default();
    // Parsed once for the checks; `respond` parses the packet itself.
    let query = Message::from_vec(packet).ok();
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut rng = fastrand::Rng::with_seed(7);
        let outcome = wire::respond(index, packet, SOURCE, transport, limits, &mut rng);
        let dropped = packet.len() < 12 || packet.len() > MAX_QUERY || packet[2] & 0x80 != 0;
        let Some(bytes) = outcome.response else {
            assert!(dropped, "a query with a readable header gets an answer");
            continue;
        };
        assert!(!dropped, "a short, oversized or response packet is dropped");
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => match query.as_ref().and_then(|q| q.edns.as_ref()) {
                Some(edns) => usize::from(edns.max_payload().min(limits.max_udp_payload))
                    .max(CLASSIC_UDP_LIMIT),
                None => CLASSIC_UDP_LIMIT,
            },
        };
        assert!(
            bytes.len() <= limit,
            "{} bytes over a limit of {limit}",
            bytes.len()
        );
        let response = match Message::from_vec(&bytes) {
            Ok(response) => response,
            Err(error) => panic!("the response does not parse: {error}\n{bytes:02x?}"),
        };
        assert_eq!(
            response.metadata.id,
            u16::from_be_bytes([packet[0], packet[1]]),
            "query ID"
        );
        assert_eq!(
            response.metadata.message_type,
            MessageType::Response,
            "QR set"
        );
        assert_eq!(
            u8::from(response.metadata.op_code),
            (packet[2] >> 3) & 0x0f,
            "opcode echoed"
        );
        // By number: 16 is both BADVERS and BADSIG, and hickory reads it back as BADSIG.
        assert_eq!(
            u16::from(response.metadata.response_code),
            u16::from(outcome.rcode),
            "rcode as reported"
        );
        if outcome.malformed.is_none() && outcome.rcode != ResponseCode::ServFail {
            let query = query.as_ref().expect("an answered query parses");
            assert_eq!(response.queries, query.queries, "the question echoed");
        }
        if outcome.truncated {
            assert!(response.metadata.truncation, "TC set on a truncated answer");
            assert!(
                response.answers.is_empty(),
                "no partial RRset in a truncated answer"
            );
        }
    }
});
