//! Header rewriting of a proxy: hop-by-hop headers removed (RFC 9110 §7.6.1), the client's
//! address, scheme and host recorded (`X-Forwarded-*`, `Forwarded` of RFC 7239, `Via`), and
//! a request id carried to the origin; which authority a request is for, and the transfer
//! codings it may use.

use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

/// Headers meaningful only for one connection, never forwarded, whatever `Connection` names.
static ALWAYS_HOP_BY_HOP: [HeaderName; 8] = [
    TRANSFER_ENCODING,
    CONNECTION,
    TE,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRAILER,
    HeaderName::from_static("http2-settings"),
];

/// Where `Transfer-Encoding` is in [`ALWAYS_HOP_BY_HOP`]: its removal also removes the
/// `Content-Length` it overrode.
const TRANSFER_ENCODING_INDEX: usize = 0;

/// The request id header carried from front to origin.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Fields a `Connection` option never removes: end-to-end fields the gateway itself routes,
/// frames or records by. A peer that names them as hop-by-hop (`Connection: host`) would
/// otherwise make the origin see a request other than the one routed: no Host, no length,
/// or an earlier hop's forwarding record gone.
const NEVER_HOP_BY_HOP: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// What this hop adds to the `Via` of an answer (the origin hop is HTTP/1.1).
pub const VIA_VALUE: &str = "1.1 causeway";

/// The `Via` entry of a request this hop received as `version` (RFC 9110 §7.6.3 names the
/// protocol the hop received, so the origin sees what the client spoke).
pub fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 causeway",
        Version::HTTP_10 => "1.0 causeway",
        Version::HTTP_2 => "2 causeway",
        Version::HTTP_3 => "3 causeway",
        _ => VIA_VALUE,
    })
}

/// Removes hop-by-hop headers, including every header the `Connection` header names except
/// [`NEVER_HOP_BY_HOP`]; and a `Content-Length` that a `Transfer-Encoding` overrode, which
/// RFC 9112 §6.3 says a sender must remove before forwarding (an origin's answer with both
/// was read chunked: keeping the length would cut or pad the client's body).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Each removal hashes its name, so only the names present are removed: one pass over the
    // names finds them (most requests carry none; most answers only `Connection`).
    let mut present = [false; ALWAYS_HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(index) = ALWAYS_HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[index] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // The options `Connection` names; `keep-alive`, the usual one, is always removed anyway,
    // so it costs no name parsing.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| !NEVER_HOP_BY_HOP.contains(&name.as_str()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    if present[TRANSFER_ENCODING_INDEX] {
        headers.remove(TRANSFER_ENCODING);
        headers.remove(CONTENT_LENGTH);
    }
    for (index, name) in ALWAYS_HOP_BY_HOP.iter().enumerate() {
        if present[index] && index != TRANSFER_ENCODING_INDEX {
            headers.remove(name);
        }
    }
}

/// The authority a request is for, as the pipeline routes on it: the target's own (the
/// absolute form of HTTP/1.1, HTTP/2's `:authority`), which RFC 9112 §3.2.2 and RFC 9113
/// §8.3.1 put before any Host field, else the Host field; userinfo never counts.
pub fn request_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    match uri.authority() {
        Some(authority) => Some(without_userinfo(authority.as_str())),
        None => headers.get(HOST).and_then(|h| h.to_str().ok()),
    }
}

/// An authority without its `userinfo@` part (RFC 9112 §3.2.2: Host excludes it).
fn without_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Makes the Host field the target's authority, when the target has one: the origin then
/// sees the host the request was routed on, not a different Host the client sent beside it.
pub fn set_host_from_target(uri: &Uri, headers: &mut HeaderMap) {
    if let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(without_userinfo(authority.as_str()))
    {
        headers.insert(HOST, value);
    }
}

/// A transfer coding of the request other than `chunked` (hyper decodes chunked alone, and
/// refuses a list that does not end in it), named for the 501.
pub fn unknown_transfer_coding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(str::to_owned).collect(),
            Err(_) => vec![String::from_utf8_lossy(value.as_bytes()).into_owned()],
        })
        .map(|coding| coding.trim().to_owned())
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked"))
}

/// Joins several `Cookie` fields into one, separated by `; ` (RFC 9113 §8.2.3): HTTP/2
/// clients split cookies across fields, and an HTTP/1.1 origin expects one (RFC 6265 §5.4).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// Whether a Host or authority value is in a form this proxy will pass on.
pub fn host_of(authority: &str) -> Option<&str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: keep the brackets off.
        rest.split_once(']').map(|(ip, _)| ip)?
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    host
                } else {
                    authority
                }
            })
    };
    (!host.is_empty()).then_some(host)
}

