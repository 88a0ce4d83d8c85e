//! Feeds arbitrary bytes to the shadow service as update, get and delete requests, against no
//! shadow and against the shadow a first accepted update leaves. Nothing may panic; an
//! accepted update must produce version + 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_iot::shadow::{self, ShadowLimits};
use lichen_iot::topic::ShadowAddress;

fuzz_target!(|data: &[u8]| {
    let limits = ShadowLimits::default();
    let Ok(address) = ShadowAddress::new("fuzz-thing", Some("fuzz")) else {
        return;
    };
    let _ = shadow::get(None, data, &address, 1, &limits);
    let _ = shadow::delete(None, data, &address, 1, &limits);
    let Ok(first) = shadow::apply_update(None, data, 1, &limits) else {
        return;
    };
    assert_eq!(first.stored.version, 1);
    if let Ok(second) = shadow::apply_update(Some(&first.stored), data, 2, &limits) {
        assert_eq!(second.stored.version, 2);
    }
    let _ = shadow::get(Some(&first.stored), data, &address, 3, &limits);
    if let Ok(deleted) = shadow::delete(Some(&first.stored), b"", &address, 4, &limits) {
        let _ = shadow::apply_update(Some(&deleted.tombstone), data, 5, &limits);
    }
});
