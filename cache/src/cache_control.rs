//! `Cache-Control` (RFC 9111 §5.2) and request `Pragma: no-cache` (§5.4), parsed for a shared
//! cache.
//!
//! The parser never fails: a cache sits in front of origins it does not control and must keep
//! working on whatever they send. Unknown directives and garbage between commas are ignored
//! (§5.2.3), names are case-insensitive, arguments are accepted as token or quoted-string
//! (§5.2), the first of duplicated directives wins (§4.2.1), and delta-seconds too large to
//! represent saturate at 2^31 seconds (§1.2.2). An invalid `max-age`/`s-maxage` argument makes
//! the response stale (§4.2.1 encourages that) rather than being ignored, which would let an
//! `Expires` header or a heuristic make it fresh.

use std::borrow::Cow;
use std::time::Duration;

use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName};

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2): larger values saturate.
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// A directive that may apply to the whole message or only to some of its header fields
/// (`no-cache` and `private` on responses, §5.2.2.4 and §5.2.2.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldScope {
    /// The directive is absent.
    #[default]
    Absent,
    /// The directive applies to the whole response.
    All,
    /// The directive applies only to these header fields.
    Fields(Vec<HeaderName>),
}

impl FieldScope {
    /// Whether the directive applies to the whole response.
    #[must_use]
    pub fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }

    /// The header fields the directive names (empty unless it is field-qualified).
    #[must_use]
    pub fn fields(&self) -> &[HeaderName] {
        match self {
            Self::Fields(names) => names,
            Self::Absent | Self::All => &[],
        }
    }

    /// Widens the scope with another occurrence: unqualified wins, field lists add up, which
    /// is the most restrictive reading of duplicates (§4.2.1).
    fn widen(&mut self, other: Self) {
        *self = match (std::mem::take(self), other) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::Absent, other) => other,
            (this, Self::Absent) => this,
            (Self::Fields(mut a), Self::Fields(b)) => {
                a.extend(b);
                Self::Fields(a)
            }
        };
    }
}

/// How much staleness a client accepts (`max-stale`, §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` with no argument: any staleness.
    Any,
    /// `max-stale=N`: at most this much past the freshness lifetime.
    Limit(Duration),
}

/// The response directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age` (§5.2.2.1); an invalid argument reads as zero.
    pub max_age: Option<Duration>,
    /// `s-maxage` (§5.2.2.10): overrides `max-age` in a shared cache and implies
    /// `proxy-revalidate`; an invalid argument reads as zero.
    pub s_maxage: Option<Duration>,
    /// `no-store` (§5.2.2.5).
    pub no_store: bool,
    /// `no-cache` (§5.2.2.4), whole or for named fields.
    pub no_cache: FieldScope,
    /// `private` (§5.2.2.7), whole or for named fields.
    pub private: FieldScope,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `must-revalidate` (§5.2.2.2).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8).
    pub proxy_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    /// Parses every `Cache-Control` field line of a response.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        for (name, value) in directives(headers) {
            match name.as_str() {
                "max-age" => first(&mut parsed.max_age, delta_or_stale(value)),
                "s-maxage" => first(&mut parsed.s_maxage, delta_or_stale(value)),
                "no-store" => parsed.no_store = true,
                "no-cache" => parsed.no_cache.widen(field_scope(value)),
                "private" => parsed.private.widen(field_scope(value)),
                "public" => parsed.public = true,
                "must-revalidate" => parsed.must_revalidate = true,
                "proxy-revalidate" => parsed.proxy_revalidate = true,
                // RFC 5861 gives no meaning to an invalid argument; ignoring the directive
                // is the conservative reading (no stale serving).
                "stale-while-revalidate" => first(&mut parsed.stale_while_revalidate, delta(value)),
                "stale-if-error" => first(&mut parsed.stale_if_error, delta(value)),
                _ => {}
            }
        }
        parsed
    }

    /// Whether a stale copy must never be served without validating it first: `must-revalidate`,
    /// or in a shared cache `proxy-revalidate` and `s-maxage` (§5.2.2.10).
    #[must_use]
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }

    /// Whether the response was explicitly allowed into a shared cache although the request
    /// carried `Authorization` (§3.5).
    #[must_use]
    pub fn allows_authorized_sharing(&self) -> bool {
        self.public || self.s_maxage.is_some() || self.must_revalidate
    }
}