/// Records the client hop on a request about to be forwarded, which this hop received as
/// `received`: `X-Forwarded-Host` and `Forwarded`'s `host=` repeat the Host field, so every
/// name the origin may build URLs from is the one the request was routed on.
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, tls: bool, received: Version) {
    let proto = if tls { "https" } else { "http" };
    let mut client_text = IpText::new();
    client_text.write(client);
    let client_text = client_text.as_str();

    // Several header lines are one comma-separated list (RFC 9110 §5.3): keep every hop.
    let mut forwarded_for = Vec::new();
    for previous in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        forwarded_for.extend_from_slice(previous.as_bytes());
        forwarded_for.extend_from_slice(b", ");
    }
    forwarded_for.extend_from_slice(client_text.as_bytes());
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded_for)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));

    let mut element = Vec::with_capacity(64);
    element.extend_from_slice(b"for=");
    match client {
        IpAddr::V4(_) => element.extend_from_slice(client_text.as_bytes()),
        IpAddr::V6(_) => {
            element.extend_from_slice(b"\"[");
            element.extend_from_slice(client_text.as_bytes());
            element.extend_from_slice(b"]\"");
        }
    }
    element.extend_from_slice(b";proto=");
    element.extend_from_slice(proto.as_bytes());
    if let Some(host) = headers.get(HOST).cloned() {
        if host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            element.extend_from_slice(b";host=\"");
            element.extend_from_slice(host.as_bytes());
            element.push(b'"');
        }
        // A client's own X-Forwarded-Host would name a host nobody routed on.
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(element)) {
        headers.append(FORWARDED.clone(), value);
    }
    headers.append(VIA, via_value(received));
}

/// An IP address as text, written without the formatting machinery (this runs for every
/// request): IPv4 by hand, IPv6 through `Display`, which is rare enough.
struct IpText {
    buffer: [u8; 45],
    len: usize,
}

impl IpText {
    fn new() -> Self {
        Self {
            buffer: [0; 45],
            len: 0,
        }
    }

    fn write(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut self.buffer[..]);
                // 45 bytes hold the longest IPv6 text (an IPv4-mapped address).
                if write!(cursor, "{v6}").is_ok() {
                    self.len = usize::try_from(cursor.position()).unwrap_or(0);
                }
            }
        }
    }

    fn push(&mut self, byte: u8) {
        self.buffer[self.len] = byte;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters were written.
        std::str::from_utf8(&self.buffer[..self.len]).unwrap_or("")
    }
}

/// Appends this hop to `Via`.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(VIA, HeaderValue::from_static(VIA_VALUE));
}

