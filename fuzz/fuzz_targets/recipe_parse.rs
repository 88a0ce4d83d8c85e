//! Feeds arbitrary bytes to the recipe parser (JSON and YAML paths) and exercises what a
//! parsed recipe offers: platform selection, lifecycle typing, ranges and interpolation.
//! Nothing may panic, overflow the stack or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_recipe::{Platform, VersionRange, parse_recipe};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = VersionRange::parse(text);
    let Ok(recipe) = parse_recipe(text, "fuzz") else {
        return;
    };
    for platform in [
        Platform::current(),
        Platform::default(),
        Platform::default().with("os", "windows").with("architecture", "arm"),
    ] {
        let _ = recipe.select(&platform);
        let _ = recipe.select_with(&platform, &|s: &str| s.replace('{', "("));
    }
    for dep in recipe.dependencies.values() {
        let _ = dep.requirement.matches(&recipe.version);
    }
    // The normalized document must parse again.
    assert!(parse_recipe(&recipe.document.to_string(), "fuzz-again").is_ok());
});
