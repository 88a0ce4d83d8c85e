//! npm-style semantic version ranges, as used by `ComponentDependencies.*.VersionRequirement`
//! and by deployments.
//!
//! Greengrass documents the requirement as "npm-style", so lichen follows the npm grammar
//! (comparators, `^`, `~`, x-ranges, hyphen ranges, space = AND, `||` = OR) and npm's
//! prerelease rule: a version with a prerelease tag only matches a comparator set that
//! names a prerelease of the same `major.minor.patch`. Build metadata is ignored.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use semver::{Prerelease, Version};

use crate::error::RecipeError;

/// A parsed npm-style version range. Cheap to clone; compares by its parsed meaning and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    text: String,
    /// OR of AND-sets. An empty AND-set matches every (non-prerelease) version.
    sets: Vec<Vec<Comparator>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: Version,
}

/// A version with optional (wildcard) parts, e.g. `1`, `1.2`, `1.x`, `1.2.3-beta`.
#[derive(Debug, Clone)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

impl VersionRange {
    /// Parses an npm-style range. `*`, `x` and the empty string mean "any version".
    pub fn parse(s: &str) -> Result<Self, RecipeError> {
        let err = |reason: String| RecipeError::InvalidRange {
            range: s.to_owned(),
            reason,
        };
        let mut sets = Vec::new();
        for part in s.split("||") {
            sets.push(parse_set(part).map_err(err)?);
        }
        Ok(VersionRange {
            text: s.to_owned(),
            sets,
        })
    }

    /// A range that matches any release version.
    pub fn any() -> Self {
        VersionRange {
            text: "*".to_owned(),
            sets: vec![Vec::new()],
        }
    }

    /// A range that matches exactly `v` (build metadata ignored).
    pub fn exact(v: &Version) -> Self {
        let version = strip_build(v);
        VersionRange {
            text: format!("={version}"),
            sets: vec![vec![Comparator {
                op: Op::Eq,
                version,
            }]],
        }
    }

    /// Whether `v` satisfies the range.
    pub fn matches(&self, v: &Version) -> bool {
        self.sets.iter().any(|set| set_matches(set, v))
    }

    /// The range as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for VersionRange {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VersionRange::parse(s)
    }
}

fn strip_build(v: &Version) -> Version {
    Version {
        major: v.major,
        minor: v.minor,
        patch: v.patch,
        pre: v.pre.clone(),
        build: semver::BuildMetadata::EMPTY,
    }
}

