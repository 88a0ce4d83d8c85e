//! lichen-streams: the Greengrass Stream Manager's client protocol and the store behind it.
//!
//! * [`protocol`] is pure (bytes in, typed values out): the connect byte, frames
//!   (`[i32 length][u8 operation][CBOR]`), the CBOR request and response maps with the
//!   exact camelCase keys of the Stream Manager SDKs, definite- and indefinite-length CBOR
//!   (cbor2 writes the former, the Java SDK's Jackson the latter), status codes.
//! * [`store`] keeps the streams: segment files under `<root>/streams/<stream id>/`,
//!   `maxSize`/`streamSegmentSize`, `strategyOnFull` at segment granularity, TTL, File or
//!   Memory persistence, `flushOnWrite`, sequence numbers that survive restarts, and the
//!   export cursors. Synchronous (no tokio): the node's stream manager service wraps it.
//!
//! * [`client`] is a blocking Rust client of the protocol (tests, benchmarks, Rust components).
//!
//! Codes the reference leaves open are pinned here (and in the tests):
//! * a full stream under `RejectNewData` → `3` InvalidRequest ("stream … is full");
//! * creating a stream whose name exists → `3` InvalidRequest ("… already exists");
//! * an update that changes `persistence` → `17` UpdateNotAllowed; other refused updates
//!   (maxSize below the current size or the segment size) → `16` UpdateFailed;
//! * a bad or missing token → ConnectResponse status `2` Unauthorized;
//! * an empty stream reports `oldestSequenceNumber` = next sequence number and
//!   `newestSequenceNumber` = next − 1 (so 0 / −1 for a new stream);
//! * absent `maxMessageCount` reads `max(minMessageCount, 1)` messages.

pub mod client;
pub mod protocol;
pub mod store;
