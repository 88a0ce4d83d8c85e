//! Property tests: encode→decode is the identity for every packet type and both protocol
//! versions, and decoding arbitrary bytes never panics.

use std::sync::Arc;

use bytes::Bytes;
use lichen_mqtt::properties::MAX_SUBSCRIPTION_IDS;
use lichen_mqtt::*;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/é _-]{0,12}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Properties valid in `ctx`, built from a list of (slot, number, text, bytes) draws.
fn props(ctx: PropContext) -> impl Strategy<Value = Properties> {
    prop::collection::vec((0u8..27, any::<u32>(), text(), bytes()), 0..8).prop_map(move |draws| {
        let mut p = Properties::default();
        for (slot, n, s, b) in draws {
            let id = [
                0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
                0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
            ][slot as usize];
            if !ctx.allows(id) {
                continue;
            }
            let flag = (n & 1) as u8;
            let nz16 = (n as u16).max(1);
            let nz32 = n.max(1);
            match id {
                0x01 => p.payload_format_indicator = Some(flag),
                0x02 => p.message_expiry_interval = Some(n),
                0x03 => p.content_type = Some(s),
                0x08 => p.response_topic = Some(format!("r{}", s.replace(['+', '#'], ""))),
                0x09 => p.correlation_data = Some(b),
                0x0B => {
                    if ctx == PropContext::Publish || p.subscription_identifiers.is_empty() {
                        p.subscription_identifiers.push(n % 268_435_455 + 1)
                    }
                }
                0x11 => p.session_expiry_interval = Some(n),
                0x12 => p.assigned_client_identifier = Some(s),
                0x13 => p.server_keep_alive = Some(n as u16),
                0x15 => p.authentication_method = Some(s),
                0x16 => p.authentication_data = Some(b),
                0x17 => p.request_problem_information = Some(flag),
                0x18 => p.will_delay_interval = Some(n),
                0x19 => p.request_response_information = Some(flag),
                0x1A => p.response_information = Some(s),
                0x1C => p.server_reference = Some(s),
                0x1F => p.reason_string = Some(s),
                0x21 => p.receive_maximum = Some(nz16),
                0x22 => p.topic_alias_maximum = Some(n as u16),
                0x23 => p.topic_alias = Some(nz16),
                0x24 => p.maximum_qos = Some(flag),
                0x25 => p.retain_available = Some(flag),
                0x26 => p.user_properties.push((s.clone(), s)),
                0x27 => p.maximum_packet_size = Some(nz32),
                0x28 => p.wildcard_subscription_available = Some(flag),
                0x29 => p.subscription_identifier_available = Some(flag),
                _ => p.shared_subscription_available = Some(flag),
            }
        }
        p
    })
}

