//! Reading a gateway's `/metrics`: the Prometheus text exposition format, just the sample
//! lines (`name{label="value",...} number`), into plain data the figures are computed from.

use std::collections::BTreeMap;

/// One sample's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// Every sample of one scrape, by metric name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    families: BTreeMap<String, Vec<(Labels, f64)>>,
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {reason}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Scrape {
    /// Parses a whole exposition. Comments and blank lines are skipped; a malformed sample
    /// line is an error, so a half-understood scrape is never taken for figures.
    ///
    /// # Errors
    /// The first line that is not a sample.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut families: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason| ParseError {
                line: index + 1,
                reason,
            };
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line.rfind('}').ok_or_else(|| fail("unclosed label set"))?;
                    if close < open {
                        return Err(fail("unclosed label set"));
                    }
                    let labels =
                        parse_labels(&line[open + 1..close]).ok_or_else(|| fail("bad labels"))?;
                    (&line[..open], labels, &line[close + 1..])
                }
                None => {
                    let space = line.find(' ').ok_or_else(|| fail("no value"))?;
                    (&line[..space], Labels::new(), &line[space..])
                }
            };
            let value = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| fail("no value"))?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| fail("value is not a number"))?,
            };
            families
                .entry(name.trim().to_owned())
                .or_default()
                .push((labels, value));
        }
        Ok(Self { families })
    }

    /// The samples of `name` whose labels include every pair of `matching`.
    pub fn samples<'a>(
        &'a self,
        name: &str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        self.families
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(labels, _)| {
                matching
                    .iter()
                    .all(|(k, v)| labels.get(*k).is_some_and(|have| have == v))
            })
            .map(|(labels, value)| (labels, *value))
    }

    /// The sum of the samples of `name` matching `matching` (0 when there are none).
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples(name, matching).map(|(_, v)| v).sum()
    }
}

/// `a="x",b="y\"z"` into labels; `None` when malformed.
fn parse_labels(text: &str) -> Option<Labels> {
    let mut labels = Labels::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_sums() {
        let text = "# HELP x y\n# TYPE causeway_requests_total counter\n\
            causeway_requests_total{site=\"ns/shop\",class=\"2\",code=\"200\"} 12\n\
            causeway_requests_total{site=\"ns/shop\",class=\"0\",code=\"503\"} 3\n\
            causeway_requests_total{code=\"421\",site=\"\",class=\"\"} 1\n\
            causeway_client_connections 4\n\
            le_test{le=\"+Inf\",quote=\"a\\\"b\"} +Inf\n";
        let scrape = Scrape::parse(text).expect("parses");
        assert_eq!(
            scrape.sum("causeway_requests_total", &[("site", "ns/shop")]),
            15.0
        );
        assert_eq!(
            scrape.sum(
                "causeway_requests_total",
                &[("site", "ns/shop"), ("code", "503")]
            ),
            3.0
        );
        assert_eq!(scrape.sum("causeway_client_connections", &[]), 4.0);
        let (labels, value) = scrape.samples("le_test", &[]).next().expect("one");
        assert_eq!(labels["quote"], "a\"b");
        assert!(value.is_infinite());
        assert_eq!(scrape.sum("absent", &[]), 0.0);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in ["x{a=\"b\" 1", "x{a=b} 1", "x", "x{a=\"b\"} one"] {
            assert!(Scrape::parse(bad).is_err(), "{bad}");
        }
    }
}