/// Gives the request an id unless it came with one.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID) {
        return id.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[usize::try_from(random >> (4 * (31 - i)) & 0xf).unwrap_or(0)];
    }
    let value = HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"));
    headers.insert(REQUEST_ID.clone(), value.clone());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn forwarding_headers_are_appended() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "shop.example.com"),
        ]);
        add_forwarding(
            &mut headers,
            "127.0.0.7".parse().expect("ip"),
            true,
            Version::HTTP_11,
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(
            headers["forwarded"],
            "for=127.0.0.7;proto=https;host=\"shop.example.com\""
        );
        assert_eq!(headers["via"], "1.1 causeway");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
    }

    #[test]
    fn via_names_the_protocol_the_client_spoke() {
        for (version, via) in [
            (Version::HTTP_10, "1.0 causeway"),
            (Version::HTTP_11, "1.1 causeway"),
            (Version::HTTP_2, "2 causeway"),
        ] {
            let mut headers = map(&[("via", "1.1 corporate-proxy")]);
            add_forwarding(
                &mut headers,
                "192.0.2.1".parse().expect("ip"),
                false,
                version,
            );
            let all: Vec<_> = headers.get_all("via").iter().collect();
            assert_eq!(all, ["1.1 corporate-proxy", via], "{version:?}");
        }
    }

    #[test]
    fn a_clients_x_forwarded_host_gives_way_to_the_host_routed_on() {
        let mut headers = map(&[("host", "a.test"), ("x-forwarded-host", "evil.test")]);
        add_forwarding(
            &mut headers,
            "192.0.2.1".parse().expect("ip"),
            false,
            Version::HTTP_11,
        );
        let all: Vec<_> = headers.get_all("x-forwarded-host").iter().collect();
        assert_eq!(all, ["a.test"]);
        assert!(
            headers["forwarded"]
                .to_str()
                .expect("ascii")
                .ends_with("host=\"a.test\"")
        );
    }

    #[test]
    fn connection_cannot_name_the_fields_the_gateway_needs() {
        let mut headers = map(&[
            (
                "connection",
                "host, content-length, Transfer-Encoding, forwarded, x-forwarded-for, \
                 x-forwarded-proto, x-forwarded-host, via, x-private",
            ),
            ("host", "a.test"),
            ("content-length", "5"),
            ("forwarded", "for=192.0.2.9"),
            ("x-forwarded-for", "192.0.2.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "a.test"),
            ("via", "1.1 other"),
            ("x-private", "1"),
        ]);
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "forwarded",
                "host",
                "via",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
    }

    #[test]
    fn a_length_that_transfer_encoding_overrode_is_removed() {
        let mut both = map(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut both);
        let left: Vec<_> = both.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
        let mut length_only = map(&[("content-length", "5")]);
        remove_hop_by_hop(&mut length_only);
        assert_eq!(length_only["content-length"], "5");
    }

    #[test]
    fn the_target_authority_comes_before_host() {
        let host = map(&[("host", "b.test")]);
        let absolute: Uri = "http://a.test/x".parse().expect("uri");
        assert_eq!(request_authority(&absolute, &host), Some("a.test"));
        let origin_form: Uri = "/x".parse().expect("uri");
        assert_eq!(request_authority(&origin_form, &host), Some("b.test"));
        let userinfo: Uri = "http://user:pw@a.test:8080/".parse().expect("uri");
        assert_eq!(request_authority(&userinfo, &host), Some("a.test:8080"));
        assert_eq!(request_authority(&origin_form, &HeaderMap::new()), None);

        let mut headers = host.clone();
        set_host_from_target(&userinfo, &mut headers);
        assert_eq!(
            headers.get_all("host").iter().collect::<Vec<_>>(),
            ["a.test:8080"]
        );
        let mut unchanged = host.clone();
        set_host_from_target(&origin_form, &mut unchanged);
        assert_eq!(unchanged["host"], "b.test");
    }

    #[test]
    fn only_chunked_is_a_known_transfer_coding() {
        assert_eq!(
            unknown_transfer_coding(&map(&[("transfer-encoding", "chunked")])),
            None
        );
        assert_eq!(unknown_transfer_coding(&HeaderMap::new()), None);
        assert_eq!(
            unknown_transfer_coding(&map(&[("transfer-encoding", "gzip, chunked")])),
            Some("gzip".to_owned())
        );
        assert_eq!(
            unknown_transfer_coding(&map(&[
                ("transfer-encoding", "Chunked"),
                ("transfer-encoding", " deflate ,chunked")
            ])),
            Some("deflate".to_owned())
        );
    }

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let mut split = map(&[("cookie", "a=1"), ("cookie", "b=2; c=3"), ("cookie", "d=4")]);
        join_cookies(&mut split);
        let all: Vec<_> = split.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3; d=4"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
        let mut none = HeaderMap::new();
        join_cookies(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn every_x_forwarded_for_line_is_kept() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2, 192.0.2.4"),
        ]);
        add_forwarding(
            &mut headers,
            "127.0.0.7".parse().expect("ip"),
            false,
            Version::HTTP_11,
        );
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            headers["x-forwarded-for"],
            "203.0.113.9, 198.51.100.2, 192.0.2.4, 127.0.0.7"
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut headers = HeaderMap::new();
        add_forwarding(
            &mut headers,
            "::1".parse().expect("ip"),
            false,
            Version::HTTP_11,
        );
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
        assert_eq!(headers["x-forwarded-for"], "::1");
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "127.0.0.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            let mut text = IpText::new();
            text.write(ip);
            assert_eq!(text.as_str(), ip.to_string());
        }
    }

    #[test]
    fn request_ids_are_lower_hex() {
        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers);
        assert!(
            id.as_bytes()
                .iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let mut other = HeaderMap::new();
        assert_ne!(ensure_request_id(&mut other), id, "two requests, two ids");
    }

    #[test]
    fn host_without_port() {
        assert_eq!(host_of("shop.example.com:8080"), Some("shop.example.com"));
        assert_eq!(host_of("shop.example.com"), Some("shop.example.com"));
        assert_eq!(host_of("[::1]:80"), Some("::1"));
        assert_eq!(host_of(":80"), None);
    }

    #[test]
    fn an_existing_request_id_is_kept() {
        let mut headers = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut headers), "abc");
        let mut fresh = HeaderMap::new();
        let id = ensure_request_id(&mut fresh);
        assert_eq!(id.len(), 32);
        assert_eq!(fresh["x-request-id"], id);
    }
}
