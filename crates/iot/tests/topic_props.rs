//! Property tests: topic parsing never panics, and whatever parses builds back to the same
//! topic string.

use lichen_iot::topic::ReservedTopic;
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$aws".to_string()),
        Just("things".to_string()),
        Just("shadow".to_string()),
        Just("name".to_string()),
        Just("jobs".to_string()),
        Just("$next".to_string()),
        Just("get".to_string()),
        Just("update".to_string()),
        Just("delete".to_string()),
        Just("accepted".to_string()),
        Just("rejected".to_string()),
        Just("delta".to_string()),
        Just("documents".to_string()),
        Just("notify".to_string()),
        Just("notify-next-namespace-ns".to_string()),
        Just("namespace-aws-gg-deployment".to_string()),
        Just("start-next".to_string()),
        Just("certificates".to_string()),
        Just("create".to_string()),
        Just("json".to_string()),
        Just("provisioning-templates".to_string()),
        Just("provision".to_string()),
        "[a-zA-Z0-9:_$+#-]{0,6}",
        ".{0,4}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn parse_never_panics_and_round_trips(parts in prop::collection::vec(segment(), 0..8), raw in ".{0,40}") {
        let mut topic = String::from("$aws/");
        topic.push_str(&parts.join("/"));
        for candidate in [&topic, &raw] {
            if let Ok(parsed) = ReservedTopic::parse(candidate) {
                prop_assert_eq!(&parsed.to_string(), candidate);
                prop_assert_eq!(ReservedTopic::parse(&parsed.to_string()).unwrap(), parsed);
            }
        }
    }
}
