//! Freshness (RFC 9111 §4.2): how long a stored response is fresh for a shared cache, how old
//! it is now, and what that allows for one request.
//!
//! All functions take the clock as an argument (`SystemTime`, because HTTP dates are wall
//! clock), so every rule is tested without waiting.

use std::time::{Duration, SystemTime};

use http::header::{DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use crate::cache_control::{DELTA_SECONDS_MAX, MaxStale, RequestDirectives, ResponseDirectives};

/// Heuristic freshness (§4.2.2), used only when a Site turns it on: like most caches, a
/// fraction of the time since `Last-Modified`, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heuristic {
    /// Fraction of the `Last-Modified` age taken as lifetime (RFC 9111 suggests 10%).
    pub fraction: f64,
    /// The longest lifetime the heuristic may give.
    pub max: Duration,
}

impl Default for Heuristic {
    fn default() -> Self {
        Self {
            fraction: 0.1,
            max: Duration::from_secs(3600),
        }
    }
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1): their responses may be
/// stored without explicit freshness.
#[must_use]
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// An HTTP-date header (§4.2: an invalid date reads as `None`).
#[must_use]
pub fn http_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// Whether the response carries explicit freshness (`s-maxage`, `max-age` or `Expires`).
#[must_use]
pub fn has_explicit_freshness(cc: &ResponseDirectives, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// The freshness lifetime for a shared cache (§4.2.1): `s-maxage`, else `max-age`, else
/// `Expires − Date`, else the heuristic when one is configured and the status or `public`
/// allows it, else zero.
///
/// `response_time` stands in for a missing `Date` (RFC 9110 §6.6.1 has the recipient add one).
#[must_use]
pub fn freshness_lifetime(
    status: StatusCode,
    cc: &ResponseDirectives,
    headers: &HeaderMap,
    response_time: SystemTime,
    heuristic: Option<&Heuristic>,
) -> Duration {
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime;
    }
    let date = http_date(headers, DATE).unwrap_or(response_time);
    if headers.contains_key(EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired (§5.3).
        return http_date(headers, EXPIRES)
            .and_then(|expires| expires.duration_since(date).ok())
            .map_or(Duration::ZERO, saturate);
    }
    match heuristic {
        Some(heuristic) if heuristically_cacheable(status) || cc.public => {
            let Some(modified) = http_date(headers, LAST_MODIFIED) else {
                return Duration::ZERO;
            };
            let since = date.duration_since(modified).unwrap_or_default();
            since
                .mul_f64(heuristic.fraction.clamp(0.0, 1.0))
                .min(heuristic.max)
        }
        _ => Duration::ZERO,
    }
}

/// Caps a computed duration at 2^31 seconds (§1.2.2).
fn saturate(duration: Duration) -> Duration {
    duration.min(Duration::from_secs(DELTA_SECONDS_MAX))
}

/// The `Age` header as delta-seconds; invalid values read as absent (§5.1).
#[must_use]
pub fn age_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::AGE)?.to_str().ok()?;
    crate::cache_control::delta_seconds(value.trim())
}

/// The age a response had when it arrived (§4.2.3 `corrected_initial_age`), computed once when
/// it is stored so that its current age is that plus the time it has been resident.
#[must_use]
pub fn corrected_initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent_age = http_date(headers, DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    let corrected_age_value = age_header(headers)
        .unwrap_or_default()
        .saturating_add(response_delay);
    saturate(apparent_age.max(corrected_age_value))
}

/// The current age (§4.2.3): the corrected initial age plus the resident time.
#[must_use]
pub fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    let resident = now.duration_since(response_time).unwrap_or_default();
    saturate(corrected_initial_age.saturating_add(resident))
}

/// What a stored response's age allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it; it stays fresh for `remaining`.
    Fresh {
        /// Time until it turns stale.
        remaining: Duration,
    },
    /// Stale, but serving it without validation is allowed in some cases.
    Stale {
        /// How far past its lifetime it is.
        staleness: Duration,
        /// May be served while a background revalidation runs (`stale-while-revalidate`).
        within_swr: bool,
        /// May be served if validation fails (`stale-if-error`, response or request).
        within_sie: bool,
        /// The client accepts it as it is (`max-stale`).
        client_accepts: bool,
    },
    /// Must not be served before a successful validation: `no-cache`, `must-revalidate` once
    /// stale, or a request asking for something fresher.
    MustRevalidate,
}

