//! Header rewriting of a proxy: hop-by-hop headers removed (RFC 9110 §7.6.1), the client's
//! address and scheme recorded (`X-Forwarded-*`, `Forwarded` of RFC 7239, `Via`), and a
//! request id carried to the origin.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers meaningful only for one connection, never forwarded.
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "trailer",
    "http2-settings",
];

/// The request id header carried from front to origin.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// What this hop adds to `Via`.
pub const VIA_VALUE: &str = "1.1 causeway";

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
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

/// Records the client hop on a request about to be forwarded.
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, tls: bool) {
    let proto = if tls { "https" } else { "http" };
    let client_text = client.to_string();

    // Several header lines are one comma-separated list (RFC 9110 §5.3): keep every hop.
    let previous: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = if previous.is_empty() {
        client_text.clone()
    } else {
        format!("{}, {client_text}", previous.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );

    let node = match client {
        IpAddr::V4(_) => client_text,
        IpAddr::V6(_) => format!("\"[{client_text}]\""),
    };
    let mut element = format!("for={node};proto={proto}");
    if let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok())
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    if let Ok(value) = HeaderValue::from_str(&element) {
        headers.append(FORWARDED.clone(), value);
    }
    add_via(headers);
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
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"));
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
        add_forwarding(&mut headers, "127.0.0.7".parse().expect("ip"), true);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(
            headers["forwarded"],
            "for=127.0.0.7;proto=https;host=\"shop.example.com\""
        );
        assert_eq!(headers["via"], "1.1 causeway");
    }

    #[test]
    fn every_x_forwarded_for_line_is_kept() {
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2, 192.0.2.4"),
        ]);
        add_forwarding(&mut headers, "127.0.0.7".parse().expect("ip"), false);
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            headers["x-forwarded-for"],
            "203.0.113.9, 198.51.100.2, 192.0.2.4, 127.0.0.7"
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut headers = HeaderMap::new();
        add_forwarding(&mut headers, "::1".parse().expect("ip"), false);
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
        assert_eq!(headers["x-forwarded-for"], "::1");
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