fn maybe_props(v5: bool, ctx: PropContext) -> BoxedStrategy<Properties> {
    if v5 {
        props(ctx).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn reason_in(ctx: ReasonContext, v5: bool) -> BoxedStrategy<ReasonCode> {
    let codes: Vec<ReasonCode> = ALL_REASON_CODES
        .iter()
        .copied()
        .filter(|c| c.allowed_in(ctx))
        .filter(|c| {
            v5 || match ctx {
                ReasonContext::ConnAck => {
                    ReasonCode::from_v3_connack(c.to_v3_connack()) == Some(*c)
                }
                ReasonContext::SubAck => {
                    matches!(
                        c,
                        ReasonCode::Success
                            | ReasonCode::GrantedQos1
                            | ReasonCode::GrantedQos2
                            | ReasonCode::UnspecifiedError
                    )
                }
                _ => *c == ReasonCode::Success,
            }
        })
        .collect();
    prop::sample::select(codes).boxed()
}

fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let v5 = protocol.is_v5();
    let pid = 1u16..;
    let connect = (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of((
            text(),
            bytes(),
            qos(),
            any::<bool>(),
            maybe_props(v5, PropContext::Will),
        )),
        prop::option::of(text()),
        prop::option::of(bytes()),
        maybe_props(v5, PropContext::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                let password = if !v5 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, properties)| Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                    properties,
                }))
            },
        );
    let connack = (
        any::<bool>(),
        reason_in(ReasonContext::ConnAck, v5),
        maybe_props(v5, PropContext::ConnAck),
    )
        .prop_map(|(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        });
    let publish = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        text(),
        pid.clone(),
        maybe_props(v5, PropContext::Publish),
        bytes(),
    )
        .prop_map(
            |(dup, qos, retain, topic, packet_id, properties, payload)| {
                let q0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !q0,
                    qos,
                    retain,
                    topic: Arc::from(topic),
                    packet_id: if q0 { 0 } else { packet_id },
                    properties,
                    payload,
                })
            },
        );
    let resp = |ctx: ReasonContext| {
        (
            1u16..,
            reason_in(ctx, v5),
            maybe_props(v5, PropContext::PubResp),
        )
            .prop_map(|(packet_id, reason_code, properties)| PubResp {
                packet_id,
                reason_code,
                properties,
            })
    };
    let sub_opts =
        (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: match rh {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            }
        });
    let subscribe = (
        pid.clone(),
        prop::collection::vec((text(), sub_opts), 1..4),
        maybe_props(v5, PropContext::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let suback = (
        pid.clone(),
        prop::collection::vec(reason_in(ReasonContext::SubAck, v5), 1..4),
        maybe_props(v5, PropContext::SubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        });
    let unsubscribe = (
        pid.clone(),
        prop::collection::vec(text(), 1..4),
        maybe_props(v5, PropContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let unsuback = (
        pid,
        prop::collection::vec(reason_in(ReasonContext::UnsubAck, v5), 1..4),
        maybe_props(v5, PropContext::UnsubAck),
    )
        .prop_map(move |(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes: if v5 { codes } else { vec![] },
                properties,
            })
        });
    let disconnect = (
        reason_in(ReasonContext::Disconnect, v5),
        maybe_props(v5, PropContext::Disconnect),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        });
    let mut options: Vec<BoxedStrategy<Packet>> = vec![
        connect.boxed(),
        connack.boxed(),
        publish.boxed(),
        resp(ReasonContext::PubAck).prop_map(Packet::PubAck).boxed(),
        resp(ReasonContext::PubRec).prop_map(Packet::PubRec).boxed(),
        resp(ReasonContext::PubRel).prop_map(Packet::PubRel).boxed(),
        resp(ReasonContext::PubComp)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        let auth = (
            reason_in(ReasonContext::Auth, true),
            props(PropContext::Auth),
        )
            .prop_map(|(reason_code, properties)| {
                Packet::Auth(Auth {
                    reason_code,
                    properties,
                })
            });
        options.push(auth.boxed());
    }
    prop::strategy::Union::new(options).boxed()
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_decode_identity((proto, p) in protocol().prop_flat_map(|pr| (Just(pr), packet(pr)))) {
        let bytes = to_vec(&p, proto).expect("generated packets encode");
        let (decoded, used) = decode(&bytes, proto, MAX_PACKET_SIZE)
            .expect("decodes")
            .expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, p);
        // Every strict prefix is incomplete, never an error or a panic.
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut], proto, MAX_PACKET_SIZE), Ok(None));
        }
    }

    #[test]
    fn decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..256), v5 in any::<bool>()) {
        let proto = if v5 { Protocol::V5 } else { Protocol::V311 };
        let _ = decode(&data, proto, 1 << 20);
    }

    #[test]
    fn mutated_packets_never_panic(
        (proto, p) in protocol().prop_flat_map(|pr| (Just(pr), packet(pr))),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = to_vec(&p, proto).expect("encodes");
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        let _ = decode(&bytes, proto, MAX_PACKET_SIZE);
    }
}

#[test]
fn oversized_packet_refused_from_header_alone() {
    // PUBLISH announcing 1 MB, with only the header present.
    let buf = [0x30, 0x80, 0x80, 0x40];
    assert_eq!(
        decode(&buf, Protocol::V5, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 1_048_580,
            max: 1024
        })
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 1, max: 0 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
}

#[test]
fn known_v311_connect_bytes() {
    // CONNECT, MQTT level 4, clean session, keepalive 60, client id "abc".
    let bytes = [
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, b'a',
        b'b', b'c',
    ];
    let (p, n) = decode(&bytes, Protocol::V311, 100).unwrap().unwrap();
    assert_eq!(n, bytes.len());
    let Packet::Connect(c) = p else {
        panic!("not a connect")
    };
    assert_eq!(c.protocol, Protocol::V311);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "abc");
    assert_eq!(to_vec(&Packet::Connect(c), Protocol::V311).unwrap(), bytes);
}

