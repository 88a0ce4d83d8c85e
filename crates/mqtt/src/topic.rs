//! MQTT topic names and filters: validation and matching, used by the broker, the local bus
//! (whose IPC topics follow the same rules) and IPC authorization.
//!
//! Rules (MQTT 3.1.1 §4.7 / 5.0 §4.7):
//! - `+` matches exactly one level, `#` matches the rest (including the parent level) and must be last;
//! - wildcards must occupy a whole level;
//! - a filter that starts with a wildcard does not match topics that start with `$`;
//! - topics are 1 to 65,535 bytes without NUL;
//! - a shared subscription is `$share/{name}/{filter}` (MQTT 5.0 §4.8.2), see [`split_shared`].

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    /// A topic *name* (publish target) contains `+` or `#`.
    WildcardInName,
    /// `+` or `#` shares a level with other characters, or `#` is not last.
    MisplacedWildcard,
    /// A NUL character, forbidden by the MQTT spec.
    NulCharacter,
    TooLong {
        len: usize,
        max: usize,
    },
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicError::Empty => write!(f, "topic is empty"),
            TopicError::WildcardInName => write!(f, "topic name must not contain '+' or '#'"),
            TopicError::MisplacedWildcard => {
                write!(
                    f,
                    "wildcards must fill a whole level and '#' must be the last level"
                )
            }
            TopicError::NulCharacter => write!(f, "topic contains a NUL character"),
            TopicError::TooLong { len, max } => {
                write!(f, "topic is {len} bytes, the limit is {max}")
            }
        }
    }
}

impl std::error::Error for TopicError {}

/// Longest topic accepted: the MQTT UTF-8 string limit.
pub const MAX_TOPIC_LEN: usize = 65_535;

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: MAX_TOPIC_LEN,
        });
    }
    if s.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

/// Validates a topic a message is published to.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a subscription filter.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "#" if !is_last => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            other if other.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `topic` (a valid name) matches `filter` (a valid filter).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A `$share/{name}/{filter}` subscription whose name is empty or has a wildcard, or that
/// has no filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedShare;

impl std::fmt::Display for MalformedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a shared subscription is $share/{name}/{filter} with a non-empty name without wildcards and a non-empty filter")
    }
}

impl std::error::Error for MalformedShare {}

/// Splits `$share/{name}/{filter}` into `(Some(name), filter)`; other filters into `(None, f)`.
pub fn split_shared(filter: &str) -> Result<(Option<&str>, &str), MalformedShare> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok((None, filter));
    };
    let (name, f) = rest.split_once('/').ok_or(MalformedShare)?;
    if name.is_empty() || name.contains(['+', '#']) || f.is_empty() {
        return Err(MalformedShare);
    }
    Ok((Some(name), f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_by_level() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "x/y"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("+/+", "/x"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
    }

    #[test]
    fn dollar_topics_hidden_from_leading_wildcards() {
        assert!(!topic_matches("#", "$aws/things/x"));
        assert!(!topic_matches("+/things/x", "$aws/things/x"));
        assert!(topic_matches("$aws/#", "$aws/things/x"));
    }

    #[test]
    fn filter_validation() {
        assert!(validate_topic_filter("a/+/#").is_ok());
        assert_eq!(
            validate_topic_filter("a/#/b"),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(
            validate_topic_filter("a/b+"),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
    }

    #[test]
    fn shared_subscriptions_split_into_name_and_filter() {
        assert_eq!(split_shared("a/b"), Ok((None, "a/b")));
        assert_eq!(split_shared("$share/g/a/+"), Ok((Some("g"), "a/+")));
        assert_eq!(split_shared("$share/g"), Err(MalformedShare));
        assert_eq!(split_shared("$share//a"), Err(MalformedShare));
        assert_eq!(split_shared("$share/g+/a"), Err(MalformedShare));
        assert_eq!(split_shared("$share/g/"), Err(MalformedShare));
    }

    proptest::proptest! {
        #[test]
        fn a_topic_always_matches_itself_and_hash(levels in proptest::collection::vec("[a-z0-9]{0,4}", 1..6)) {
            let topic = levels.join("/");
            if !topic.is_empty() {
                proptest::prop_assert!(topic_matches(&topic, &topic));
                proptest::prop_assert!(topic_matches("#", &topic));
                let plus: Vec<&str> = levels.iter().map(|_| "+").collect();
                proptest::prop_assert!(topic_matches(&plus.join("/"), &topic));
            }
        }
    }
}
