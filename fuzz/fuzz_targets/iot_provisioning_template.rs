//! Feeds arbitrary text to the fleet provisioning template evaluator (as a template body and
//! as a RegisterThing request). Nothing may panic; an evaluated plan has a valid thing name.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use lichen_iot::provisioning::{self, CertificateInputs};
use lichen_iot::topic::validate_thing_name;

fuzz_target!(|data: &[u8]| {
    let _ = provisioning::parse_register_thing_request(data);
    let _ = provisioning::parse_create_from_csr_request(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cert = CertificateInputs {
        certificate_id: "fuzz-cert".into(),
        subject: BTreeMap::from([("CommonName".to_string(), "cn".to_string())]),
    };
    let params = BTreeMap::from([("ThingName".to_string(), "fuzz-thing".to_string())]);
    let _ = provisioning::validate_template(text);
    if let Ok(plan) = provisioning::evaluate_template(text, &params, &cert) {
        assert!(validate_thing_name(&plan.thing_name).is_ok());
    }
});
