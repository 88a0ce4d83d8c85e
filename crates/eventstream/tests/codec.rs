//! Codec properties: round trips, bounds, and no panic on arbitrary input.

use bytes::{Bytes, BytesMut};
use lichen_eventstream::frame::{decode_frame, parse_prelude};
use lichen_eventstream::{
    DecodeError, Decoder, Frame, Header, HeaderValue, MessageType, RpcMessage, flags, headers,
};
use proptest::prelude::*;

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<bool>().prop_map(HeaderValue::Bool),
        any::<i8>().prop_map(HeaderValue::Byte),
        any::<i16>().prop_map(HeaderValue::Int16),
        any::<i32>().prop_map(HeaderValue::Int32),
        any::<i64>().prop_map(HeaderValue::Int64),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|v| HeaderValue::ByteBuf(Bytes::from(v))),
        ".{0,40}".prop_map(HeaderValue::String),
        any::<i64>().prop_map(HeaderValue::Timestamp),
        any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        proptest::collection::vec(("[a-z:-]{1,20}", header_value()), 0..8),
        proptest::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(hs, payload)| Frame {
            headers: hs.into_iter().map(|(n, v)| Header::new(n, v)).collect(),
            payload: Bytes::from(payload),
        })
}

const MAX: usize = 16 * 1024 * 1024;

proptest! {
    #[test]
    fn frames_round_trip(f in frame()) {
        let bytes = f.to_bytes(MAX).unwrap();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(decode_frame(bytes, MAX).unwrap(), f);
    }

    #[test]
    fn stream_decoding_is_chunking_independent(fs in proptest::collection::vec(frame(), 1..5), chunk in 1usize..64) {
        let mut all = BytesMut::new();
        for f in &fs {
            f.encode(&mut all, MAX).unwrap();
        }
        let mut d = Decoder::new(MAX);
        let mut out = Vec::new();
        for piece in all.chunks(chunk) {
            d.extend(piece);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, fs);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut d = Decoder::new(4096);
        d.extend(&data);
        for _ in 0..64 {
            match d.next_frame() {
                Ok(Some(f)) => { let _ = RpcMessage::from_frame(f); }
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn corrupted_frames_are_rejected(f in frame(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = f.to_bytes(MAX).unwrap();
        let mut v = bytes.to_vec();
        let i = pos.index(v.len());
        v[i] ^= 1 << bit;
        // A flipped bit is always caught by one of the two CRCs.
        let mut d = Decoder::new(MAX);
        d.extend(&v);
        match d.next_frame() {
            Ok(Some(got)) => prop_assert!(false, "accepted corrupt frame {:?}", got),
            Ok(None) => {} // a length grew: the decoder waits for more bytes
            Err(_) => {}
        }
    }

    #[test]
    fn rpc_messages_round_trip(ty in 0i32..8, fl in 0i32..4, sid in 0i32..1000, f in frame()) {
        let mut m = RpcMessage::new(MessageType::from_i32(ty).unwrap(), fl, sid);
        m.headers = f.headers.into_iter().filter(|h| !h.name.starts_with(":message-") && h.name != ":stream-id").collect();
        m.payload = f.payload;
        let frame = m.clone().into_frame();
        prop_assert_eq!(RpcMessage::from_frame(frame).unwrap(), m);
    }
}

#[test]
fn oversized_prelude_is_rejected_before_allocating() {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&(u32::MAX).to_be_bytes());
    head[4..8].copy_from_slice(&0u32.to_be_bytes());
    let crc = crc32fast::hash(&head[..8]);
    head[8..].copy_from_slice(&crc.to_be_bytes());
    let mut d = Decoder::new(1024);
    let cap_before = d.buffer_mut().capacity();
    d.extend(&head);
    assert!(matches!(
        d.next_frame(),
        Err(DecodeError::FrameTooLarge { len, max: 1024 }) if len == u32::MAX as usize
    ));
    assert!(d.buffer_mut().capacity() <= cap_before.max(64));
}

#[test]
fn prelude_checks() {
    let f = Frame {
        headers: vec![Header::string("a", "b")],
        payload: Bytes::from_static(b"xyz"),
    };
    let bytes = f.to_bytes(MAX).unwrap();
    let head: [u8; 12] = bytes[..12].try_into().unwrap();
    assert!(parse_prelude(&head, MAX).is_ok());
    assert!(matches!(
        parse_prelude(&head, 10),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    let mut bad = head;
    bad[8] ^= 0xff;
    assert!(matches!(
        parse_prelude(&bad, MAX),
        Err(DecodeError::PreludeCrc { .. })
    ));
}

#[test]
fn bad_message_crc_is_reported() {
    let f = Frame {
        headers: vec![],
        payload: Bytes::from_static(b"hello"),
    };
    let mut v = f.to_bytes(MAX).unwrap().to_vec();
    let n = v.len();
    v[n - 1] ^= 1;
    assert!(matches!(
        decode_frame(Bytes::from(v), MAX),
        Err(DecodeError::MessageCrc { .. })
    ));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let long_name = Frame {
        headers: vec![Header::string("x".repeat(128), "v")],
        payload: Bytes::new(),
    };
    assert!(long_name.to_bytes(MAX).is_err());
    let big = Frame {
        headers: vec![],
        payload: Bytes::from(vec![0u8; 100]),
    };
    assert!(big.to_bytes(64).is_err());
    let many = Frame {
        headers: (0..3000)
            .map(|i| Header::string(format!("h{i}"), "v".repeat(40)))
            .collect(),
        payload: Bytes::new(),
    };
    assert!(many.to_bytes(MAX).is_err());
}

#[test]
fn empty_frame_is_sixteen_bytes() {
    // The canonical empty message from the aws-c-event-stream test suite.
    let bytes = Frame::default().to_bytes(MAX).unwrap();
    assert_eq!(
        bytes.as_ref(),
        &[
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff
        ]
    );
}

#[test]
fn rpc_json_message_has_the_headers_clients_check() {
    let m = RpcMessage::json(
        MessageType::ApplicationMessage,
        flags::TERMINATE_STREAM,
        3,
        "aws.greengrass#PublishToTopicResponse",
        Bytes::from_static(b"{}"),
    );
    let f = m.into_frame();
    assert_eq!(
        f.header(headers::MESSAGE_TYPE),
        Some(&HeaderValue::Int32(0))
    );
    assert_eq!(
        f.header(headers::MESSAGE_FLAGS),
        Some(&HeaderValue::Int32(2))
    );
    assert_eq!(f.header(headers::STREAM_ID), Some(&HeaderValue::Int32(3)));
    assert_eq!(
        f.header(headers::CONTENT_TYPE)
            .and_then(HeaderValue::as_str),
        Some("application/json")
    );
    assert!(RpcMessage::from_frame(Frame::default()).is_err());
}

proptest! {
    #[test]
    fn encode_json_matches_the_general_encoder(ty in 0i32..8, fl in 0i32..4, sid in any::<i32>(),
                                               model in "[a-zA-Z#.]{0,60}",
                                               payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let ty = MessageType::from_i32(ty).unwrap();
        let mut general = BytesMut::new();
        RpcMessage::json(ty, fl, sid, &model, payload.clone()).encode(&mut general, MAX).unwrap();
        let mut fast = BytesMut::from(&b"prefix"[..]);
        lichen_eventstream::encode_json(&mut fast, ty, fl, sid, &model, &payload, MAX).unwrap();
        prop_assert_eq!(&fast[6..], &general[..]);
    }
}
