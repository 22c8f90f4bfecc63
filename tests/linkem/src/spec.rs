//! The text form of impairments and link directions used by the CLI and its stdin commands.
//!
//! An impairment is `key=value` pairs separated by commas, e.g.
//! `delay=20ms,jitter=2ms,loss=1%,rate=20mbit,queue=64kb`; keys left out keep their value.
//! A link is `a:b` (both directions between neighbours `a` and `b`) or `a>b` (only `a` → `b`).

use std::time::Duration;

use crate::error::Error;
use crate::impairment::Impairment;

/// Which direction(s) of a link a spec applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSelector {
    /// One end of the link.
    pub from: String,
    /// The other end of the link.
    pub to: String,
    /// Whether the spec applies to `to` → `from` as well.
    pub both_directions: bool,
}

/// A link selector with the impairment changes to apply to it: `a:b=delay=20ms,loss=1%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The direction(s) the changes apply to.
    pub link: LinkSelector,
    /// The `key=value` list, applied with [`apply_impairment_spec`].
    pub changes: String,
}

impl std::str::FromStr for LinkSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (link, changes) = s.split_once('=').unwrap_or((s, ""));
        let link = parse_selector(link).map_err(|reason| invalid(s, reason))?;
        // Validate now so a bad flag fails before any namespace exists.
        apply_impairment_spec(Impairment::NONE, changes)?;
        Ok(Self {
            link,
            changes: changes.to_owned(),
        })
    }
}

fn parse_selector(s: &str) -> Result<LinkSelector, String> {
    let (from, to, both_directions) = if let Some((a, b)) = s.split_once(':') {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once('>') {
        (a, b, false)
    } else {
        return Err("a link is `a:b` (both directions) or `a>b` (one direction)".into());
    };
    if from.is_empty() || to.is_empty() {
        return Err("both ends of the link must be named".into());
    }
    Ok(LinkSelector {
        from: from.trim().to_owned(),
        to: to.trim().to_owned(),
        both_directions,
    })
}

/// Applies a `key=value,...` list to `base`; keys: `delay`, `jitter`, `loss`, `rate`, `queue`.
///
/// Durations take `ns`, `us`, `ms` or `s`; loss is a fraction (`0.1`) or a percentage
/// (`10%`); rate takes `bit`, `kbit`, `mbit` or `gbit` (decimal) or `none`; queue is bytes
/// with an optional `b`, `kb`, `kib`, `mb` or `mib`.
///
/// # Errors
/// [`Error::InvalidSpec`] for an unknown key or unparsable value, and
/// [`Error::InvalidImpairment`] if the result is out of range.
pub fn apply_impairment_spec(base: Impairment, spec: &str) -> Result<Impairment, Error> {
    let mut out = base;
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(pair, "expected key=value".into()))?;
        let value = value.trim();
        let bad = |reason: &str| invalid(pair, reason.to_owned());
        match key.trim() {
            "delay" => out.delay = parse_duration(value).ok_or_else(|| bad("bad duration"))?,
            "jitter" => out.jitter = parse_duration(value).ok_or_else(|| bad("bad duration"))?,
            "loss" => out.loss = parse_loss(value).ok_or_else(|| bad("bad loss"))?,
            "rate" => out.rate_bits_per_sec = parse_rate(value).ok_or_else(|| bad("bad rate"))?,
            "queue" => {
                out.queue_limit_bytes = parse_bytes(value).ok_or_else(|| bad("bad byte count"))?;
            }
            _ => return Err(bad("unknown key (delay, jitter, loss, rate, queue)")),
        }
    }
    out.validate()?;
    Ok(out)
}

fn invalid(spec: &str, reason: String) -> Error {
    Error::InvalidSpec {
        spec: spec.to_owned(),
        reason,
    }
}

/// Splits `"20ms"` into `(20.0, "ms")`.
fn number_and_unit(s: &str) -> Option<(f64, String)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    (num.is_finite() && num >= 0.0).then(|| (num, unit.trim().to_ascii_lowercase()))
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = number_and_unit(s)?;
    let scale = match unit.as_str() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(num * scale).ok()
}

fn parse_loss(s: &str) -> Option<f64> {
    match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => s.parse().ok(),
    }
}

fn parse_rate(s: &str) -> Option<Option<u64>> {
    if s.eq_ignore_ascii_case("none") {
        return Some(None);
    }
    let (num, unit) = number_and_unit(s)?;
    let scale = match unit.as_str() {
        "bit" | "" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return None,
    };
    Some(Some((num * scale).round() as u64))
}

fn parse_bytes(s: &str) -> Option<u64> {
    let (num, unit) = number_and_unit(s)?;
    let scale = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" => 1024.0,
        "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some((num * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn parses_every_key() {
        let i = apply_impairment_spec(
            Impairment::NONE,
            "delay=20ms, jitter=500us,loss=10%,rate=20mbit,queue=64kb",
        )
        .expect("valid");
        assert_eq!(i.delay, 20 * MS);
        assert_eq!(i.jitter, Duration::from_micros(500));
        assert!((i.loss - 0.1).abs() < 1e-12);
        assert_eq!(i.rate_bits_per_sec, Some(20_000_000));
        assert_eq!(i.queue_limit_bytes, 64_000);
    }

    #[test]
    fn keeps_unmentioned_keys_and_accepts_none_rate() {
        let base = Impairment::delay(5 * MS).with_rate(1_000);
        let i = apply_impairment_spec(base, "rate=none,loss=0.02").expect("valid");
        assert_eq!(i.delay, 5 * MS);
        assert_eq!(i.rate_bits_per_sec, None);
        assert_eq!(i.loss, 0.02);
        assert_eq!(apply_impairment_spec(base, "").expect("empty"), base);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "delay=20",
            "delay",
            "speed=1",
            "loss=2",
            "rate=0",
            "queue=-1",
            "jitter=1h",
        ] {
            assert!(
                apply_impairment_spec(Impairment::NONE, bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_link_specs() {
        let both: LinkSpec = "client:front=delay=20ms".parse().expect("valid");
        assert_eq!(both.link.from, "client");
        assert_eq!(both.link.to, "front");
        assert!(both.link.both_directions);
        assert_eq!(both.changes, "delay=20ms");
        let one: LinkSpec = "front>back=loss=1%,rate=10mbit".parse().expect("valid");
        assert!(!one.link.both_directions);
        assert_eq!(one.changes, "loss=1%,rate=10mbit");
        assert!("front".parse::<LinkSpec>().is_err());
        assert!(":b=delay=1ms".parse::<LinkSpec>().is_err());
        assert!("a:b=delay=oops".parse::<LinkSpec>().is_err());
    }
}
