//! Pure AWS IoT device-service semantics shared by lichen's cloud device endpoint and the
//! core's local shadow service: JSON in, JSON out plus the new state to store. No tokio, no
//! I/O, no storage; the caller owns persistence and transport.
//!
//! - [`topic`]: parse and build the reserved `$aws/…` topics (Device Shadow, Jobs, fleet
//!   provisioning) and validate thing, shadow, job, namespace and template names.
//! - [`shadow`]: the Device Shadow service over a [`shadow::StoredShadow`]: update (merge,
//!   metadata, version, delta, documents), get, delete, with AWS's error codes.
//! - [`jobs`]: the Jobs MQTT API as pure transitions over job-execution records.
//! - [`provisioning`]: fleet provisioning template evaluation and the payloads of the
//!   provisioning topics.
//!
//! Bounds (every entry point checks them before doing work proportional to the input):
//! names per [`topic`]; shadow request ≤ [`shadow::ShadowLimits::max_request_bytes`]
//! (128 KiB), state ≤ `max_document_bytes` (8 KiB), nesting ≤ [`shadow::MAX_STATE_DEPTH`];
//! clientToken ≤ [`MAX_CLIENT_TOKEN_BYTES`]; jobs and provisioning bounds are documented in
//! their modules. Nothing here panics on any input (property-tested and fuzzed).

pub mod jobs;
mod json;
pub mod provisioning;
pub mod shadow;
pub mod topic;

/// The longest clientToken AWS accepts (bytes), for shadows and jobs alike.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;
