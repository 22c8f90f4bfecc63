//! The sample directory that the redirector's unit tests and the `dns_query` fuzz target both
//! answer from; compiled only for them (`cfg(test)`, and `cfg(fuzzing)`, which cargo-fuzz sets).

use crate::directory::Directory;

/// One zone, `example.com`, with an in-zone name server (glue of both families) and one outside
/// it; a Site `shop` with a wildcard and a name below an empty non-terminal, and a Site outside
/// every zone; two regions with client subnets of both families, an endpoint that is not ready
/// and a front-end naming a Site that does not exist: every kind of answer the index gives, and
/// every kind of entry it skips.
pub fn sample() -> Directory {
    serde_yaml_ng::from_str(
        r#"
zones:
  - name: example.com
    nameservers:
      - { name: ns1.example.com, addresses: [192.0.2.53, "2001:db8::53"] }
      - { name: ns.other.net }
sites:
  - { name: shop, hostnames: [shop.example.com, "*.shop.example.com", www.deep.example.com] }
  - { name: outside, hostnames: [outside.example.org] }
frontends:
  - name: edge-eu
    region: eu
    sites: [shop]
    clientSubnets: [10.1.0.0/16, "2001:db8:1::/48"]
    endpoints:
      - { address: 198.51.100.1, headroom: 1 }
      - { address: 198.51.100.2, headroom: 3 }
      - { address: "2001:db8:e::1" }
      - { address: 198.51.100.9, ready: false }
  - name: edge-us
    region: us
    sites: [shop, missing]
    clientSubnets: [10.2.0.0/16, 10.0.0.0/8]
    endpoints:
      - { address: 203.0.113.1 }
"#,
    )
    .expect("sample parses")
}
