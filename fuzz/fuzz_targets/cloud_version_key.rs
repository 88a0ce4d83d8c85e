//! Feeds arbitrary text to the cloud store's component version key and checks what the
//! database relies on: a key exists exactly for semantic versions, holds no NUL (PostgreSQL
//! text cannot), and orders as semver precedence against a fixed set of versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_cloud_store::version_sort_key;

const PROBES: &[&str] = &["0.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0", "1.10.0", "99.0.0-rc.9"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = semver::Version::parse(text);
    let key = version_sort_key(text);
    assert_eq!(parsed.is_ok(), key.is_ok());
    let (Ok(version), Ok(key)) = (parsed, key) else {
        return;
    };
    assert!(!key.contains('\0'));
    for probe in PROBES {
        let probe_version = semver::Version::parse(probe).unwrap();
        let precedence = version.cmp_precedence(&probe_version);
        if precedence != std::cmp::Ordering::Equal {
            assert_eq!(key.cmp(&version_sort_key(probe).unwrap()), precedence);
        }
    }
});
