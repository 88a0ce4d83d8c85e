//! The codec: definitions round-trip, definite and indefinite CBOR, bad input refused with
//! the field named (never a panic), frames split back as encoded, the request id found in
//! the prefix of an oversized append.

use ciborium::value::Value;
use lichen_streams::protocol::cbor::{self, decode_map, request_id_in_prefix};
use lichen_streams::protocol::frame::split_frame;
use lichen_streams::protocol::*;
use proptest::prelude::*;

fn encode_map(pairs: Vec<(&str, Value)>) -> Vec<u8> {
    cbor::encode(&Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    ))
}

#[test]
fn indefinite_length_maps_as_the_java_sdk_sends() {
    // {_ "requestId": "r1", "name": "S1"} with an indefinite-length map (Jackson CBOR).
    let mut b = vec![0xbf];
    b.extend([0x69]);
    b.extend(b"requestId");
    b.extend([0x62]);
    b.extend(b"r1");
    b.extend([0x64]);
    b.extend(b"name");
    b.extend([0x62]);
    b.extend(b"S1");
    b.push(0xff);
    let (id, req) = parse_request(Operation::DescribeMessageStream as u8, &b).unwrap();
    assert_eq!(id, "r1");
    assert_eq!(req, Request::Describe { name: "S1".into() });
    // Java also sends authToken "" in its connect request.
    let mut c = vec![0xbf];
    for (k, v) in [
        ("requestId", "c"),
        ("protocolVersion", "1.1.0"),
        ("authToken", ""),
    ] {
        c.push(0x60 + k.len() as u8);
        c.extend(k.as_bytes());
        c.push(0x60 + v.len() as u8);
        c.extend(v.as_bytes());
    }
    c.push(0xff);
    let conn = parse_connect(&c).unwrap();
    assert_eq!(conn.auth_token.as_deref(), Some(""));
}

#[test]
fn refusals_name_the_field() {
    let b = encode_map(vec![
        ("requestId", Value::Text("r".into())),
        (
            "definition",
            cbor::map(vec![
                ("name", Some(Value::Text("S".into()))),
                ("strategyOnFull", Some(cbor::int(7))),
            ]),
        ),
    ]);
    let r = parse_request(Operation::CreateMessageStream as u8, &b).unwrap_err();
    assert_eq!(r.status, Status::InvalidRequest);
    assert_eq!(r.request_id.as_deref(), Some("r"));
    assert!(
        r.message.contains("definition.strategyOnFull"),
        "{}",
        r.message
    );
    let b = encode_map(vec![
        ("requestId", Value::Text("r".into())),
        ("name", Value::Text("a/b".into())),
    ]);
    let r = parse_request(Operation::DeleteMessageStream as u8, &b).unwrap_err();
    assert!(r.message.contains("name"), "{}", r.message);
    let r = parse_request(
        42,
        &encode_map(vec![("requestId", Value::Text("q".into()))]),
    )
    .unwrap_err();
    assert_eq!(r.status, Status::UnknownOperation);
    let b = encode_map(vec![
        ("requestId", Value::Text("r".into())),
        ("name", Value::Text("S".into())),
        ("payload", Value::Text("not bytes".into())),
    ]);
    let r = parse_request(Operation::AppendMessage as u8, &b).unwrap_err();
    assert!(r.message.contains("payload"), "{}", r.message);
}

#[test]
fn exports_are_sanitized() {
    let b = encode_map(vec![
        ("requestId", Value::Text("r".into())),
        (
            "definition",
            cbor::map(vec![
                ("name", Some(Value::Text("S".into()))),
                ("strategyOnFull", Some(cbor::int(1))),
                (
                    "exportDefinition",
                    Some(cbor::map(vec![
                        (
                            "http",
                            Some(Value::Array(vec![cbor::map(vec![
                                ("identifier", Some(Value::Text("h".into()))),
                                ("uri", Some(Value::Text("http://x/".into()))),
                                ("exportFormat", Some(cbor::int(1))),
                                ("surprise", Some(cbor::int(99))),
                            ])])),
                        ),
                        (
                            "IotSitewise",
                            Some(Value::Array(vec![cbor::map(vec![(
                                "identifier",
                                Some(Value::Text("sw".into())),
                            )])])),
                        ),
                    ])),
                ),
            ]),
        ),
    ]);
    let (_, Request::Create(d)) = parse_request(Operation::CreateMessageStream as u8, &b).unwrap()
    else {
        panic!("not a create")
    };
    assert_eq!(d.exports.len(), 2);
    assert_eq!(d.exports[0].text_field("uri"), Some("http://x/"));
    assert_eq!(d.exports[0].int_field("surprise"), None);
    assert_eq!(d.exports[1].kind, ExportKind::IotSiteWise);
}

