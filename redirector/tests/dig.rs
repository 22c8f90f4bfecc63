//! The real `causeway-redirector` on loopback with a directory file, asked with `dig`:
//! region steering, failover, weights, authority answers, TCP and truncation, and hostile
//! packets that must not disturb the queries around them.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use support::{Redirector, Scratch, dig_raw, have, parse_dig, replace_file, within};

/// Two regions for `shop`: eu (10.1/16, and the loopback source 127.0.0.5) and us (10.2/16).
fn directory(eu_ready: bool, headroom: [f64; 3]) -> String {
    format!(
        r#"
zones:
  - name: example.com
    nameservers:
      - {{ name: ns1.example.com, addresses: [127.0.0.53] }}
sites:
  - name: shop
    hostnames: [shop.example.com, "*.shop.example.com"]
  - name: big
    hostnames: [big.example.com]
frontends:
  - name: edge-eu
    region: eu
    sites: [shop]
    clientSubnets: [10.1.0.0/16, 127.0.0.5/32]
    endpoints:
      - {{ address: 192.0.2.1, ready: {eu_ready} }}
      - {{ address: 192.0.2.2, ready: {eu_ready} }}
      - {{ address: "2001:db8::1", ready: {eu_ready} }}
  - name: edge-us
    region: us
    sites: [shop]
    clientSubnets: [10.2.0.0/16]
    endpoints:
      - {{ address: 198.51.100.1, headroom: {h0} }}
      - {{ address: 198.51.100.2, headroom: {h1} }}
      - {{ address: 198.51.100.3, headroom: {h2} }}
  - name: edge-big
    region: big
    sites: [big]
    endpoints:
{big}
"#,
        h0 = headroom[0],
        h1 = headroom[1],
        h2 = headroom[2],
        big = (0..64)
            .map(|i| format!("      - {{ address: \"2001:db8:b::{i:x}\" }}\n      - {{ address: 203.0.113.{i} }}\n"))
            .collect::<String>(),
    )
}

fn start(scratch: &Scratch, text: &str, extra: &[&str]) -> Redirector {
    let path = scratch.path("directory.yaml");
    std::fs::write(&path, text).expect("write directory");
    Redirector::start(&path, extra)
}

#[test]
fn steers_by_client_subnet_and_source_address() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("steer");
    let server = start(
        &scratch,
        &directory(true, [1.0, 1.0, 1.0]),
        &["--answer-count", "2"],
    );

    let eu = server.dig(&["shop.example.com", "A", "+subnet=10.1.7.0/24"]);
    assert_eq!(eu.status, "NOERROR", "{}", eu.raw);
    assert!(eu.has_flag("aa"), "{:?}", eu.flags);
    let mut got = eu.addresses();
    got.sort();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2"], "{}", eu.raw);
    assert_eq!(eu.client_subnet.as_deref(), Some("10.1.7.0/24/16"));
    assert!(eu.answer.iter().all(|r| r.ttl == 30));

    let us = server.dig(&["shop.example.com", "A", "+subnet=10.2.0.0/16"]);
    assert!(
        us.addresses().iter().all(|a| a.starts_with("198.51.100.")),
        "{}",
        us.raw
    );
    assert_eq!(us.addresses().len(), 2);

    let v6 = server.dig(&["shop.example.com", "AAAA", "+subnet=10.1.0.0/16"]);
    assert_eq!(v6.addresses(), ["2001:db8::1"]);

    // No ECS: the source address places the client (127.0.0.5/32 is eu).
    let source = server.dig(&["-b", "127.0.0.5", "shop.example.com", "A"]);
    let mut got = source.addresses();
    got.sort();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2"], "{}", source.raw);
    assert_eq!(source.client_subnet, None);

    // A wildcard name, asked in mixed case, is answered under the name as asked.
    let wild = server.dig(&["CDN.Shop.example.com", "A", "+subnet=10.1.0.0/16"]);
    assert_eq!(wild.answer[0].name, "CDN.Shop.example.com.");
}

#[test]
fn fails_over_within_two_seconds_when_a_region_goes_unready() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("failover");
    let server = start(&scratch, &directory(true, [1.0, 1.0, 1.0]), &[]);
    let eu = |server: &Redirector| {
        server
            .dig(&["shop.example.com", "A", "+subnet=10.1.0.0/24"])
            .addresses()
    };
    assert!(eu(&server).iter().all(|a| a.starts_with("192.0.2.")));

    replace_file(
        &scratch.path("directory.yaml"),
        &directory(false, [1.0, 1.0, 1.0]),
    );
    let took = within(Duration::from_secs(2), || {
        let got = eu(&server);
        !got.is_empty() && got.iter().all(|a| a.starts_with("198.51.100."))
    });
    assert!(took.is_some(), "answers did not fail over to us within 2 s");

    // No IPv6 front-end is ready anywhere now: NODATA with the SOA, never a dead address.
    let v6 = server.dig(&["shop.example.com", "AAAA", "+subnet=10.1.0.0/24"]);
    assert_eq!(v6.status, "NOERROR");
    assert!(v6.answer.is_empty(), "{}", v6.raw);
    assert_eq!(v6.authority[0].rtype, "SOA");

    // And back.
    replace_file(
        &scratch.path("directory.yaml"),
        &directory(true, [1.0, 1.0, 1.0]),
    );
    assert!(
        within(Duration::from_secs(2), || eu(&server)
            .iter()
            .all(|a| a.starts_with("192.0.2.")))
        .is_some()
    );
}

