//! MQTT 3.1.1 and 5.0 packet codec.
//!
//! Pure: bytes in, typed packets out, and back. It knows nothing of sockets, sessions or policy.
//!
//! - [`decode`] decodes one packet from the front of a buffer, [`encode`] appends one.
//! - [`parse_fixed_header`] checks a packet's announced size against a maximum **before** the
//!   body is buffered, so a reader can refuse oversized packets without allocating for them.
//! - Every MQTT 5 property is supported ([`Properties`]); the decoder refuses properties a
//!   packet type does not allow, duplicates, and invalid values. Reason codes are checked
//!   against the set each packet allows ([`ReasonCode::allowed_in`]).
//! - UTF-8 strings must be valid UTF-8 without U+0000; variable byte integers must be minimal
//!   and at most 4 bytes.
//! - Decoding never panics and never allocates more than the input's size: every length is
//!   checked against the bytes present (fuzzed by `fuzz/fuzz_targets/mqtt_decode.rs`).
//! - Each error maps to the reason code a server answers with ([`DecodeError::reason_code`]).
//!
//! Bounds: a packet is at most the caller's `max_packet_size` (and MQTT's 268,435,460 bytes);
//! a PUBLISH carries at most [`properties::MAX_SUBSCRIPTION_IDS`] subscription identifiers.

pub mod decode;
pub mod encode;
mod error;
pub mod packet;
pub mod properties;
mod reason;
pub mod topic;
pub mod wire;

pub use decode::{FixedHeader, decode, decode_body, parse_fixed_header};
pub use encode::{encode, to_vec};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{PropContext, Properties};
pub use reason::{ALL_REASON_CODES, ReasonCode, ReasonContext};

/// Largest packet MQTT can express: 5-byte fixed header + 268,435,455 byte body.
pub const MAX_PACKET_SIZE: usize = 268_435_460;
