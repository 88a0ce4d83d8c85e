//! What a peer can send the cloud API, chosen by the first byte: a request body decoded into
//! each request type and validated as the handlers do, a provisioning template body, or a
//! cloud URL given to the client. Nothing may panic; whatever validates obeys the rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_cloud::api::body::decode_json;
use lichen_cloud::api::{certificates, groups, templates, things, tokens};
use lichen_cloud::validate;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => {
            if let Ok(t) = decode_json::<things::CreateThing>(rest)
                && validate::name("thingName", &t.name).is_ok()
            {
                assert!(!t.name.contains(['/', '+', '#']));
                let _ = validate::attributes(&t.attributes);
            }
        }
        1 => {
            if let Ok(u) = decode_json::<things::UpdateAttributes>(rest) {
                for (k, v) in &u.attributes {
                    let _ = validate::attribute_name(k);
                    if let Some(v) = v {
                        let _ = validate::attribute_value(k, v);
                    }
                }
            }
            let _ = decode_json::<things::UpdateConnectivity>(rest);
        }
        2 => {
            let _ = decode_json::<groups::CreateThingGroup>(rest);
            let _ = decode_json::<tokens::CreateAdminToken>(rest);
        }
        3 => {
            let _ = decode_json::<certificates::IssueCertificate>(rest);
        }
        4 => {
            if let Ok(t) = decode_json::<templates::CreateProvisioningTemplate>(rest) {
                let _ = validate::template_name(&t.name);
                let _ = templates::check_template_body(&t.body);
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(rest)
                && let Ok((host, port)) = lichen_cloud::client::parse_url(s)
            {
                assert!(!host.is_empty() && port != 0);
            }
        }
    }
});