/// Orders versions the npm way: build metadata does not count.
fn cmp_versions(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

fn set_matches(set: &[Comparator], v: &Version) -> bool {
    let all = set.iter().all(|c| {
        let ord = cmp_versions(v, &c.version);
        match c.op {
            Op::Eq => ord == Ordering::Equal,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
        }
    });
    if !all {
        return false;
    }
    if v.pre.is_empty() {
        return true;
    }
    // npm: a prerelease only matches if some comparator opts into prereleases of the
    // same major.minor.patch.
    set.iter().any(|c| {
        !c.version.pre.is_empty()
            && (c.version.major, c.version.minor, c.version.patch) == (v.major, v.minor, v.patch)
    })
}

const OPERATORS: [&str; 9] = ["~>", ">=", "<=", "~", "^", ">", "<", "=", ""];

fn split_operator(token: &str) -> (&str, &str) {
    for op in OPERATORS {
        if let Some(rest) = token.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("", token)
}

fn is_operator_only(token: &str) -> bool {
    matches!(token, "~>" | ">=" | "<=" | "~" | "^" | ">" | "<" | "=")
}

fn parse_set(part: &str) -> Result<Vec<Comparator>, String> {
    // Join operators written apart from their version (`>= 1.2.3`).
    let mut tokens: Vec<String> = Vec::new();
    let mut pending: Option<&str> = None;
    for raw in part.split_whitespace() {
        if let Some(op) = pending.take() {
            if is_operator_only(raw) || raw == "-" {
                return Err(format!("operator \"{op}\" is not followed by a version"));
            }
            tokens.push(format!("{op}{raw}"));
        } else if is_operator_only(raw) {
            pending = Some(raw);
        } else {
            tokens.push(raw.to_owned());
        }
    }
    if let Some(op) = pending {
        return Err(format!("operator \"{op}\" is not followed by a version"));
    }

    if tokens.iter().any(|t| t == "-") {
        if tokens.len() != 3 || tokens[1] != "-" {
            return Err("a hyphen range must have the form \"A - B\"".to_owned());
        }
        return hyphen(&tokens[0], &tokens[2]);
    }

    let mut out = Vec::new();
    for token in &tokens {
        let (op, rest) = split_operator(token);
        let partial = parse_partial(rest)?;
        expand(op, &partial, &mut out)?;
    }
    Ok(out)
}

fn parse_partial(text: &str) -> Result<Partial, String> {
    let text = text.strip_prefix('=').unwrap_or(text);
    let text = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err("missing version".to_owned());
    }
    // Build metadata never matters in a range.
    let text = text.split_once('+').map_or(text, |(head, _)| head);
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let mut parts = [None, None, None];
    let mut wild_seen = false;
    let mut count = 0;
    for (i, piece) in core.split('.').enumerate() {
        if i >= 3 {
            return Err(format!("\"{text}\" has more than three version parts"));
        }
        count = i + 1;
        if matches!(piece, "x" | "X" | "*") {
            wild_seen = true;
            continue;
        }
        if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("\"{piece}\" is not a version number in \"{text}\""));
        }
        if wild_seen {
            return Err(format!("\"{text}\": a number cannot follow a wildcard"));
        }
        if piece.len() > 1 && piece.starts_with('0') {
            return Err(format!("\"{piece}\" has a leading zero in \"{text}\""));
        }
        let n: u64 = piece
            .parse()
            .map_err(|_| format!("\"{piece}\" is too large in \"{text}\""))?;
        parts[i] = Some(n);
    }
    debug_assert!(count >= 1);
    let pre = match pre {
        None => Prerelease::EMPTY,
        Some(p) => {
            if p.is_empty() {
                return Err(format!("\"{text}\": empty prerelease"));
            }
            if parts.iter().any(Option::is_none) {
                return Err(format!(
                    "\"{text}\": a prerelease needs a full major.minor.patch version"
                ));
            }
            Prerelease::new(p).map_err(|e| format!("\"{p}\" is not a valid prerelease: {e}"))?
        }
    };
    Ok(Partial {
        major: parts[0],
        minor: parts[1],
        patch: parts[2],
        pre,
    })
}

fn ver(major: u64, minor: u64, patch: u64) -> Version {
    Version::new(major, minor, patch)
}

/// `major.minor.patch-0`: the lowest version of that tuple, used for exclusive upper bounds
/// so that prereleases of the next tuple are excluded.
fn ver0(major: u64, minor: u64, patch: u64) -> Version {
    let mut v = Version::new(major, minor, patch);
    v.pre = Prerelease::new("0").unwrap_or(Prerelease::EMPTY);
    v
}

fn inc(n: u64) -> Result<u64, String> {
    n.checked_add(1)
        .ok_or_else(|| "version number too large".to_owned())
}

fn full(p: &Partial) -> Option<Version> {
    match (p.major, p.minor, p.patch) {
        (Some(a), Some(b), Some(c)) => {
            let mut v = ver(a, b, c);
            v.pre = p.pre.clone();
            Some(v)
        }
        _ => None,
    }
}

fn push(out: &mut Vec<Comparator>, op: Op, version: Version) {
    out.push(Comparator { op, version });
}

/// Lower bound of a partial version: the smallest version it names.
fn lower(p: &Partial) -> Version {
    full(p).unwrap_or_else(|| ver(p.major.unwrap_or(0), p.minor.unwrap_or(0), 0))
}

