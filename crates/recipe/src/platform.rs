//! Platforms and manifest platform requirements.
//!
//! A device describes itself with a [`Platform`] (at least `os` and `architecture`, plus any
//! custom attributes from the nucleus `platformOverride`). A manifest's `Platform` section is a
//! [`PlatformRequirement`]; the first manifest whose requirement accepts the device wins.

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// The attributes of the device a component is being selected for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// Attribute name (lowercase by convention) to value, e.g. `os` → `linux`.
    pub attributes: BTreeMap<String, String>,
}

impl Platform {
    /// The platform lichen is running on, named the way Greengrass names it
    /// (`os`: linux|darwin|windows, `architecture`: amd64|aarch64|arm|x86).
    pub fn current() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "aarch64",
            "arm" => "arm",
            "x86" => "x86",
            other => other,
        };
        Platform::default()
            .with("os", os)
            .with("architecture", arch)
    }

    /// Adds or replaces an attribute. Keys are stored lowercase because recipe platform
    /// keys are matched case-insensitively.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes
            .insert(key.into().to_ascii_lowercase(), value.into());
        self
    }

    /// The value of an attribute, looked up case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.attributes.get(key) {
            return Some(v);
        }
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attributes.is_empty() {
            return f.write_str("(no attributes)");
        }
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// One value of a manifest `Platform` section.
#[derive(Debug, Clone)]
pub enum PlatformValue {
    /// `*`: matches any value, and also a missing attribute. The legacy `all`/`any` of
    /// `os` and `architecture` mean the same.
    Any,
    /// `//`: the attribute must be present, with any value.
    Present,
    /// `null`: the attribute must be missing.
    Absent,
    /// A literal value, compared exactly (as the nucleus does).
    Exact(String),
    /// `/regex/`: must match the whole attribute value (Java `matches()` semantics).
    Regex {
        /// The expression between the slashes, as written.
        pattern: String,
        /// The compiled, anchored expression.
        regex: Regex,
    },
    /// A list of alternatives: any of them may match.
    OneOf(Vec<PlatformValue>),
}

impl PartialEq for PlatformValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PlatformValue::Any, PlatformValue::Any)
            | (PlatformValue::Present, PlatformValue::Present)
            | (PlatformValue::Absent, PlatformValue::Absent) => true,
            (PlatformValue::Exact(a), PlatformValue::Exact(b)) => a == b,
            (PlatformValue::Regex { pattern: a, .. }, PlatformValue::Regex { pattern: b, .. }) => {
                a == b
            }
            (PlatformValue::OneOf(a), PlatformValue::OneOf(b)) => a == b,
            _ => false,
        }
    }
}

impl PlatformValue {
    /// Interprets a recipe platform value for attribute `key`. Fails only for a `/regex/`
    /// that does not compile (the message says why).
    pub fn parse(key: &str, text: &str) -> Result<PlatformValue, String> {
        let trimmed = text.trim();
        let legacy_wildcard = (key.eq_ignore_ascii_case("os")
            || key.eq_ignore_ascii_case("architecture"))
            && (trimmed == "all" || trimmed == "any");
        if trimmed == "*" || legacy_wildcard {
            return Ok(PlatformValue::Any);
        }
        if trimmed == "//" {
            return Ok(PlatformValue::Present);
        }
        if trimmed.len() > 2 && trimmed.starts_with('/') && trimmed.ends_with('/') {
            let pattern = &trimmed[1..trimmed.len() - 1];
            let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .nest_limit(64)
                .build()
                .map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))?;
            return Ok(PlatformValue::Regex {
                pattern: pattern.to_owned(),
                regex,
            });
        }
        Ok(PlatformValue::Exact(trimmed.to_owned()))
    }

    /// Whether an attribute value (or its absence) is accepted.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (PlatformValue::Any, _) => true,
            (PlatformValue::OneOf(list), v) => list.iter().any(|alt| alt.matches(v)),
            (PlatformValue::Absent, v) => v.is_none(),
            (_, None) => false,
            (PlatformValue::Present, Some(_)) => true,
            (PlatformValue::Exact(e), Some(v)) => e == v,
            (PlatformValue::Regex { regex, .. }, Some(v)) => regex.is_match(v),
        }
    }
}

impl fmt::Display for PlatformValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformValue::Any => f.write_str("*"),
            PlatformValue::Present => f.write_str("//"),
            PlatformValue::Absent => f.write_str("(absent)"),
            PlatformValue::Exact(v) => f.write_str(v),
            PlatformValue::Regex { pattern, .. } => write!(f, "/{pattern}/"),
            PlatformValue::OneOf(list) => {
                f.write_str("[")?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("|")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A manifest's `Platform` section. Empty means "any platform".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlatformRequirement {
    /// Attribute name (lowercased) to the accepted value.
    pub attributes: BTreeMap<String, PlatformValue>,
}