/// The request directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age` (§5.2.1.1): the oldest response the client accepts.
    pub max_age: Option<Duration>,
    /// `max-stale` (§5.2.1.2).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh` (§5.2.1.3).
    pub min_fresh: Option<Duration>,
    /// `no-cache` (§5.2.1.4), or `Pragma: no-cache` without any `Cache-Control` (§5.4).
    pub no_cache: bool,
    /// `no-store` (§5.2.1.5).
    pub no_store: bool,
    /// `only-if-cached` (§5.2.1.7).
    pub only_if_cached: bool,
    /// `stale-if-error` on a request (RFC 5861 §4).
    pub stale_if_error: Option<Duration>,
}

impl RequestDirectives {
    /// Parses every `Cache-Control` field line of a request, and `Pragma: no-cache` when the
    /// request has no `Cache-Control` (HTTP/1.0 clients; §5.4 has `Cache-Control` win).
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        if !headers.contains_key(CACHE_CONTROL) {
            parsed.no_cache = pragma_no_cache(headers);
            return parsed;
        }
        for (name, value) in directives(headers) {
            match name.as_str() {
                // An invalid request max-age reads as zero: the client wanted something fresh.
                "max-age" => first(&mut parsed.max_age, delta_or_stale(value)),
                "max-stale" => {
                    // An invalid argument must not widen what the client accepts.
                    let limit = match value {
                        None => Some(MaxStale::Any),
                        Some(arg) => delta_seconds(&arg).map(MaxStale::Limit),
                    };
                    first(&mut parsed.max_stale, limit);
                }
                "min-fresh" => first(&mut parsed.min_fresh, delta(value)),
                "no-cache" => parsed.no_cache = true,
                "no-store" => parsed.no_store = true,
                "only-if-cached" => parsed.only_if_cached = true,
                "stale-if-error" => first(&mut parsed.stale_if_error, delta(value)),
                _ => {}
            }
        }
        parsed
    }
}

/// Whether any `Pragma` field line holds the `no-cache` directive.
fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers.get_all(PRAGMA).iter().any(|value| {
        Tokenizer::new(value.as_bytes()).any(|(name, _)| name.eq_ignore_ascii_case("no-cache"))
    })
}

/// Keeps the first occurrence of a directive (§4.2.1).
fn first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// A delta-seconds argument; `None` when absent or invalid.
fn delta(value: Option<Cow<'_, str>>) -> Option<Duration> {
    value.and_then(|arg| delta_seconds(&arg))
}

/// A delta-seconds argument for a freshness directive: present but invalid reads as zero, so
/// the response is stale rather than fresh by some other rule (§4.2.1).
fn delta_or_stale(value: Option<Cow<'_, str>>) -> Option<Duration> {
    Some(delta(value).unwrap_or(Duration::ZERO))
}

/// Parses `1*DIGIT` (§1.2.2), saturating at 2^31.
#[must_use]
pub fn delta_seconds(text: &str) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = text
        .bytes()
        .try_fold(0u64, |acc, digit| {
            acc.checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))
                .filter(|v| *v <= DELTA_SECONDS_MAX)
        })
        .unwrap_or(DELTA_SECONDS_MAX);
    Some(Duration::from_secs(seconds))
}

/// The field names of a qualified `no-cache="a, b"` / `private="a"`; unqualified (or an
/// argument naming no valid field) applies to the whole response, the restrictive reading.
fn field_scope(value: Option<Cow<'_, str>>) -> FieldScope {
    let Some(arg) = value else {
        return FieldScope::All;
    };
    let names: Vec<HeaderName> = arg
        .split(',')
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    if names.is_empty() {
        FieldScope::All
    } else {
        FieldScope::Fields(names)
    }
}

/// Every directive of every `Cache-Control` line: lower-cased name and unquoted argument.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<Cow<'_, str>>)> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .flat_map(|value| Tokenizer::new(value.as_bytes()))
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
}

