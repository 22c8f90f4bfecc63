//! The real `causeway-redirector` on loopback, asked over UDP with hand-built packets where
//! the protocol is easy to get subtly wrong: the DO bit (RFC 3225 §3), EDNS Client Subnet
//! octets and scope (RFC 7871 §6), OPT in every FORMERR to an EDNS query (RFC 6891 §6.1.1),
//! and query classes other than IN. No `dig` needed: these packets are ones dig will not send.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use support::{Redirector, Scratch};

const DIRECTORY: &str = r#"
zones:
  - name: example.com
    nameservers:
      - { name: ns1.example.com, addresses: [127.0.0.53] }
sites:
  - name: shop
    hostnames: [shop.example.com]
frontends:
  - name: edge-eu
    region: eu
    sites: [shop]
    clientSubnets: [10.1.0.0/16]
    endpoints:
      - { address: 192.0.2.1 }
  - name: edge-us
    region: us
    sites: [shop]
    clientSubnets: [10.2.0.0/16]
    endpoints:
      - { address: 198.51.100.1 }
"#;

fn start(name: &str) -> (Scratch, Redirector) {
    let scratch = Scratch::new(name);
    let path = scratch.path("directory.yaml");
    std::fs::write(&path, DIRECTORY).expect("write directory");
    let server = Redirector::start(&path, &[]);
    (scratch, server)
}

/// Sends `packet` over UDP and returns the answer's bytes; the query is sent again every
/// 2 s (a UDP client's way) until an answer with its ID comes, for up to 20 s.
fn ask_raw(server: &Redirector, packet: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(server.dns).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket.send(packet).expect("send");
        while let Ok(n) = socket.recv(&mut buffer) {
            if n >= 2 && buffer[..2] == packet[..2] {
                return buffer[..n].to_vec();
            }
        }
    }
    panic!("no answer within 20 s to {packet:02x?}");
}

fn ask(server: &Redirector, packet: &[u8]) -> Message {
    Message::from_vec(&ask_raw(server, packet)).expect("the answer decodes")
}

/// A query for `name` `qtype` (class IN) with ID `id` and, when given, an OPT record.
fn query(id: u16, name: &str, qtype: RecordType, edns: Option<Edns>) -> Message {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message
}

fn edns(dnssec_ok: bool, options: &[(u16, &[u8])]) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(dnssec_ok);
    for (code, value) in options {
        // Raw, so the bytes on the wire are exactly these (the encoder would fix an ECS).
        edns.options_mut()
            .insert(EdnsOption::Unknown(*code, value.to_vec()));
    }
    edns
}

fn bytes(message: &Message) -> Vec<u8> {
    message.to_vec().expect("encodes")
}

fn assert_formerr_with_opt(answer: &Message, dnssec_ok: bool, case: &str) {
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::FormErr,
        "{case}: {answer:?}"
    );
    let opt = answer
        .edns
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: FORMERR without OPT: {answer:?}"));
    assert_eq!(opt.flags().dnssec_ok, dnssec_ok, "{case}: DO");
    assert_eq!(opt.version(), 0, "{case}");
}

#[test]
fn the_do_bit_comes_back_as_it_was_sent() {
    let (_scratch, server) = start("do-bit");
    for (id, dnssec_ok) in [(1, true), (2, false)] {
        for (name, rcode) in [
            ("shop.example.com.", ResponseCode::NoError),
            ("nope.example.com.", ResponseCode::NXDomain),
            ("shop.example.org.", ResponseCode::Refused),
        ] {
            let sent = query(id, name, RecordType::A, Some(edns(dnssec_ok, &[])));
            let answer = ask(&server, &bytes(&sent));
            assert_eq!(answer.metadata.response_code, rcode, "{name}");
            let opt = answer.edns.as_ref().expect("OPT in the answer");
            assert_eq!(
                opt.flags().dnssec_ok,
                dnssec_ok,
                "{name} with DO={dnssec_ok}"
            );
        }
    }
    // Without OPT in the query, none in the answer.
    let plain = ask(
        &server,
        &bytes(&query(3, "shop.example.com.", RecordType::A, None)),
    );
    assert!(plain.edns.is_none(), "{plain:?}");
}

