//! What the API accepts as names and values, following AWS IoT's rules, so that a name the
//! cloud takes is one a real AWS IoT client also accepts (and can appear in an MQTT topic).
//! Pure functions: property-tested below.

use lichen_cloud_store::{Attributes, MAX_ATTRIBUTES};

/// Longest thing or thing group name (AWS IoT: 128).
pub const MAX_NAME: usize = 128;
/// Longest provisioning template name (AWS IoT: 36).
pub const MAX_TEMPLATE_NAME: usize = 36;
/// Longest attribute name (AWS IoT: 128) and value (AWS IoT: 800).
pub const MAX_ATTRIBUTE_NAME: usize = 128;
pub const MAX_ATTRIBUTE_VALUE: usize = 800;
/// Longest free-text description (groups, tokens).
pub const MAX_DESCRIPTION: usize = 2028;
/// Most connectivity endpoints one core reports.
pub const MAX_CONNECTIVITY_ENDPOINTS: usize = 32;
/// Most groups named when a thing is created.
pub const MAX_GROUPS_AT_CREATE: usize = 10;

fn check(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), String> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(format!(
            "{field} must be {min} to {max} characters long (got {len})"
        ));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{field} {value:?} contains {c:?}; allowed are {allowed_text}"
        ));
    }
    Ok(())
}

/// Thing and thing group names: `[a-zA-Z0-9:_-]`, 1..=128.
pub fn name(field: &str, value: &str) -> Result<(), String> {
    check(
        field,
        value,
        1,
        MAX_NAME,
        |c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'),
        "letters, digits, ':', '_' and '-'",
    )
}

/// Provisioning template names: `[0-9A-Za-z_-]`, 1..=36.
pub fn template_name(value: &str) -> Result<(), String> {
    check(
        "templateName",
        value,
        1,
        MAX_TEMPLATE_NAME,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
        "letters, digits, '_' and '-'",
    )
}

pub fn attribute_name(value: &str) -> Result<(), String> {
    check(
        "attribute name",
        value,
        1,
        MAX_ATTRIBUTE_NAME,
        |c| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c),
        "letters, digits and _.,@/:#-",
    )
}

pub fn attribute_value(key: &str, value: &str) -> Result<(), String> {
    check(
        &format!("attribute {key:?}"),
        value,
        0,
        MAX_ATTRIBUTE_VALUE,
        |c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c),
        "letters, digits and _.,@/:#=[]-",
    )
}

/// A whole attribute map: every name and value, and at most [`MAX_ATTRIBUTES`].
pub fn attributes(attrs: &Attributes) -> Result<(), String> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "a thing has at most {MAX_ATTRIBUTES} attributes (got {})",
            attrs.len()
        ));
    }
    for (k, v) in attrs {
        attribute_name(k)?;
        attribute_value(k, v)?;
    }
    Ok(())
}

/// Free text: at most [`MAX_DESCRIPTION`] characters, no control characters (it is printed
/// in terminals and logs).
pub fn description(field: &str, value: &str) -> Result<(), String> {
    check(
        field,
        value,
        0,
        MAX_DESCRIPTION,
        |c| !c.is_control(),
        "any character but control characters",
    )
}

/// A host a client device can reach: a DNS name or an IP address, 1..=253 characters.
pub fn host_address(value: &str) -> Result<(), String> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    check(
        "hostAddress",
        value,
        1,
        253,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'),
        "a DNS name (letters, digits, '.', '-', '_') or an IP address",
    )
}

/// A certificate id: 64 lowercase hex digits (sha256 of the DER).
pub fn fingerprint(value: &str) -> Result<(), String> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "certificate id {value:?} is not 64 lowercase hex digits (the sha256 of the certificate)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_follow_aws_iot_rules() {
        name("thingName", "camera-7:front_door").unwrap();
        assert!(name("thingName", "").unwrap_err().contains("1 to 128"));
        assert!(name("thingName", "a/b").unwrap_err().contains("'/'"));
        assert!(name("thingName", "+").is_err(), "no MQTT wildcards");
        assert!(name("thingName", &"a".repeat(129)).is_err());
        template_name("Fleet_1").unwrap();
        assert!(template_name(&"t".repeat(37)).is_err());
        fingerprint(&"a".repeat(64)).unwrap();
        assert!(fingerprint(&"A".repeat(64)).is_err());
        host_address("::1").unwrap();
        host_address("core-1.example.com").unwrap();
        assert!(host_address("a b").is_err());
    }

    #[test]
    fn attribute_maps_are_bounded() {
        let mut attrs = Attributes::new();
        for i in 0..=MAX_ATTRIBUTES {
            attrs.insert(format!("k{i}"), "v".into());
        }
        assert!(attributes(&attrs).unwrap_err().contains("at most 50"));
        let one: Attributes = [("site".to_string(), "a b".to_string())].into();
        assert!(attributes(&one).unwrap_err().contains("\"site\""));
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_never_an_mqtt_topic_hazard(s in "\\PC{0,140}") {
            if name("thingName", &s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= MAX_NAME);
                prop_assert!(!s.contains(['/', '+', '#', '$', '\0']));
            }
        }

        #[test]
        fn names_from_the_allowed_alphabet_are_accepted(s in "[a-zA-Z0-9:_-]{1,128}") {
            prop_assert!(name("thingName", &s).is_ok());
        }

        #[test]
        fn a_refusal_names_the_field(s in "\\PC{0,300}") {
            if let Err(e) = description("description", &s) {
                prop_assert!(e.starts_with("description"));
            }
        }
    }
}