#[test]
fn request_id_from_an_oversized_prefix() {
    let b = encode_map(vec![
        ("requestId", Value::Text("big-1".into())),
        ("name", Value::Text("S".into())),
        ("payload", Value::Bytes(vec![7u8; 100_000])),
    ]);
    assert_eq!(request_id_in_prefix(&b[..64]).as_deref(), Some("big-1"));
    let b = encode_map(vec![
        ("name", Value::Text("S".into())),
        ("requestId", Value::Text("late".into())),
    ]);
    assert_eq!(request_id_in_prefix(&b).as_deref(), Some("late"));
    assert_eq!(request_id_in_prefix(&[0xa1, 0x62]), None);
}

fn arb_definition() -> impl Strategy<Value = StreamDefinition> {
    (
        "[a-zA-Z0-9 ,._-]{1,40}",
        1024i64..i64::MAX,
        1024i64..=i32::MAX as i64,
        proptest::option::of(60_000i64..9_223_372_036_854),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, max, seg, ttl, over, mem, flush)| StreamDefinition {
            name,
            max_size: max,
            stream_segment_size: seg,
            time_to_live_millis: ttl,
            strategy_on_full: if over {
                StrategyOnFull::OverwriteOldestData
            } else {
                StrategyOnFull::RejectNewData
            },
            persistence: if mem {
                Persistence::Memory
            } else {
                Persistence::File
            },
            flush_on_write: flush,
            exports: Vec::new(),
        })
}

proptest! {
    #[test]
    fn definitions_round_trip(d in arb_definition()) {
        let bytes = cbor::encode(&d.to_value());
        let back = StreamDefinition::from_map(&decode_map(&bytes).unwrap()).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn frames_split_as_encoded(op in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..2000), extra in proptest::collection::vec(any::<u8>(), 0..10)) {
        let mut f = encode_frame(op, &payload);
        let n = f.len();
        f.extend(&extra);
        let (h, p, used) = split_frame(&f).unwrap();
        prop_assert_eq!(h.operation, op);
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(used, n);
    }

    #[test]
    fn garbage_never_panics(op in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_request(op, &bytes);
        let _ = parse_connect(&bytes);
        let _ = split_frame(&bytes);
        let _ = request_id_in_prefix(&bytes);
    }

    #[test]
    fn read_options_defaults(min in 1u64..100, max in proptest::option::of(1u64..100)) {
        let mut opts = vec![("minMessageCount", Some(cbor::int(min as i64)))];
        if let Some(m) = max { opts.push(("maxMessageCount", Some(cbor::int(m as i64)))); }
        let b = encode_map(vec![
            ("requestId", Value::Text("r".into())),
            ("streamName", Value::Text("S".into())),
            ("readMessagesOptions", cbor::map(opts)),
        ]);
        match parse_request(Operation::ReadMessages as u8, &b) {
            Ok((_, Request::Read { options, .. })) => {
                prop_assert_eq!(options.max_count, max.unwrap_or(min));
                prop_assert!(options.min_count <= options.max_count);
            }
            Ok(_) => prop_assert!(false),
            Err(r) => prop_assert!(max.is_some_and(|m| m < min), "{}", r.message),
        }
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // An array claiming 2^64-1 items, a byte string claiming 2^32: refused, not allocated.
    for b in [
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![
            0xa1, 0x69, b'r', b'e', b'q', b'u', b'e', b's', b't', b'I', b'd', 0x5a, 0xff, 0xff,
            0xff, 0xff,
        ],
    ] {
        assert!(decode_map(&b).is_err());
    }
}
