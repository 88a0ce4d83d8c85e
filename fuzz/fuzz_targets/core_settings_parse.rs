//! Feeds arbitrary text to the core's settings parser (YAML and JSON paths), then checks the
//! `cloud` section and resolves paths against a directory that does not exist. Nothing may
//! panic; an accepted cloud section always has an endpoint with a port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_core::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut settings) = Settings::parse(text) else {
        return;
    };
    if let Some(cloud) = &settings.cloud {
        assert!(cloud.endpoint().contains(':'));
    }
    let _ = settings.resolve_paths(std::path::Path::new("/nonexistent-lichen-fuzz"));
});
