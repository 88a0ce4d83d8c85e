//! Feeds arbitrary text to the reserved-topic parser. Nothing may panic, and whatever parses
//! must build back to the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_iot::topic::ReservedTopic;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = ReservedTopic::parse(text) {
        assert_eq!(topic.to_string(), text);
    }
});
