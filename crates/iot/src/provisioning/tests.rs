use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// The Greengrass developer guide's example template, in shape.
fn gg_template() -> String {
    json!({
        "Parameters": {
            "ThingName": {"Type": "String"},
            "ThingGroupName": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"}
        },
        "Resources": {
            "MyThing": {
                "OverrideSettings": {"AttributePayload": "REPLACE", "ThingGroups": "REPLACE", "ThingTypeName": "REPLACE"},
                "Properties": {
                    "AttributePayload": {},
                    "ThingGroups": [{"Ref": "ThingGroupName"}],
                    "ThingName": {"Ref": "ThingName"}
                },
                "Type": "AWS::IoT::Thing"
            },
            "GGTokenExchangeRoleAliasPolicy": {
                "Properties": {"PolicyName": "GGTokenExchangeRoleAliasPolicy"},
                "Type": "AWS::IoT::Policy"
            },
            "MyDeviceCertificate": {
                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"},
                "Type": "AWS::IoT::Certificate"
            }
        }
    })
    .to_string()
}

fn cert() -> CertificateInputs {
    CertificateInputs {
        certificate_id: "abc123".into(),
        subject: BTreeMap::from([("CommonName".to_string(), "claim-cn".to_string())]),
    }
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn greengrass_example_template() {
    let plan = evaluate_template(
        &gg_template(),
        &params(&[("ThingName", "core-7"), ("ThingGroupName", "fleet")]),
        &cert(),
    )
    .unwrap();
    assert_eq!(plan.thing_name, "core-7");
    assert_eq!(plan.thing_groups, ["fleet"]);
    assert!(plan.attributes.is_empty());
    assert_eq!(plan.certificate_status, CertificateStatus::Active);
    assert_eq!(
        plan.policies,
        [PolicyRef::Named("GGTokenExchangeRoleAliasPolicy".into())]
    );
    assert_eq!(plan.overrides.thing_groups, OverrideAction::Replace);
    assert!(validate_template(&gg_template()).is_ok());
}

#[test]
fn missing_and_bad_parameters_are_named() {
    let err = evaluate_template(&gg_template(), &params(&[("ThingName", "core-7")]), &cert())
        .unwrap_err();
    assert_eq!(
        err,
        ProvisioningError::InvalidParameters {
            name: "ThingGroupName".into(),
            reason: "is required but was not provided".into()
        }
    );
    let payload = err.payload();
    assert_eq!(payload["statusCode"], 400);
    assert_eq!(payload["errorCode"], "InvalidParameters");
    assert!(
        payload["errorMessage"]
            .as_str()
            .unwrap()
            .contains("ThingGroupName")
    );

    let err = evaluate_template(
        &gg_template(),
        &params(&[("ThingName", "bad name!"), ("ThingGroupName", "g")]),
        &cert(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProvisioningError::InvalidParameters { name, .. } if name == "ThingName"),
        "{err}"
    );

    let err = evaluate_template(
        &gg_template(),
        &params(&[
            ("ThingName", "a"),
            ("ThingGroupName", "g"),
            ("AWS::IoT::Certificate::Id", "forged"),
        ]),
        &cert(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ProvisioningError::InvalidParameters { .. }),
        "the certificate id comes from the certificate"
    );
}

#[test]
fn functions_conditions_defaults_and_device_configuration() {
    let body = json!({
        "Parameters": {
            "SerialNumber": {"Type": "String"},
            "Env": {"Type": "String", "Default": "prod"},
            "Slots": {"Type": "Number", "Default": 4},
            "Tags": {"Type": "String", "Default": "a,b,c"}
        },
        "Mappings": {"EnvGroups": {"prod": {"Group": "fleet-prod"}, "dev": {"Group": "fleet-dev"}}},
        "Conditions": {
            "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
            "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]},
            "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Or": [true, {"Condition": "IsDev"}]}]}
        },
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Fn::Join": ["-", ["gg", {"Ref": "SerialNumber"}]]},
                    "AttributePayload": {"slots": {"Ref": "Slots"}, "env": {"Fn::If": ["IsProd", "P", "D"]}, "tag": {"Fn::Select": [1, {"Fn::Split": [",", {"Ref": "Tags"}]}]}},
                    "ThingGroups": [{"Fn::FindInMap": ["EnvGroups", {"Ref": "Env"}, "Group"]}]
                }
            },
            "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "INACTIVE"}},
            "devPolicy": {"Type": "AWS::IoT::Policy", "Condition": "IsDev", "Properties": {"PolicyName": "dev"}},
            "prodPolicy": {"Type": "AWS::IoT::Policy", "Condition": "Both", "Properties": {"PolicyDocument": "{\"Version\":\"2012-10-17\"}"}}
        },
        "DeviceConfiguration": {"FallbackUrl": {"Fn::Sub": "https://example/${SerialNumber}/${AWS::IoT::Certificate::CommonName}"}, "Env": {"Ref": "Env"}}
    })
    .to_string();
    let plan = evaluate_template(&body, &params(&[("SerialNumber", "42")]), &cert()).unwrap();
    assert_eq!(plan.thing_name, "gg-42");
    assert_eq!(plan.attributes["slots"], "4");
    assert_eq!(plan.attributes["env"], "P");
    assert_eq!(plan.attributes["tag"], "b");
    assert_eq!(plan.thing_groups, ["fleet-prod"]);
    assert_eq!(plan.certificate_status, CertificateStatus::Inactive);
    assert_eq!(
        plan.policies,
        [PolicyRef::Document(json!({"Version": "2012-10-17"}))]
    );
    assert_eq!(
        plan.device_configuration["FallbackUrl"],
        "https://example/42/claim-cn"
    );
    assert_eq!(plan.device_configuration["Env"], "prod");

    let dev = evaluate_template(
        &body,
        &params(&[("SerialNumber", "9"), ("Env", "dev")]),
        &cert(),
    )
    .unwrap();
    assert_eq!(dev.thing_groups, ["fleet-dev"]);
    assert_eq!(dev.policies, [PolicyRef::Named("dev".into())]);
    assert_eq!(dev.attributes["env"], "D");

    let err = evaluate_template(
        &body,
        &params(&[("SerialNumber", "9"), ("Slots", "many")]),
        &cert(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ProvisioningError::InvalidParameters { name, .. } if name == "Slots"),
        "{err}"
    );
    let err = evaluate_template(
        &body,
        &params(&[("SerialNumber", "9"), ("Env", "qa")]),
        &cert(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ProvisioningError::InvalidParameters { .. }),
        "no mapping for qa"
    );
    assert!(validate_template(&body).is_ok());
}