#[test]
fn unsupported_protocol_level() {
    let bytes = [
        0x10, 0x0C, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
    ];
    let err = decode(&bytes, Protocol::V311, 100).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
}

#[test]
fn malformed_cases() {
    let v5 = Protocol::V5;
    // Reserved CONNECT flag.
    let mut c = to_vec(
        &Packet::Connect(Box::new(Connect {
            protocol: v5,
            clean_start: true,
            keep_alive: 0,
            client_id: "x".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })),
        v5,
    )
    .unwrap();
    c[9] |= 1;
    assert!(decode(&c, v5, 100).is_err());
    // SUBSCRIBE with wrong fixed header flags.
    assert!(matches!(
        decode(&[0x80, 0x06, 0, 1, 0, 1, b'a', 0], Protocol::V311, 100),
        Err(DecodeError::InvalidFlags { .. })
    ));
    // QoS 3 PUBLISH.
    assert_eq!(
        decode(&[0x36, 0x03, 0, 1, b'a'], v5, 100),
        Err(DecodeError::InvalidQos)
    );
    // Packet id 0 on QoS 1.
    assert!(decode(&[0x32, 0x05, 0, 1, b'a', 0, 0], Protocol::V311, 100).is_err());
    // Duplicate payload format indicator → protocol error.
    let err = decode(&[0x30, 0x08, 0, 1, b'a', 4, 1, 0, 1, 0], v5, 100).unwrap_err();
    assert_eq!(err, DecodeError::DuplicateProperty(1));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    // Session expiry (CONNECT only) in a PUBLISH.
    let err = decode(&[0x30, 0x09, 0, 1, b'a', 5, 0x11, 0, 0, 0, 1], v5, 100).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::PropertyNotAllowed { id: 0x11, .. }
    ));
    // Null character in a topic.
    assert_eq!(
        decode(&[0x30, 0x04, 0, 2, b'a', 0], Protocol::V311, 100),
        Err(DecodeError::NullCharacter)
    );
    // String length larger than the packet.
    assert!(matches!(
        decode(&[0x30, 0x03, 0xFF, 0xFF, b'a'], Protocol::V311, 100),
        Err(DecodeError::Truncated(_))
    ));
    // AUTH under 3.1.1 is not a packet type.
    assert_eq!(
        decode(&[0xF0, 0x00], Protocol::V311, 100),
        Err(DecodeError::InvalidPacketType(15))
    );
    // Reason code not allowed in a PUBACK.
    assert!(matches!(
        decode(&[0x40, 0x03, 0, 1, 0x8E], v5, 100),
        Err(DecodeError::InvalidReasonCode { .. })
    ));
    // Too many subscription identifiers is bounded.
    let mut body = vec![0, 1, b'a'];
    let mut props = Vec::new();
    for _ in 0..=MAX_SUBSCRIPTION_IDS {
        props.extend_from_slice(&[0x0B, 1]);
    }
    lichen_mqtt::wire::write_var_int(&mut body, props.len() as u32).unwrap();
    body.extend_from_slice(&props);
    let mut pkt = vec![0x30];
    lichen_mqtt::wire::write_var_int(&mut pkt, body.len() as u32).unwrap();
    pkt.extend_from_slice(&body);
    assert!(decode(&pkt, v5, 1 << 20).is_err());
}

#[test]
fn short_v5_acks() {
    let v5 = Protocol::V5;
    let (p, _) = decode(&[0x40, 0x02, 0, 7], v5, 100).unwrap().unwrap();
    assert_eq!(p, Packet::PubAck(PubResp::new(7, ReasonCode::Success)));
    let (p, _) = decode(&[0x50, 0x03, 0, 7, 0x10], v5, 100).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::PubRec(PubResp::new(7, ReasonCode::NoMatchingSubscribers))
    );
    let (p, _) = decode(&[0xE0, 0x00], v5, 100).unwrap().unwrap();
    assert_eq!(
        p,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::default()
        })
    );
    let (p, _) = decode(&[0xE0, 0x01, 0x04], v5, 100).unwrap().unwrap();
    assert!(matches!(
        p,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWill,
            ..
        })
    ));
}