/// Decides what a stored response of this `lifetime` and `age` allows (§4.2, §5.2).
///
/// `no-cache` (unqualified, response or request) always validates; a client's `max-age` or
/// `min-fresh` it cannot meet validates; once stale, `must-revalidate`, `proxy-revalidate`
/// and `s-maxage` forbid any stale serving, including `stale-if-error`.
#[must_use]
pub fn assess(
    lifetime: Duration,
    age: Duration,
    response: &ResponseDirectives,
    request: &RequestDirectives,
) -> Freshness {
    if response.no_cache.is_all() || request.no_cache {
        return Freshness::MustRevalidate;
    }
    if request.max_age.is_some_and(|max| age > max) && request.max_stale.is_none() {
        return Freshness::MustRevalidate;
    }
    if lifetime > age {
        let remaining = lifetime - age;
        if request.min_fresh.is_some_and(|min| remaining < min) {
            return Freshness::MustRevalidate;
        }
        return Freshness::Fresh { remaining };
    }
    if response.forbids_stale() {
        return Freshness::MustRevalidate;
    }
    let staleness = age - lifetime;
    let within = |window: Option<Duration>| window.is_some_and(|w| staleness < w);
    let client_accepts = match request.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Limit(limit)) => staleness <= limit,
        None => false,
    };
    Freshness::Stale {
        staleness,
        within_swr: within(response.stale_while_revalidate),
        within_sie: within(response.stale_if_error) || within(request.stale_if_error),
        client_accepts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::{AGE, CACHE_CONTROL};

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(at(secs))).expect("date")
    }

    fn with(pairs: &[(http::header::HeaderName, HeaderValue)]) -> HeaderMap {
        pairs.iter().cloned().collect()
    }

    fn cc(value: &str) -> ResponseDirectives {
        ResponseDirectives::from_headers(&with(&[(
            CACHE_CONTROL,
            HeaderValue::from_str(value).expect("cc"),
        )]))
    }

    fn req(value: &str) -> RequestDirectives {
        RequestDirectives::from_headers(&with(&[(
            CACHE_CONTROL,
            HeaderValue::from_str(value).expect("cc"),
        )]))
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let headers = with(&[(DATE, date(0)), (EXPIRES, date(500))]);
        let ok = StatusCode::OK;
        assert_eq!(
            freshness_lifetime(ok, &cc("s-maxage=10, max-age=20"), &headers, at(0), None),
            S(10)
        );
        assert_eq!(
            freshness_lifetime(ok, &cc("max-age=20"), &headers, at(0), None),
            S(20)
        );
        assert_eq!(
            freshness_lifetime(ok, &cc(""), &headers, at(0), None),
            S(500)
        );
    }

    #[test]
    fn expires_without_date_uses_response_time_and_invalid_expires_is_expired() {
        let headers = with(&[(EXPIRES, date(100))]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &cc(""), &headers, at(40), None),
            S(60)
        );
        let invalid = with(&[(EXPIRES, HeaderValue::from_static("0"))]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &cc(""), &invalid, at(0), None),
            S(0)
        );
        let past = with(&[(DATE, date(100)), (EXPIRES, date(50))]);
        assert_eq!(
            freshness_lifetime(StatusCode::OK, &cc(""), &past, at(100), None),
            S(0)
        );
    }

    #[test]
    fn heuristic_only_when_configured_and_capped() {
        let headers = with(&[(DATE, date(1000)), (LAST_MODIFIED, date(0))]);
        let ok = StatusCode::OK;
        assert_eq!(
            freshness_lifetime(ok, &cc(""), &headers, at(1000), None),
            S(0)
        );
        let ten_percent = Heuristic {
            fraction: 0.1,
            max: S(3600),
        };
        assert_eq!(
            freshness_lifetime(ok, &cc(""), &headers, at(1000), Some(&ten_percent)),
            S(100)
        );
        let capped = Heuristic {
            fraction: 0.1,
            max: S(30),
        };
        assert_eq!(
            freshness_lifetime(ok, &cc(""), &headers, at(1000), Some(&capped)),
            S(30)
        );
        // Not heuristically cacheable unless `public`.
        let created = StatusCode::CREATED;
        assert_eq!(
            freshness_lifetime(created, &cc(""), &headers, at(1000), Some(&ten_percent)),
            S(0)
        );
        assert_eq!(
            freshness_lifetime(
                created,
                &cc("public"),
                &headers,
                at(1000),
                Some(&ten_percent)
            ),
            S(100)
        );
    }

    #[test]
    fn age_follows_rfc_9111_4_2_3() {
        // Date says 5 s old on arrival, Age says 20, the exchange took 2 s: 22 wins.
        let headers = with(&[(DATE, date(95)), (AGE, HeaderValue::from_static("20"))]);
        let initial = corrected_initial_age(&headers, at(98), at(100));
        assert_eq!(initial, S(22));
        assert_eq!(current_age(initial, at(100), at(130)), S(52));
        // A Date in the future (clock skew) gives no negative age.
        let skewed = with(&[(DATE, date(500))]);
        assert_eq!(corrected_initial_age(&skewed, at(100), at(100)), S(0));
        // An invalid Age is ignored; a huge one saturates.
        let bad = with(&[(AGE, HeaderValue::from_static("-3"))]);
        assert_eq!(corrected_initial_age(&bad, at(100), at(100)), S(0));
        let huge = with(&[(AGE, HeaderValue::from_static("999999999999999999999"))]);
        assert_eq!(
            corrected_initial_age(&huge, at(100), at(100)),
            S(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn fresh_then_stale() {
        let none = RequestDirectives::default();
        assert_eq!(
            assess(S(60), S(10), &cc("max-age=60"), &none),
            Freshness::Fresh { remaining: S(50) }
        );
        assert_eq!(
            assess(S(60), S(60), &cc("max-age=60"), &none),
            Freshness::Stale {
                staleness: S(0),
                within_swr: false,
                within_sie: false,
                client_accepts: false
            }
        );
    }

    #[test]
    fn stale_while_revalidate_and_stale_if_error_windows() {
        let none = RequestDirectives::default();
        let response = cc("max-age=60, stale-while-revalidate=30, stale-if-error=300");
        assert!(matches!(
            assess(S(60), S(80), &response, &none),
            Freshness::Stale {
                within_swr: true,
                within_sie: true,
                ..
            }
        ));
        assert!(matches!(
            assess(S(60), S(100), &response, &none),
            Freshness::Stale {
                within_swr: false,
                within_sie: true,
                ..
            }
        ));
        assert!(matches!(
            assess(S(60), S(400), &response, &none),
            Freshness::Stale {
                within_swr: false,
                within_sie: false,
                ..
            }
        ));
        // The client may grant stale-if-error itself.
        assert!(matches!(
            assess(S(60), S(100), &cc("max-age=60"), &req("stale-if-error=100")),
            Freshness::Stale {
                within_sie: true,
                ..
            }
        ));
    }

    #[test]
    fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale() {
        let none = RequestDirectives::default();
        for directives in [
            "max-age=60, must-revalidate, stale-if-error=999",
            "max-age=60, proxy-revalidate, stale-while-revalidate=999",
            "s-maxage=60, stale-if-error=999",
        ] {
            assert_eq!(
                assess(S(60), S(61), &cc(directives), &none),
                Freshness::MustRevalidate,
                "{directives}"
            );
            assert!(matches!(
                assess(S(60), S(1), &cc(directives), &none),
                Freshness::Fresh { .. }
            ));
            // Not even a client's max-stale opens it.
            assert_eq!(
                assess(S(60), S(61), &cc(directives), &req("max-stale")),
                Freshness::MustRevalidate
            );
        }
    }

    #[test]
    fn no_cache_always_revalidates() {
        let none = RequestDirectives::default();
        assert_eq!(
            assess(S(60), S(1), &cc("no-cache, max-age=60"), &none),
            Freshness::MustRevalidate
        );
        // Field-qualified no-cache does not: those fields are not stored instead.
        assert!(matches!(
            assess(S(60), S(1), &cc("no-cache=\"x\", max-age=60"), &none),
            Freshness::Fresh { .. }
        ));
        assert_eq!(
            assess(S(60), S(1), &cc("max-age=60"), &req("no-cache")),
            Freshness::MustRevalidate
        );
    }

    #[test]
    fn request_max_age_min_fresh_and_max_stale() {
        let response = cc("max-age=60");
        assert_eq!(
            assess(S(60), S(20), &response, &req("max-age=10")),
            Freshness::MustRevalidate
        );
        assert!(matches!(
            assess(S(60), S(5), &response, &req("max-age=10")),
            Freshness::Fresh { .. }
        ));
        assert_eq!(
            assess(S(60), S(50), &response, &req("min-fresh=20")),
            Freshness::MustRevalidate
        );
        assert!(matches!(
            assess(S(60), S(30), &response, &req("min-fresh=20")),
            Freshness::Fresh { .. }
        ));
        assert!(matches!(
            assess(S(60), S(70), &response, &req("max-stale=15")),
            Freshness::Stale {
                client_accepts: true,
                ..
            }
        ));
        assert!(matches!(
            assess(S(60), S(80), &response, &req("max-stale=15")),
            Freshness::Stale {
                client_accepts: false,
                ..
            }
        ));
        assert!(matches!(
            assess(S(60), S(9999), &response, &req("max-stale")),
            Freshness::Stale {
                client_accepts: true,
                ..
            }
        ));
    }
}