#[test]
fn template_errors() {
    let with = |resources: serde_json::Value| {
        json!({"Parameters": {"N": {"Type": "String"}}, "Resources": resources}).to_string()
    };
    let thing = json!({"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "N"}}});
    let certificate = json!({"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}});
    let cases = [
        ("no thing", with(json!({"c": certificate}))),
        ("no certificate", with(json!({"t": thing}))),
        ("two things", with(json!({"t": thing, "u": thing, "c": certificate}))),
        ("unknown type", with(json!({"t": thing, "c": certificate, "x": {"Type": "AWS::S3::Bucket"}}))),
        ("base64", with(json!({"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Base64": "x"}}}, "c": certificate}))),
        ("bad ref", with(json!({"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "Nope"}}}, "c": certificate}))),
        ("wrong cert id", with(json!({"t": thing, "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "other"}}}))),
        ("condition loop", json!({
            "Parameters": {"N": {"Type": "String"}},
            "Conditions": {"A": {"Condition": "B"}, "B": {"Condition": "A"}},
            "Resources": {"t": thing, "c": certificate, "p": {"Type": "AWS::IoT::Policy", "Condition": "A", "Properties": {"PolicyName": "p"}}}
        }).to_string()),
        ("not json", "{".to_string()),
        ("too big", format!("{{\"Description\": \"{}\"}}", "x".repeat(MAX_TEMPLATE_BYTES))),
    ];
    for (what, body) in cases {
        let err = evaluate_template(&body, &params(&[("N", "t1")]), &cert()).unwrap_err();
        assert!(
            matches!(err, ProvisioningError::InvalidTemplate(_)),
            "{what}: {err}"
        );
        assert_eq!(err.payload()["statusCode"], 500, "{what}");
        assert!(
            !err.payload()["errorMessage"]
                .as_str()
                .unwrap()
                .contains("Nope"),
            "template details stay out of the device's answer"
        );
        assert!(validate_template(&body).is_err(), "{what}");
    }
}

#[test]
fn request_payloads() {
    let req = parse_register_thing_request(
        br#"{"certificateOwnershipToken":"tok","parameters":{"ThingName":"x"}}"#,
    )
    .unwrap();
    assert_eq!(req.certificate_ownership_token, "tok");
    assert_eq!(req.parameters["ThingName"], "x");
    assert!(matches!(
        parse_register_thing_request(br#"{"parameters":{}}"#),
        Err(ProvisioningError::InvalidRequest(_))
    ));
    assert!(matches!(
        parse_register_thing_request(br#"{"certificateOwnershipToken":"t","parameters":{"N":1}}"#),
        Err(ProvisioningError::InvalidParameters { name, .. }) if name == "N"
    ));
    let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_PARAMETERS)
        .map(|i| (format!("p{i}"), json!("v")))
        .collect();
    let body = json!({"certificateOwnershipToken": "t", "parameters": many}).to_string();
    assert!(parse_register_thing_request(body.as_bytes()).is_err());

    let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    let body = json!({"certificateSigningRequest": csr}).to_string();
    assert_eq!(
        parse_create_from_csr_request(body.as_bytes())
            .unwrap()
            .certificate_signing_request,
        csr
    );
    assert!(parse_create_from_csr_request(br#"{"certificateSigningRequest":"hello"}"#).is_err());
    assert!(parse_create_from_csr_request(b"{}").is_err());
    assert!(parse_create_keys_request(b"{}").is_ok());
    assert!(parse_create_keys_request(b"").is_ok());
    assert!(parse_create_keys_request(b"[]").is_err());

    let resp = RegisterThingResponse {
        device_configuration: BTreeMap::from([("k".to_string(), "v".to_string())]),
        thing_name: "t".into(),
    };
    assert_eq!(
        serde_json::to_value(&resp).unwrap(),
        json!({"deviceConfiguration": {"k": "v"}, "thingName": "t"})
    );
    let keys = CreateKeysAndCertificateResponse {
        certificate_id: "id".into(),
        certificate_pem: "pem".into(),
        private_key: "key".into(),
        certificate_ownership_token: "tok".into(),
    };
    assert_eq!(
        serde_json::to_value(&keys).unwrap(),
        json!({"certificateId": "id", "certificatePem": "pem", "privateKey": "key", "certificateOwnershipToken": "tok"})
    );
}