/// Counts the first address of `rounds` × 100 answers for a us client.
fn first_answers(server: &Redirector, rounds: usize) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    let mut args = Vec::new();
    for _ in 0..100 {
        args.extend(["shop.example.com", "A", "+subnet=10.2.0.0/24"]);
    }
    for _ in 0..rounds {
        for answer in parse_dig(&dig_raw(server.dns, &args)) {
            if let Some(first) = answer.addresses().first() {
                *counts.entry(first.clone()).or_default() += 1;
            }
        }
    }
    counts
}

#[test]
fn answers_shift_toward_headroom() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("weights");
    let server = start(
        &scratch,
        &directory(true, [1.0, 2.0, 5.0]),
        &["--answer-count", "1"],
    );
    let counts = first_answers(&server, 16);
    let total: u32 = counts.values().sum();
    assert_eq!(total, 1600, "{counts:?}");
    let share = |a: &str| f64::from(counts.get(a).copied().unwrap_or(0)) / f64::from(total);
    // Expected 1/8, 2/8, 5/8; ±0.06 is over five standard deviations at n = 1600.
    for (address, expected) in [
        ("198.51.100.1", 0.125),
        ("198.51.100.2", 0.25),
        ("198.51.100.3", 0.625),
    ] {
        assert!(
            (share(address) - expected).abs() < 0.06,
            "{address}: {counts:?}"
        );
    }

    // Headroom moves to the first front-end: the answers follow.
    replace_file(
        &scratch.path("directory.yaml"),
        &directory(true, [6.0, 1.0, 1.0]),
    );
    assert!(
        within(Duration::from_secs(2), || {
            let counts = first_answers(&server, 1);
            counts.get("198.51.100.1").copied().unwrap_or(0) > 60
        })
        .is_some(),
        "the distribution did not follow the new headroom"
    );
    let counts = first_answers(&server, 16);
    let share = f64::from(counts["198.51.100.1"]) / f64::from(counts.values().sum::<u32>());
    assert!((share - 0.75).abs() < 0.06, "{counts:?}");
}

