//! RFC 2136 export against a real BIND: `named` (Debian bind9) started on loopback with a
//! generated configuration, a primary zone open to updates signed with a TSIG key, and the
//! real `causeway-redirector` exporting a Site to it; checked with `dig` at BIND.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use data_encoding::BASE64;
use support::{Redirector, Scratch, dig, have, replace_file, try_dig, within};

/// A `named` process, stopped when dropped.
struct Named {
    child: Child,
    address: SocketAddr,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn named_binary() -> String {
    ["/usr/sbin/named", "/usr/bin/named"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("named")
        .to_owned()
}

fn start_named(scratch: &Scratch, secret: &str) -> Named {
    let dir = scratch.0.display().to_string();
    let port = free_port();
    std::fs::write(
        scratch.path("example.net.db"),
        "$TTL 300\n\
         @ IN SOA ns1.example.net. hostmaster.example.net. 1 3600 600 604800 30\n\
         @ IN NS ns1.example.net.\n\
         ns1 IN A 127.0.0.1\n",
    )
    .expect("zone file");
    let config = format!(
        r#"
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
key "causeway-export" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "example.net" {{
    type primary;
    file "{dir}/example.net.db";
    journal "{dir}/example.net.jnl";
    allow-update {{ key "causeway-export"; }};
}};
"#
    );
    let conf = scratch.path("named.conf");
    std::fs::write(&conf, config).expect("named.conf");
    let child = Command::new(named_binary())
        .args(["-g", "-4", "-n", "1", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(scratch.path("named.log")).expect("log"),
        ))
        .spawn()
        .expect("start named");
    let named = Named {
        child,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let up = within(Duration::from_secs(15), || {
        try_dig(named.address, &["example.net", "SOA"]).is_some_and(|d| d.status == "NOERROR")
    });
    if up.is_none() {
        let log = std::fs::read_to_string(scratch.path("named.log")).unwrap_or_default();
        panic!("named did not start:\n{log}");
    }
    named
}

fn directory(named: SocketAddr, secret: &str, wrong: &str, eu_ready: bool) -> String {
    format!(
        r#"
zones:
  - name: example.com
    nameservers: [{{ name: ns1.example.com }}]
sites:
  - name: shop
    hostnames: [shop.example.com, shop.example.net]
  - name: other
    hostnames: [other.example.net]
frontends:
  - name: edge-eu
    region: eu
    sites: [shop, other]
    endpoints:
      - {{ address: 192.0.2.1, ready: {eu_ready} }}
      - {{ address: "2001:db8::1", ready: {eu_ready} }}
  - name: edge-us
    region: us
    sites: [shop]
    endpoints:
      - {{ address: 198.51.100.1 }}
exports:
  - site: shop
    server: {named}
    zone: example.net
    ttl: 20
    key: {{ name: causeway-export, algorithm: hmac-sha256, secret: "{secret}" }}
  - site: other
    server: {named}
    zone: example.net
    key: {{ name: causeway-export, secret: "{wrong}" }}
"#
    )
}

fn sorted(mut addresses: Vec<String>) -> Vec<String> {
    addresses.sort();
    addresses
}

#[test]
fn exports_a_sites_front_ends_to_bind_with_tsig() {
    if !have("named", "bind9") || !have("dig", "bind9-dnsutils") {
        return;
    }
    let scratch = Scratch::new("rfc2136");
    let secret = BASE64.encode(&[0x5a; 32]);
    let wrong = BASE64.encode(&[0x13; 32]);
    let named = start_named(&scratch, &secret);
    assert_eq!(
        dig(named.address, &["shop.example.net", "A"]).status,
        "NXDOMAIN"
    );

    let path = scratch.path("directory.yaml");
    std::fs::write(&path, directory(named.address, &secret, &wrong, true)).expect("write");
    let redirector = Redirector::start(&path, &[]);

    // Every ready front-end of every region lands in BIND, A and AAAA, with the export TTL.
    let landed = within(Duration::from_secs(5), || {
        sorted(dig(named.address, &["shop.example.net", "A"]).addresses())
            == ["192.0.2.1", "198.51.100.1"]
    });
    assert!(landed.is_some(), "the export did not reach BIND");
    let v6 = dig(named.address, &["shop.example.net", "AAAA"]);
    assert_eq!(v6.addresses(), ["2001:db8::1"]);
    assert!(v6.answer.iter().all(|r| r.ttl == 20));

    // eu goes unready: BIND's RRsets are replaced, the AAAA RRset is gone.
    replace_file(&path, &directory(named.address, &secret, &wrong, false));
    let followed = within(Duration::from_secs(3), || {
        dig(named.address, &["shop.example.net", "A"]).addresses() == ["198.51.100.1"]
    });
    assert!(followed.is_some(), "BIND did not follow the change");
    let v6 = dig(named.address, &["shop.example.net", "AAAA"]);
    assert_eq!(v6.status, "NOERROR");
    assert!(v6.answer.is_empty(), "{}", v6.raw);

    // The Site exported with a wrong key is refused by BIND, counted, and never lands.
    let metrics = redirector.metrics();
    assert!(
        metrics.contains(r#"causeway_dns_exports_total{result="error",site="other"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"causeway_dns_exports_total{result="ok",site="shop"} 2"#),
        "{metrics}"
    );
    assert_eq!(
        dig(named.address, &["other.example.net", "A"]).status,
        "NXDOMAIN"
    );
    // The redirector itself keeps answering its own zone.
    assert_eq!(
        redirector.dig(&["shop.example.com", "A"]).addresses(),
        ["198.51.100.1"]
    );
}