/// Exclusive upper bound of a partial version with at least one wildcard part.
fn upper_exclusive(p: &Partial) -> Result<Option<Version>, String> {
    Ok(match (p.major, p.minor) {
        (None, _) => None,
        (Some(a), None) => Some(ver0(inc(a)?, 0, 0)),
        (Some(a), Some(b)) => Some(ver0(a, inc(b)?, 0)),
    })
}

fn nothing(out: &mut Vec<Comparator>) {
    push(out, Op::Lt, ver0(0, 0, 0));
}

fn expand(op: &str, p: &Partial, out: &mut Vec<Comparator>) -> Result<(), String> {
    match op {
        "" | "=" => match full(p) {
            Some(v) => push(out, Op::Eq, v),
            None => {
                if p.major.is_some() {
                    push(out, Op::Ge, lower(p));
                }
                if let Some(u) = upper_exclusive(p)? {
                    push(out, Op::Lt, u);
                }
            }
        },
        ">" => match (full(p), p.major, p.minor) {
            (Some(v), _, _) => push(out, Op::Gt, v),
            (None, None, _) => nothing(out),
            (None, Some(a), None) => push(out, Op::Ge, ver(inc(a)?, 0, 0)),
            (None, Some(a), Some(b)) => push(out, Op::Ge, ver(a, inc(b)?, 0)),
        },
        ">=" => {
            if p.major.is_some() {
                push(out, Op::Ge, lower(p));
            }
        }
        "<" => match (full(p), p.major) {
            (Some(v), _) => push(out, Op::Lt, v),
            (None, None) => nothing(out),
            (None, Some(a)) => push(out, Op::Lt, ver0(a, p.minor.unwrap_or(0), 0)),
        },
        "<=" => match full(p) {
            Some(v) => push(out, Op::Le, v),
            None => {
                if let Some(u) = upper_exclusive(p)? {
                    push(out, Op::Lt, u);
                }
            }
        },
        "~" | "~>" => {
            let Some(a) = p.major else { return Ok(()) };
            push(out, Op::Ge, lower(p));
            let upper = match p.minor {
                None => ver0(inc(a)?, 0, 0),
                Some(b) => ver0(a, inc(b)?, 0),
            };
            push(out, Op::Lt, upper);
        }
        "^" => {
            let Some(a) = p.major else { return Ok(()) };
            push(out, Op::Ge, lower(p));
            let upper = match (a, p.minor, p.patch) {
                (0, Some(0), Some(c)) => ver0(0, 0, inc(c)?),
                (0, Some(b), _) => ver0(0, inc(b)?, 0),
                _ => ver0(inc(a)?, 0, 0),
            };
            push(out, Op::Lt, upper);
        }
        other => return Err(format!("unknown operator \"{other}\"")),
    }
    Ok(())
}

