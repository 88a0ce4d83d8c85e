//! Reserved topic parsing and building.

use lichen_iot::topic::*;

fn roundtrip(topic: &str) -> ReservedTopic {
    let parsed = ReservedTopic::parse(topic).unwrap_or_else(|e| panic!("{topic}: {e}"));
    assert_eq!(parsed.to_string(), topic);
    parsed
}

#[test]
fn shadow_topics() {
    let ReservedTopic::Shadow(t) = roundtrip("$aws/things/dev-1/shadow/update") else {
        panic!()
    };
    assert_eq!(
        (t.thing.as_str(), t.shadow, t.op, t.reply),
        ("dev-1", None, ShadowOp::Update, None)
    );
    let ReservedTopic::Shadow(t) = roundtrip("$aws/things/a:b_c/shadow/name/cfg/update/documents")
    else {
        panic!()
    };
    assert_eq!(t.shadow.as_deref(), Some("cfg"));
    assert_eq!(t.reply, Some(ShadowReply::Documents));
    for ok in [
        "$aws/things/t/shadow/get/accepted",
        "$aws/things/t/shadow/delete/rejected",
        "$aws/things/t/shadow/update/delta",
        "$aws/things/t/shadow/name/AWSManagedGreengrassV2Deployment/get/accepted",
    ] {
        roundtrip(ok);
    }
    for bad in [
        "$aws/things/t/shadow",
        "$aws/things/t/shadow/get/delta",
        "$aws/things/t/shadow/delete/documents",
        "$aws/things/t/shadow/put",
        "$aws/things/t/shadow/name/n",
        "$aws/things/t/shadow/update/accepted/x",
        "$aws/things//shadow/get",
        "$aws/things/t/shadow/name//get",
    ] {
        assert!(ShadowTopic::parse(bad).is_err(), "{bad}");
    }
    let addr = ShadowAddress::new("t", Some("s")).unwrap();
    assert_eq!(addr.prefix(), "$aws/things/t/shadow/name/s");
    let req = ShadowTopic::request(&addr, ShadowOp::Get);
    assert_eq!(
        req.with_reply(ShadowReply::Accepted).to_string(),
        "$aws/things/t/shadow/name/s/get/accepted"
    );
}

#[test]
fn name_rules() {
    assert!(validate_thing_name(&"a".repeat(128)).is_ok());
    assert!(validate_thing_name(&"a".repeat(129)).is_err());
    assert!(validate_thing_name("").is_err());
    assert!(validate_thing_name("a b").is_err());
    assert!(validate_thing_name("a+").is_err());
    assert!(validate_thing_name("Az09:_-").is_ok());
    assert!(validate_shadow_name(&"s".repeat(64)).is_ok());
    assert!(validate_shadow_name(&"s".repeat(65)).is_err());
    assert!(validate_job_id("job_1-x").is_ok());
    assert!(
        validate_job_id("job:1").is_err(),
        "':' is not allowed in job ids"
    );
    assert!(validate_job_id(&"j".repeat(65)).is_err());
    assert!(validate_template_name(&"t".repeat(36)).is_ok());
    assert!(validate_template_name(&"t".repeat(37)).is_err());
    let e = ShadowTopic::parse("$aws/things/bad$name/shadow/get").unwrap_err();
    assert!(e.to_string().contains("thing name"), "{e}");
    let long = format!("$aws/things/{}/shadow/get", "a".repeat(300));
    assert!(matches!(
        ReservedTopic::parse(&long),
        Err(TopicError::TooLong { .. })
    ));
}