impl PlatformRequirement {
    /// Whether the device platform satisfies every attribute of this requirement.
    pub fn matches(&self, platform: &Platform) -> bool {
        self.attributes
            .iter()
            .all(|(k, want)| want.matches(platform.get(k)))
    }
}

impl fmt::Display for PlatformRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attributes.is_empty() {
            return f.write_str("(any platform)");
        }
        for (i, (k, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> PlatformRequirement {
        let mut r = PlatformRequirement::default();
        for (k, v) in pairs {
            let value = PlatformValue::parse(k, v).expect("test value");
            r.attributes.insert(k.to_ascii_lowercase(), value);
        }
        r
    }

    fn linux_amd64() -> Platform {
        Platform::default()
            .with("os", "linux")
            .with("architecture", "amd64")
    }

    #[test]
    fn exact_values() {
        assert!(req(&[("os", "linux")]).matches(&linux_amd64()));
        // Values compare exactly, as in the nucleus.
        assert!(!req(&[("os", "Linux")]).matches(&linux_amd64()));
        assert!(!req(&[("os", "windows")]).matches(&linux_amd64()));
        assert!(req(&[("os", "linux"), ("architecture", "amd64")]).matches(&linux_amd64()));
        assert!(!req(&[("os", "linux"), ("architecture", "arm")]).matches(&linux_amd64()));
    }

    #[test]
    fn wildcard_matches_absent_attribute() {
        assert!(req(&[("os", "*"), ("custom.key", "*")]).matches(&linux_amd64()));
        assert!(req(&[("os", "all"), ("architecture", "all")]).matches(&linux_amd64()));
        assert!(req(&[("os", "any"), ("architecture", "any")]).matches(&linux_amd64()));
        // `all` is only a wildcard for os and architecture.
        assert!(!req(&[("custom.key", "all")]).matches(&linux_amd64()));
        assert!(!req(&[("custom.key", "x")]).matches(&linux_amd64()));
        assert!(req(&[]).matches(&linux_amd64()));
    }

    #[test]
    fn presence_absence_and_alternatives() {
        assert!(req(&[("os", "//")]).matches(&linux_amd64()));
        assert!(!req(&[("custom", "//")]).matches(&linux_amd64()));
        let mut absent = PlatformRequirement::default();
        absent
            .attributes
            .insert("custom".into(), PlatformValue::Absent);
        assert!(absent.matches(&linux_amd64()));
        absent.attributes.insert("os".into(), PlatformValue::Absent);
        assert!(!absent.matches(&linux_amd64()));
        let mut alts = PlatformRequirement::default();
        alts.attributes.insert(
            "os".into(),
            PlatformValue::OneOf(vec![
                PlatformValue::parse("os", "darwin").expect("v"),
                PlatformValue::parse("os", "/lin.x/").expect("v"),
            ]),
        );
        assert!(alts.matches(&linux_amd64()));
        assert_eq!(alts.to_string(), "os=[darwin|/lin.x/]");
        assert!(!alts.matches(&Platform::default().with("os", "windows")));
    }

    #[test]
    fn regex_values_match_whole_value() {
        assert!(req(&[("architecture", "/amd64|x86/")]).matches(&linux_amd64()));
        assert!(req(&[("os", "/darwin|linux/")]).matches(&linux_amd64()));
        assert!(!req(&[("os", "/darwin|windows/")]).matches(&linux_amd64()));
        // Full match: `lin` alone must not match `linux`.
        assert!(!req(&[("os", "/lin/")]).matches(&linux_amd64()));
        assert!(req(&[("os", "/.+/")]).matches(&linux_amd64()));
        assert!(!req(&[("custom", "/.*/")]).matches(&linux_amd64()));
    }

    #[test]
    fn bad_regex_is_reported() {
        let e = PlatformValue::parse("os", "/(unclosed/")
            .err()
            .unwrap_or_default();
        assert!(e.contains("invalid regular expression"), "{e}");
    }

    #[test]
    fn keys_are_case_insensitive() {
        let p = Platform::default().with("OS", "linux");
        assert_eq!(p.get("os"), Some("linux"));
        let mut q = Platform::default();
        q.attributes.insert("Architecture".into(), "arm".into());
        assert_eq!(q.get("architecture"), Some("arm"));
        assert!(req(&[("ARCHITECTURE", "arm")]).matches(&q));
    }

    #[test]
    fn current_platform_uses_greengrass_names() {
        let p = Platform::current();
        assert!(p.get("os").is_some());
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(p.get("os"), Some("linux"));
            assert_eq!(p.get("architecture"), Some("amd64"));
        }
        assert!(p.to_string().contains("os="));
    }
}
