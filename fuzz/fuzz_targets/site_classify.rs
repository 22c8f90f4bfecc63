//! Fuzzes Site parsing and request classification: any text given as a Site manifest must be
//! accepted or refused with an error, never panic; a Site that parses and validates must
//! compile into a classifier (the data plane trusts validation for that), and classifying any
//! request head with it must give a class, type and cost within the Site's bounds.
//!
//! Input: the manifest's YAML up to the first NUL byte, then request heads
//! (`GET /path HTTP/1.1\r\nname: value\r\n...`) separated by NUL bytes.
#![no_main]

use causeway_api::{parse_frontends, parse_sites};
use causeway_gateway::classify::Classifier;
use http::request::Parts;
use libfuzzer_sys::fuzz_target;

/// Most header fields read from one fuzzed request head.
const MAX_HEADERS: usize = 32;

/// A request head's bytes as the server would hand them to classification, when they form a
/// valid HTTP/1.x head; `None` otherwise (hyper refuses those before classification).
fn request_parts(head: &[u8]) -> Option<Parts> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    // A head without its final blank line still has every field parsed so far.
    request.parse(head).ok()?;
    let mut builder = http::Request::builder()
        .method(request.method?)
        .uri(request.path?);
    for field in request.headers.iter() {
        builder = builder.header(field.name, field.value);
    }
    builder.body(()).ok().map(|r| r.into_parts().0)
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Some(manifest) = parts.next() else {
        return;
    };
    let Ok(yaml) = std::str::from_utf8(manifest) else {
        return;
    };
    // The same text as a Frontend manifest: both parsers share the document reader.
    let _ = parse_frontends("fuzz", yaml);
    let Ok(sites) = parse_sites("fuzz", yaml) else {
        return;
    };
    let heads: Vec<Parts> = parts.filter_map(request_parts).collect();
    for site in &sites {
        let classifier = match Classifier::new(&site.spec) {
            Ok(classifier) => classifier,
            Err(error) => panic!("a validated Site does not compile into a classifier: {error}"),
        };
        let types = classifier.type_names().len();
        for head in &heads {
            let profile = classifier.classify(head);
            assert!(profile.class <= 4, "class {} out of 0..=4", profile.class);
            assert!(
                profile.request_type < types,
                "type index beyond the Site's types"
            );
            assert!(profile.cost >= 1, "a request costs at least one unit");
            assert_eq!(
                classifier.profile(profile.class, profile.request_type),
                Some(profile),
                "a back-end given this profile accepts it"
            );
        }
    }
});