#[test]
fn authority_answers_soa_ns_nxdomain_nodata_refused() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("authority");
    let server = start(&scratch, &directory(true, [1.0, 1.0, 1.0]), &[]);

    let soa = server.dig(&["example.com", "SOA"]);
    assert_eq!(soa.status, "NOERROR");
    assert!(soa.has_flag("aa"));
    assert_eq!(soa.answer.len(), 1);
    assert_eq!(soa.answer[0].rtype, "SOA");
    assert!(
        soa.answer[0]
            .data
            .starts_with("ns1.example.com. hostmaster.example.com. "),
        "{}",
        soa.raw
    );

    let ns = server.dig(&["example.com", "NS"]);
    assert_eq!(ns.answer.len(), 1);
    assert_eq!(ns.answer[0].data, "ns1.example.com.");
    assert!(
        ns.additional
            .iter()
            .any(|r| r.rtype == "A" && r.data == "127.0.0.53"),
        "{}",
        ns.raw
    );

    let nx = server.dig(&["nope.example.com", "A"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert!(nx.has_flag("aa"));
    assert!(nx.answer.is_empty());
    assert_eq!(nx.authority[0].rtype, "SOA");
    assert_eq!(nx.authority[0].name, "example.com.");

    let nodata = server.dig(&["shop.example.com", "MX"]);
    assert_eq!(nodata.status, "NOERROR");
    assert!(nodata.answer.is_empty());
    assert_eq!(nodata.authority[0].rtype, "SOA");

    let refused = server.dig(&["shop.example.org", "A"]);
    assert_eq!(refused.status, "REFUSED");
    assert!(!refused.has_flag("aa"));

    // Metrics: the Site's queries by type and code; other names under site="".
    let metrics = server.metrics();
    assert!(
        metrics.contains(r#"causeway_dns_queries_total{qtype="MX",rcode="NOERROR",site="shop"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"causeway_dns_queries_total{qtype="A",rcode="NXDOMAIN",site=""} 1"#)
    );
    assert!(metrics.contains(r#"causeway_dns_queries_total{qtype="A",rcode="REFUSED",site=""} 1"#));
    assert!(
        !metrics.contains("nope"),
        "the asked name never becomes a label"
    );
    assert!(metrics.contains("causeway_dns_answer_duration_seconds_count"));
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("truncation");
    let server = start(
        &scratch,
        &directory(true, [1.0, 1.0, 1.0]),
        &["--answer-count", "64"],
    );

    // Without EDNS the limit is 512 bytes: 64 A records (16 bytes each) do not fit.
    let udp = server.dig(&["big.example.com", "A", "+noedns", "+ignore"]);
    assert!(udp.has_flag("tc"), "{}", udp.raw);
    assert!(udp.answer.is_empty());
    // dig's own fallback: told TC, it asks again over TCP and gets everything.
    let fallback = server.dig(&["big.example.com", "A", "+noedns"]);
    assert!(fallback.truncated_retry, "{}", fallback.raw);
    assert_eq!(fallback.addresses().len(), 64);
    // With EDNS and a 1232-byte buffer, 64 A records fit.
    let edns = server.dig(&["big.example.com", "A", "+bufsize=1232", "+ignore"]);
    assert!(!edns.has_flag("tc"));
    assert_eq!(edns.addresses().len(), 64);
    // 64 AAAA records (28 bytes each) exceed 1232 even when the client offers 4096.
    let v6 = server.dig(&[
        "big.example.com",
        "AAAA",
        "+bufsize=4096",
        "+notcp",
        "+ignore",
    ]);
    assert!(v6.has_flag("tc"), "{}", v6.raw);
    let tcp = server.dig(&["big.example.com", "AAAA", "+tcp"]);
    assert!(!tcp.has_flag("tc"));
    assert_eq!(tcp.addresses().len(), 64);
    assert!(server.metrics().contains("causeway_dns_truncated_total 3"));
}

#[test]
fn hostile_packets_are_answered_or_dropped_without_harm() {
    if !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("hostile");
    let server = start(&scratch, &directory(true, [1.0, 1.0, 1.0]), &[]);
    let healthy = |server: &Redirector| {
        let got = server.dig(&["shop.example.com", "A", "+subnet=10.1.0.0/24"]);
        got.status == "NOERROR" && got.addresses().len() == 2
    };
    assert!(healthy(&server));

    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    udp.connect(server.dns).expect("connect");
    let mut buffer = [0u8; 1500];
    // Too short for a header: no answer.
    udp.send(&[1, 2, 3]).expect("send");
    assert!(
        udp.recv(&mut buffer).is_err(),
        "a 3-byte packet was answered"
    );
    // A header claiming a question, then garbage: FORMERR with the same ID.
    let mut garbage = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f; 40]);
    udp.send(&garbage).expect("send");
    let n = udp.recv(&mut buffer).expect("FORMERR answer");
    assert_eq!(&buffer[..2], &[0xbe, 0xef]);
    assert_eq!(buffer[2] & 0x80, 0x80, "QR set");
    assert_eq!(buffer[3] & 0x0f, 1, "FORMERR");
    assert!(n >= 12);
    // A packet flagged as a response: never answered (no reflection loops).
    let mut response = garbage.clone();
    response[2] |= 0x80;
    udp.send(&response).expect("send");
    assert!(udp.recv(&mut buffer).is_err());
    // An oversized query (8 KiB): dropped.
    let mut oversized = garbage.clone();
    oversized.resize(8192, 0x41);
    udp.send(&oversized).expect("send");
    assert!(udp.recv(&mut buffer).is_err());
    // Random bytes in volume, interleaved with real queries.
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..5 {
        for _ in 0..200 {
            let len = rng.usize(0..600);
            let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = udp.send(&junk);
        }
        assert!(
            healthy(&server),
            "round {round}: real queries failed among junk"
        );
    }

    // TCP: a length prefix beyond any query closes that connection, and only that one.
    let mut tcp = TcpStream::connect(server.dns).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    tcp.write_all(&[0xea, 0x60]).expect("write");
    tcp.write_all(&[0x41; 1024]).expect("write");
    let mut rest = Vec::new();
    let read = tcp.read_to_end(&mut rest);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "oversized TCP query got {rest:?}"
    );
    // A framed garbage message over TCP: FORMERR, framed, and the connection stays usable.
    let mut tcp = TcpStream::connect(server.dns).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut framed = u16::try_from(garbage.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&garbage);
    tcp.write_all(&framed).expect("write");
    let mut prefix = [0u8; 2];
    tcp.read_exact(&mut prefix).expect("framed answer");
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    tcp.read_exact(&mut answer).expect("answer body");
    assert_eq!(&answer[..2], &[0xbe, 0xef]);
    assert_eq!(answer[3] & 0x0f, 1, "FORMERR");
    tcp.write_all(&framed)
        .expect("second query on the same connection");
    tcp.read_exact(&mut prefix).expect("second answer");

    assert!(healthy(&server));
    assert!(server.dig(&["shop.example.com", "A", "+tcp"]).status == "NOERROR");
    let metrics = server.metrics();
    for needle in [
        r#"causeway_dns_malformed_total{reason="short",transport="udp"}"#,
        r#"causeway_dns_malformed_total{reason="format",transport="udp"}"#,
        r#"causeway_dns_malformed_total{reason="not_query",transport="udp"}"#,
        r#"causeway_dns_malformed_total{reason="oversized",transport="udp"} 1"#,
        r#"causeway_dns_malformed_total{reason="oversized",transport="tcp"} 1"#,
        r#"causeway_dns_malformed_total{reason="format",transport="tcp"} 2"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}