#[test]
fn jobs_topics() {
    let cases = [
        (
            "$aws/things/t/jobs/get",
            JobsRequest::GetPending,
            None,
            None,
        ),
        (
            "$aws/things/t/jobs/get/accepted",
            JobsRequest::GetPending,
            None,
            Some(Outcome::Accepted),
        ),
        (
            "$aws/things/t/jobs/start-next/rejected",
            JobsRequest::StartNext,
            None,
            Some(Outcome::Rejected),
        ),
        (
            "$aws/things/t/jobs/$next/get",
            JobsRequest::DescribeNext,
            None,
            None,
        ),
        ("$aws/things/t/jobs/notify", JobsRequest::Notify, None, None),
        (
            "$aws/things/t/jobs/notify-next",
            JobsRequest::NotifyNext,
            None,
            None,
        ),
        (
            "$aws/things/t/jobs/j-1/get/accepted",
            JobsRequest::Describe {
                job_id: "j-1".into(),
            },
            None,
            Some(Outcome::Accepted),
        ),
        (
            "$aws/things/t/jobs/j-1/update",
            JobsRequest::Update {
                job_id: "j-1".into(),
            },
            None,
            None,
        ),
        (
            "$aws/things/t/jobs/notify-namespace-aws-gg-deployment",
            JobsRequest::Notify,
            Some("aws-gg-deployment"),
            None,
        ),
        (
            "$aws/things/t/jobs/notify-next-namespace-aws-gg-deployment",
            JobsRequest::NotifyNext,
            Some("aws-gg-deployment"),
            None,
        ),
        (
            "$aws/things/t/jobs/$next/namespace-aws-gg-deployment/get/accepted",
            JobsRequest::DescribeNext,
            Some("aws-gg-deployment"),
            Some(Outcome::Accepted),
        ),
        (
            "$aws/things/t/jobs/d-1/namespace-aws-gg-deployment/update/rejected",
            JobsRequest::Update {
                job_id: "d-1".into(),
            },
            Some("aws-gg-deployment"),
            Some(Outcome::Rejected),
        ),
    ];
    for (topic, request, ns, reply) in cases {
        let ReservedTopic::Jobs(t) = roundtrip(topic) else {
            panic!("{topic}")
        };
        assert_eq!(t.thing, "t");
        assert_eq!(t.request, request, "{topic}");
        assert_eq!(t.namespace.as_deref(), ns, "{topic}");
        assert_eq!(t.reply, reply, "{topic}");
    }
    for bad in [
        "$aws/things/t/jobs",
        "$aws/things/t/jobs/",
        "$aws/things/t/jobs/notify/accepted",
        "$aws/things/t/jobs/notify-x",
        "$aws/things/t/jobs/j/delete",
        "$aws/things/t/jobs/$next/update",
        "$aws/things/t/jobs/j:1/get",
        "$aws/things/t/jobs/j/ns-x/get",
        "$aws/things/t/jobs/j/get/accepted/more",
    ] {
        assert!(JobsTopic::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn provisioning_topics() {
    for topic in [
        "$aws/certificates/create/json",
        "$aws/certificates/create/json/accepted",
        "$aws/certificates/create-from-csr/json/rejected",
        "$aws/provisioning-templates/GGTemplate/provision/json",
        "$aws/provisioning-templates/GGTemplate/provision/json/accepted",
    ] {
        assert!(matches!(roundtrip(topic), ReservedTopic::Provisioning(_)));
    }
    let ReservedTopic::Provisioning(t) =
        roundtrip("$aws/provisioning-templates/my_t-1/provision/json")
    else {
        panic!()
    };
    assert_eq!(
        t.request,
        ProvisioningRequest::RegisterThing {
            template: "my_t-1".into()
        }
    );
    for bad in [
        "$aws/certificates/create/cbor",
        "$aws/certificates/create/json/maybe",
        "$aws/provisioning-templates/bad.name/provision/json",
        "$aws/provisioning-templates/t/provision",
    ] {
        assert!(ProvisioningTopic::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        ReservedTopic::parse("a/b"),
        Err(TopicError::NotReserved { .. })
    ));
    assert!(matches!(
        ReservedTopic::parse("$aws/things/t/other"),
        Err(TopicError::NotReserved { .. })
    ));
}
