//! Checks on Site and Frontend specs beyond what their Rust types express. The API server
//! enforces the same rules through the CRDs' schema and CEL validations (the rules and their
//! messages are shared through [`crate::rules`]); this is the copy for `causeway local` and
//! for configuration handed to sidecars.

mod frontend;
mod site;

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use crate::rules::CelRule;

/// One rule a spec breaks: the field's path and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field, such as `spec.origins[1].url`.
    pub field: String,
    /// What is wrong, in words a person understands.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every rule a spec breaks, in field order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Gathers violations while a spec is walked.
struct Collector(Vec<Violation>);

impl Collector {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn check(&mut self, ok: bool, field: impl Into<String>, reason: impl Into<String>) {
        if !ok {
            self.0.push(Violation {
                field: field.into(),
                reason: reason.into(),
            });
        }
    }

    /// Checks one of the shared rules, reporting its message.
    fn rule(&mut self, ok: bool, field: impl Into<String>, rule: CelRule) {
        self.check(ok, field, rule.message);
    }

    /// Checks a list or map against the schema's `maxItems` or `maxProperties`.
    fn at_most(&mut self, len: usize, max: usize, field: impl Into<String>) {
        self.check(
            len <= max,
            field,
            format!("at most {max} entries are allowed"),
        );
    }

    /// Checks a string against a schema `pattern` and `maxLength`.
    fn matches(
        &mut self,
        value: &str,
        pattern: &Pattern,
        max_len: usize,
        field: impl Into<String>,
        what: &str,
    ) {
        let field = field.into();
        if value.chars().count() > max_len {
            self.check(
                false,
                field,
                format!("{value:?} is longer than {max_len} characters"),
            );
        } else {
            self.check(
                pattern.is_match(value),
                field,
                format!("{value:?} is not {what}"),
            );
        }
    }

    fn finish(self) -> Result<(), Violations> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Violations(self.0))
        }
    }
}

/// A schema pattern, compiled on first use.
struct Pattern {
    source: &'static str,
    compiled: OnceLock<Option<Regex>>,
}

impl Pattern {
    const fn new(source: &'static str) -> Self {
        Self {
            source,
            compiled: OnceLock::new(),
        }
    }

    /// Whether `value` matches; a pattern that does not compile (a bug caught by the unit
    /// tests) matches nothing.
    fn is_match(&self, value: &str) -> bool {
        self.compiled
            .get_or_init(|| Regex::new(self.source).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    #[test]
    fn every_shared_pattern_compiles() {
        for source in [
            rules::HOSTNAME_PATTERN,
            rules::OBJECT_NAME_PATTERN,
            rules::SERVICE_NAME_PATTERN,
            rules::LABEL_PATTERN,
            rules::HTTP_TOKEN_PATTERN,
            rules::ORIGIN_URL_PATTERN,
            rules::TYPE_NAME_PATTERN,
            crate::duration::DURATION_PATTERN,
        ] {
            assert!(Regex::new(source).is_ok(), "{source} compiles");
        }
    }
}