/// Splits `directive [ "=" ( token / quoted-string ) ] *( "," ... )`, tolerating anything.
struct Tokenizer<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Tokenizer<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn skip_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(&pred) {
            self.at += 1;
        }
        &self.input[start..self.at]
    }

    /// A quoted-string after its opening quote; an unterminated one runs to the end. `None`
    /// when it holds bytes that are not UTF-8 (no directive we act on could use them).
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        let input = self.input;
        let start = self.at;
        let mut end = input.len();
        let mut unescaped: Option<Vec<u8>> = None;
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => {
                    end = self.at - 1;
                    break;
                }
                b'\\' => {
                    let buf = unescaped.get_or_insert_with(|| input[start..self.at - 1].to_vec());
                    if let Some(next) = self.peek() {
                        buf.push(next);
                        self.at += 1;
                    }
                }
                _ => {
                    if let Some(buf) = unescaped.as_mut() {
                        buf.push(byte);
                    }
                }
            }
        }
        match unescaped {
            Some(buf) => String::from_utf8(buf).ok().map(Cow::Owned),
            None => std::str::from_utf8(&input[start..end])
                .ok()
                .map(Cow::Borrowed),
        }
    }
}

fn is_space(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = (&'a str, Option<Cow<'a, str>>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.skip_while(|b| is_space(b) || b == b',');
            self.peek()?;
            let name = self.skip_while(|b| !is_space(b) && b != b',' && b != b'=');
            self.skip_while(is_space);
            let mut value = None;
            if self.peek() == Some(b'=') {
                self.at += 1;
                self.skip_while(is_space);
                value = if self.peek() == Some(b'"') {
                    self.at += 1;
                    self.quoted()
                } else {
                    let token = self.skip_while(|b| !is_space(b) && b != b',');
                    std::str::from_utf8(token).ok().map(Cow::Borrowed)
                };
            }
            // Whatever follows up to the next comma is garbage (§5.2.3: ignore it).
            self.skip_while(|b| b != b',');
            match std::str::from_utf8(name) {
                Ok(name) if !name.is_empty() => return Some((name, value)),
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("test header line");
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value.trim()).expect("value"),
            );
        }
        map
    }

    fn response(value: &str) -> ResponseDirectives {
        ResponseDirectives::from_headers(&headers(&[&format!("cache-control: {value}")]))
    }

    fn request(value: &str) -> RequestDirectives {
        RequestDirectives::from_headers(&headers(&[&format!("cache-control: {value}")]))
    }

    const fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn max_age_and_s_maxage() {
        let cc = response("max-age=60, s-maxage=120");
        assert_eq!(cc.max_age, secs(60));
        assert_eq!(cc.s_maxage, secs(120));
        assert!(cc.forbids_stale(), "s-maxage implies proxy-revalidate");
    }

    #[test]
    fn names_are_case_insensitive_and_arguments_may_be_quoted() {
        let cc = response("Max-Age=\"30\", PUBLIC");
        assert_eq!(cc.max_age, secs(30));
        assert!(cc.public);
    }

    #[test]
    fn first_duplicate_wins() {
        assert_eq!(response("max-age=10, max-age=1000").max_age, secs(10));
        let two_lines = headers(&["cache-control: max-age=5", "cache-control: max-age=99"]);
        assert_eq!(
            ResponseDirectives::from_headers(&two_lines).max_age,
            secs(5)
        );
    }

    #[test]
    fn invalid_max_age_means_stale() {
        assert_eq!(response("max-age=abc").max_age, secs(0));
        assert_eq!(response("max-age=-5").max_age, secs(0));
        assert_eq!(response("max-age").max_age, secs(0));
        assert_eq!(response("s-maxage=1.5").s_maxage, secs(0));
    }

    #[test]
    fn huge_numbers_saturate() {
        let cc = response("max-age=99999999999999999999999999999");
        assert_eq!(cc.max_age, Some(Duration::from_secs(DELTA_SECONDS_MAX)));
        assert_eq!(
            delta_seconds("2147483648"),
            Some(Duration::from_secs(DELTA_SECONDS_MAX))
        );
        assert_eq!(
            delta_seconds("2147483647"),
            Some(Duration::from_secs(DELTA_SECONDS_MAX - 1))
        );
    }

    #[test]
    fn no_store_private_public_revalidate() {
        let cc = response("no-store, private, must-revalidate, proxy-revalidate");
        assert!(cc.no_store);
        assert!(cc.private.is_all());
        assert!(cc.must_revalidate && cc.proxy_revalidate);
        assert!(!cc.public);
        assert!(response("public").public);
    }

    #[test]
    fn no_cache_with_and_without_fields() {
        assert!(response("no-cache").no_cache.is_all());
        let cc = response("no-cache=\"Set-Cookie, X-Secret\"");
        assert_eq!(cc.no_cache.fields(), ["set-cookie", "x-secret"]);
        assert!(!cc.no_cache.is_all());
        // Unqualified anywhere wins over a field list.
        assert!(response("no-cache=\"a\", no-cache").no_cache.is_all());
        // An argument naming nothing valid is read as unqualified.
        assert!(response("no-cache=\"\"").no_cache.is_all());
        assert_eq!(
            response("private=\"Set-Cookie\"").private.fields(),
            ["set-cookie"]
        );
    }

    #[test]
    fn quoted_commas_do_not_split_and_escapes_unquote() {
        let cc = response(r#"private="a,b", max-age=7, no-cache="x\"y""#);
        assert_eq!(cc.private.fields(), ["a", "b"]);
        assert_eq!(cc.max_age, secs(7));
        // `x"y` is not a valid field name, so the directive applies to the whole response.
        assert!(cc.no_cache.is_all());
    }

    #[test]
    fn stale_extensions() {
        let cc = response("max-age=1, stale-while-revalidate=30, stale-if-error=600");
        assert_eq!(cc.stale_while_revalidate, secs(30));
        assert_eq!(cc.stale_if_error, secs(600));
        // An invalid argument disables the extension instead of granting staleness.
        assert_eq!(
            response("stale-while-revalidate=soon").stale_while_revalidate,
            None
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let cc = response(",,, =5, max-age=10 trailing junk, ===, public;x, foo=\"unterminated");
        assert_eq!(cc.max_age, secs(10));
        assert!(!cc.public, "`public;x` is not `public`");
        assert_eq!(response("").max_age, None);
    }

    #[test]
    fn non_utf8_bytes_do_not_break_parsing() {
        let mut map = HeaderMap::new();
        map.insert(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"x=\"\xff\xfe\", max-age=3").expect("obs-text is allowed"),
        );
        assert_eq!(ResponseDirectives::from_headers(&map).max_age, secs(3));
    }

    #[test]
    fn request_directives() {
        let cc =
            request("max-age=5, min-fresh=2, no-cache, no-store, only-if-cached, stale-if-error=9");
        assert_eq!(cc.max_age, secs(5));
        assert_eq!(cc.min_fresh, secs(2));
        assert!(cc.no_cache && cc.no_store && cc.only_if_cached);
        assert_eq!(cc.stale_if_error, secs(9));
    }

    #[test]
    fn request_max_stale_forms() {
        assert_eq!(request("max-stale").max_stale, Some(MaxStale::Any));
        assert_eq!(
            request("max-stale=10").max_stale,
            Some(MaxStale::Limit(Duration::from_secs(10)))
        );
        assert_eq!(request("max-stale=ten").max_stale, None);
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        let pragma = headers(&["pragma: no-cache"]);
        assert!(RequestDirectives::from_headers(&pragma).no_cache);
        let both = headers(&["pragma: no-cache", "cache-control: max-age=60"]);
        assert!(!RequestDirectives::from_headers(&both).no_cache);
        let other = headers(&["pragma: x-other"]);
        assert!(!RequestDirectives::from_headers(&other).no_cache);
    }

    #[test]
    fn authorized_sharing() {
        assert!(response("public").allows_authorized_sharing());
        assert!(response("s-maxage=1").allows_authorized_sharing());
        assert!(response("must-revalidate").allows_authorized_sharing());
        assert!(!response("max-age=60").allows_authorized_sharing());
    }
}