#[test]
fn client_subnet_octets_and_scope_are_checked() {
    let (_scratch, server) = start("ecs");
    let ecs = |id, value: &[u8]| {
        bytes(&query(
            id,
            "shop.example.com.",
            RecordType::A,
            Some(edns(true, &[(8, value)])),
        ))
    };
    // 10.2.0.0/16 in exactly two octets: steered to us, scope 16.
    let exact = ask(&server, &ecs(10, &[0, 1, 16, 0, 10, 2]));
    assert_eq!(exact.metadata.response_code, ResponseCode::NoError);
    assert_eq!(exact.answers[0].data.to_string(), "198.51.100.1");
    let Some(EdnsOption::Subnet(back)) =
        exact.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
    else {
        panic!("no ECS echoed: {exact:?}");
    };
    assert_eq!((back.source_prefix(), back.scope_prefix()), (16, 16));

    // The same /16 in four octets: more than SOURCE PREFIX-LENGTH needs.
    let surplus = ask(&server, &ecs(11, &[0, 1, 16, 0, 10, 2, 0, 0]));
    assert_formerr_with_opt(&surplus, true, "surplus octets");
    // A non-zero SCOPE PREFIX-LENGTH in a query.
    let scope = ask(&server, &ecs(12, &[0, 1, 16, 8, 10, 2]));
    assert_formerr_with_opt(&scope, true, "scope in a query");
    // Fewer octets than the prefix needs (hickory's decoder fails on this one).
    let short = ask(&server, &ecs(13, &[0, 1, 16, 0, 10]));
    assert_formerr_with_opt(&short, true, "too few octets");
    // Bits beyond the prefix.
    let bits = ask(&server, &ecs(14, &[0, 1, 12, 0, 10, 2]));
    assert_formerr_with_opt(&bits, true, "bits beyond the prefix");
    for answer in [&surplus, &scope, &short, &bits] {
        assert!(answer.answers.is_empty());
        assert!(
            answer
                .edns
                .as_ref()
                .is_some_and(|e| e.option(EdnsCode::Subnet).is_none()),
            "a refused ECS is not echoed: {answer:?}"
        );
    }
    // Counted as malformed (at least once each: a slow answer makes the client ask again).
    let metrics = server.metrics();
    let counted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"causeway_dns_malformed_total{reason="format",transport="udp"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(counted >= 4.0, "{metrics}");
}

#[test]
fn every_format_error_to_an_edns_query_carries_opt() {
    let (_scratch, server) = start("formerr-opt");
    // Two questions.
    let mut two = query(
        20,
        "shop.example.com.",
        RecordType::A,
        Some(edns(false, &[])),
    );
    two.add_query(Query::query(
        Name::from_ascii("example.com.").expect("name"),
        RecordType::SOA,
    ));
    assert_formerr_with_opt(&ask(&server, &bytes(&two)), false, "two questions");
    // Two OPT records: the second appended by hand, the additional count raised.
    let mut twice = bytes(&query(
        21,
        "shop.example.com.",
        RecordType::A,
        Some(edns(true, &[])),
    ));
    twice[11] = 2;
    twice.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    assert_formerr_with_opt(&ask(&server, &twice), true, "two OPT records");
    // An option list whose length runs past the OPT record's data.
    let mut cut = bytes(&query(
        22,
        "shop.example.com.",
        RecordType::A,
        Some(edns(true, &[(10, &[1, 2, 3, 4, 5, 6, 7, 8])])),
    ));
    let len = cut.len();
    // The option's length field says 9 where its 8 value bytes end the packet.
    cut[len - 10..len - 8].copy_from_slice(&[0, 9]);
    assert_formerr_with_opt(&ask(&server, &cut), true, "option cut short");
    // No OPT in the query: none in the FORMERR.
    let mut plain = two.clone();
    plain.metadata.id = 23;
    plain.edns = None;
    let answer = ask(&server, &bytes(&plain));
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
    assert!(answer.edns.is_none(), "{answer:?}");
}

#[test]
fn class_any_is_answered_as_in_and_other_classes_are_refused() {
    let (_scratch, server) = start("classes");
    let asked = |id, qclass| {
        let mut message = query(
            id,
            "shop.example.com.",
            RecordType::A,
            Some(edns(false, &[])),
        );
        message.queries[0].set_query_class(qclass);
        ask(&server, &bytes(&message))
    };
    let any = asked(30, DNSClass::ANY);
    assert_eq!(any.metadata.response_code, ResponseCode::NoError);
    assert!(any.metadata.authoritative);
    assert_eq!(any.queries[0].query_class(), DNSClass::ANY);
    assert_eq!(any.answers.len(), 2, "{any:?}");
    assert!(any.answers.iter().all(|r| r.dns_class == DNSClass::IN));
    for (id, qclass) in [
        (31, DNSClass::CH),
        (32, DNSClass::HS),
        (33, DNSClass::NONE),
        (34, DNSClass::Unknown(2)),
    ] {
        let answer = asked(id, qclass);
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::Refused,
            "{qclass:?}"
        );
        assert!(!answer.metadata.authoritative, "{qclass:?}");
        assert!(answer.answers.is_empty(), "{qclass:?}");
        assert!(answer.edns.is_some(), "{qclass:?}: OPT kept");
    }
}