fn hyphen(from: &str, to: &str) -> Result<Vec<Comparator>, String> {
    let (op_a, a) = split_operator(from);
    let (op_b, b) = split_operator(to);
    if !op_a.is_empty() || !op_b.is_empty() {
        return Err("operators are not allowed in a hyphen range".to_owned());
    }
    let a = parse_partial(a)?;
    let b = parse_partial(b)?;
    let mut out = Vec::new();
    if a.major.is_some() {
        push(&mut out, Op::Ge, lower(&a));
    }
    match full(&b) {
        Some(v) => push(&mut out, Op::Le, v),
        None => {
            if let Some(u) = upper_exclusive(&b)? {
                push(&mut out, Op::Lt, u);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> VersionRange {
        match VersionRange::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn v(s: &str) -> Version {
        Version::parse(s).expect("test version")
    }

    fn check(range: &str, yes: &[&str], no: &[&str]) {
        let range_v = r(range);
        for y in yes {
            assert!(range_v.matches(&v(y)), "{range} should match {y}");
        }
        for n in no {
            assert!(!range_v.matches(&v(n)), "{range} should not match {n}");
        }
    }

    #[test]
    fn exact_and_equals() {
        check("1.2.3", &["1.2.3", "1.2.3+build"], &["1.2.4", "1.2.2"]);
        check("=1.2.3", &["1.2.3"], &["1.2.4"]);
        check("v1.2.3", &["1.2.3"], &["1.2.4"]);
        check("=v1.2.3", &["1.2.3"], &["1.2.4"]);
    }

    #[test]
    fn comparators() {
        check(">1.2.3", &["1.2.4", "2.0.0"], &["1.2.3", "1.0.0"]);
        check(">=1.2.3", &["1.2.3", "9.0.0"], &["1.2.2"]);
        check("<1.2.3", &["1.2.2", "0.0.1"], &["1.2.3", "1.3.0"]);
        check("<=1.2.3", &["1.2.3"], &["1.2.4"]);
        check(">= 1.2.3 < 2", &["1.2.3", "1.9.9"], &["2.0.0", "1.2.2"]);
        check(">=1.0.0 <1.1.0", &["1.0.0", "1.0.9"], &["1.1.0", "0.9.9"]);
    }

    #[test]
    fn caret() {
        check(
            "^1.2.3",
            &["1.2.3", "1.9.0"],
            &["2.0.0", "1.2.2", "2.0.0-alpha"],
        );
        check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0", "0.2.2"]);
        check("^0.0.3", &["0.0.3"], &["0.0.4", "0.0.2"]);
        check("^1.1", &["1.1.0", "1.9.9"], &["1.0.9", "2.0.0"]);
        check("^2.0", &["2.0.0", "2.5.1"], &["3.0.0"]);
        check("^1.x", &["1.0.0", "1.9.0"], &["2.0.0", "0.9.0"]);
        check("^0.0", &["0.0.0", "0.0.9"], &["0.1.0"]);
        check("^0", &["0.0.0", "0.9.9"], &["1.0.0"]);
        check("^1.2.x", &["1.2.0", "1.3.0"], &["2.0.0", "1.1.9"]);
    }

    #[test]
    fn tilde() {
        check("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
        check("~1.2", &["1.2.0", "1.2.9"], &["1.3.0"]);
        check("~1", &["1.0.0", "1.9.9"], &["2.0.0"]);
        check("~0.2.3", &["0.2.3"], &["0.3.0"]);
        check("~>1.2", &["1.2.0"], &["1.3.0"]);
    }

    #[test]
    fn x_ranges() {
        check("1.x", &["1.0.0", "1.99.0"], &["2.0.0", "0.9.0"]);
        check("1.2.*", &["1.2.0", "1.2.99"], &["1.3.0"]);
        check("1", &["1.0.0", "1.5.0"], &["2.0.0"]);
        check("1.2", &["1.2.0", "1.2.5"], &["1.3.0"]);
        check("*", &["0.0.0", "99.0.0"], &["1.0.0-beta"]);
        check("", &["0.0.0", "99.0.0"], &[]);
        check("x", &["1.0.0"], &[]);
        check(">1", &["2.0.0"], &["1.9.9"]);
        check(">1.2", &["1.3.0"], &["1.2.9"]);
        check("<1.2", &["1.1.9"], &["1.2.0"]);
        check("<=1.2", &["1.2.9"], &["1.3.0"]);
        check(">=1.2", &["1.2.0"], &["1.1.9"]);
        check("<*", &[], &["0.0.0", "1.0.0"]);
        check(">*", &[], &["0.0.0", "1.0.0"]);
        check(">=*", &["0.0.0"], &[]);
    }

    #[test]
    fn hyphen_ranges() {
        check("1.2.3 - 2.3.4", &["1.2.3", "2.3.4"], &["2.3.5", "1.2.2"]);
        check("1.2 - 2.3.4", &["1.2.0"], &["1.1.9"]);
        check("1.2.3 - 2.3", &["2.3.9"], &["2.4.0"]);
        check("1.2.3 - 2", &["2.9.9"], &["3.0.0"]);
        check("* - 2", &["0.0.1"], &["3.0.0"]);
    }

    #[test]
    fn or_ranges() {
        check(
            "1.x || >=2.5.0 || 5.0.0 - 7.2.3",
            &["1.2.3", "2.5.0", "6.0.0", "9.0.0"],
            &["2.4.0"],
        );
        check("<1.0.0 || >2.0.0", &["0.5.0", "2.0.1"], &["1.5.0", "2.0.0"]);
        check("1.0.0 ||", &["1.0.0", "3.0.0"], &[]);
    }

    #[test]
    fn prereleases() {
        check(
            ">1.2.3-alpha.3",
            &["1.2.3-alpha.7", "3.4.5"],
            &["3.4.5-alpha.9", "1.2.3-alpha.1"],
        );
        check(
            "^1.2.3-beta.2",
            &["1.2.3-beta.4", "1.2.3", "1.9.0"],
            &["1.2.4-beta.2", "2.0.0-0"],
        );
        check("1.2.3-rc.1", &["1.2.3-rc.1"], &["1.2.3"]);
        check(
            "~1.2.3-beta.2",
            &["1.2.3-beta.3", "1.2.5"],
            &["1.2.4-beta.1"],
        );
    }

    #[test]
    fn invalid_ranges() {
        for bad in [
            "^^1",
            "1.2.3.4",
            ">=",
            "abc",
            "1.x.3",
            "01.2.3",
            "1.2.3 - ",
            "- 1.2.3",
            "1 - 2 - 3",
            ">=1.2.3 -",
            "1.2-beta",
            "1.2.3-",
            ">= >= 1",
            "1..2",
            "99999999999999999999.0.0",
            "^18446744073709551615",
            "1,2",
        ] {
            assert!(
                VersionRange::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let e = VersionRange::parse("^^1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("invalid version range \"^^1\""), "{e}");
    }

    #[test]
    fn as_str_keeps_text_and_exact_works() {
        assert_eq!(r(">=1.0.0 <1.1.0").as_str(), ">=1.0.0 <1.1.0");
        let e = VersionRange::exact(&v("1.1.0+b"));
        assert_eq!(e.as_str(), "=1.1.0");
        assert!(e.matches(&v("1.1.0")));
        assert!(VersionRange::any().matches(&v("3.0.0")));
        assert_eq!(
            ">=2"
                .parse::<VersionRange>()
                .map(|r| r.matches(&v("2.0.0")))
                .ok(),
            Some(true)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(s in "\\PC*") {
                let _ = VersionRange::parse(&s);
            }

            #[test]
            fn parse_range_like_never_panics(s in "[~^<>=v*xX0-9. |\\-+a-z]{0,40}") {
                if let Ok(range) = VersionRange::parse(&s) {
                    let _ = range.matches(&Version::new(1, 2, 3));
                }
            }

            #[test]
            fn caret_matches_itself(a in 0u64..1000, b in 0u64..1000, c in 0u64..1000) {
                let version = Version::new(a, b, c);
                let caret = VersionRange::parse(&format!("^{a}.{b}.{c}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(caret.matches(&version));
                let tilde = VersionRange::parse(&format!("~{a}.{b}.{c}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(tilde.matches(&version));
                let exact = VersionRange::parse(&format!("{a}.{b}.{c}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(exact.matches(&version));
                prop_assert!(!caret.matches(&Version::new(a + 1, 0, 0)));
            }

            #[test]
            fn caret_excludes_next_major(a in 1u64..1000, b in 0u64..1000, c in 0u64..1000) {
                let caret = VersionRange::parse(&format!("^{a}.{b}.{c}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(!caret.matches(&Version::new(a + 1, 0, 0)));
                prop_assert!(caret.matches(&Version::new(a, b + 1, 0)));
            }
        }
    }
}
