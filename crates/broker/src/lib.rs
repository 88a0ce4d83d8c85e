//! lichen's embedded MQTT 3.1.1/5.0 broker for client devices.
//!
//! Start it with [`start`] and manage it through the returned [`BrokerHandle`]. It attaches to
//! the local bus through the MQTT bridge ([`bridge`]) and keeps its state under
//! [`BrokerConfig::state_dir`]:
//!
//! ```text
//! <state_dir>/ca.key      local CA private key (0600)
//! <state_dir>/ca.pem      local CA certificate: give it to devices to verify the broker
//! <state_dir>/broker.db   SQLite (WAL): retained messages, persistent sessions, devices
//! ```
//!
//! # Protocol
//! MQTT 3.1.1 and 5.0: QoS 0/1/2 with ordered delivery per session and DUP on resend (QoS 2
//! stays exactly once across kill -9 for persistent sessions, both directions),
//! retained messages, wills (with will delay), clean and persistent sessions with expiry,
//! keepalive enforced at 1.5× the client's interval (checked every 250 ms; at most
//! `limits.max_keep_alive_secs`, default 3600 s, also for clients asking for none; MQTT 5 clients
//! are told the lowered value in Server Keep Alive), topic aliases both ways, subscription
//! identifiers, shared subscriptions (`$share/name/filter`, round robin, online members
//! first), Receive Maximum both ways (an MQTT 5 client over ours, counting QoS 1 PUBLISHes not
//! yet acknowledged and QoS 2 not yet released, gets DISCONNECT 0x93), Maximum Packet Size both ways, user properties, message
//! expiry, response topic/correlation data passed through, No Local / Retain As Published /
//! Retain Handling, a reason code on every ack. Overlapping subscriptions deliver one copy per
//! client at the highest granted QoS, carrying every matching subscription identifier.
//! Clients may not publish to `$SYS/` (MQTT 5: PUBACK/PUBREC Not authorized 0x87; MQTT 3.1.1:
//! acknowledged and dropped; a will there is refused), as mosquitto does.
//! Malformed packets close the connection with the reason code from
//! [`lichen_mqtt::DecodeError::reason_code`] (sent in a DISCONNECT to MQTT 5 clients).
//!
//! # Security
//! TLS listeners require a client certificate that is registered ([`BrokerHandle::add_device`])
//! or issued by a trusted CA ([`config::TlsConfig::trusted_ca_pems`]). Plain TCP listeners are
//! loopback-only unless `allow_remote_plaintext`. Authorization uses Greengrass client device
//! auth policies ([`policy`]), deny by default; changes apply on each client's next packet.
//!
//! # Embedding
//! [`start_with_hooks`] takes [`Hooks`]: a connection gate, an authorizer, reserved-topic
//! handlers, connection events and an existing CA (see [`hooks`]). The handle publishes from
//! the server ([`BrokerHandle::publish`], [`BrokerHandle::publish_to_client`]) and closes
//! connections by client id, thing or certificate.
//!
//! # Bounds
//! | what | bound (default) |
//! |---|---|
//! | connections | `limits.max_connections` (10,000) |
//! | packet size, both directions | `limits.max_packet_size` (1 MiB); checked on the fixed header before buffering |
//! | QoS 1/2 in flight to a client | min(`limits.max_inflight` (256), client Receive Maximum) |
//! | QoS 2 from a client awaiting PUBREL | `limits.receive_maximum` (256) |
//! | queued in memory per session | `limits.max_queued_per_session` (10,000 messages) and `limits.max_queued_bytes_per_session` (8 MiB, queued + in flight, payload + topic + 160 B each) |
//! | queued in memory, all sessions | `limits.max_queued_bytes_total` (128 MiB) |
//! | over those bounds | publishers are never slowed: QoS 0 is dropped; a persistent session's QoS 1/2 goes to its queue in the store and a connected client is disconnected (v5: Quota exceeded 0x97), the session continuing offline; a clean session's QoS 1/2 is dropped. Drops are counted per session (`BrokerHandle::dropped_for`, `BrokerStats::dropped`) and logged at most every 10 s per session |
//! | stored beyond memory per session | `limits.max_stored_per_session` (100,000) and `limits.max_stored_bytes_per_session` (256 MiB); newer messages over it are dropped (counted); read back in order as the client drains its queue, and at most the memory bounds are loaded at start |
//! | topic aliases | `limits.topic_alias_maximum` (64) inbound, `limits.outgoing_topic_aliases` (64) outbound |
//! | subscriptions per session | `limits.max_subscriptions_per_session` (1,000) |
//! | sessions | `limits.max_sessions` (100,000) |
//! | retained messages | `limits.max_retained` (100,000) |
//! | session expiry | `limits.max_session_expiry` (7 days) |
//! | CONNECT + TLS handshake time | `limits.connect_timeout_secs` (10 s) |
//! | read buffer per connection | none while idle on plain TCP (waits on readiness), 64 B idle on TLS; grows ×2 to 64 KiB under load, freed when drained |
//! | idle connection | plain TCP: parked — no task, no buffers, no reactor registration; a 120 B record in one slab and the socket in one epoll set watched by one task (`conn::park`), resumed on a new task when readable or woken; about 570 B in all (mosquitto: ~730 B), measured by `scripts/bench-broker`. TLS: one task with no timer. Keep-alive for both is checked by a 250 ms sweep over sessions |
//! | retained messages per SUBSCRIBE | `limits.max_retained_bytes_per_subscribe` (4 MiB) and the session's memory bounds; the rest not sent, counted as drops |
//! | write buffer per connection | flushed at 256 KiB, freed after each flush; a client that stops reading is still disconnected by a kick or takeover, and gets 5 s to take its last bytes |
//! | store writer batch | 4,096 operations per transaction |
//! | topic handler queue | `TopicRoute::queue_capacity` (1,024) per worker, 1..=64 workers; full: dropped, counted ([`BrokerHandle::route_drops`]), MQTT 5 QoS 1/2 answered Quota exceeded |
//! | connection gate | answers within `limits.connect_timeout_secs`, else CONNACK Server unavailable |

pub mod bridge;
mod broker;
pub mod config;
mod conn;
pub mod hooks;
pub mod policy;
mod server;
mod session;
mod store;
mod tls;
mod topic;

pub use bridge::{BRIDGE_ORIGIN, BridgeMapping, CloudBridge, Endpoint};
pub use config::{
    BUILTIN_COMPONENTS, BrokerConfig, Limits, ListenerConfig, ListenerKind, TlsConfig,
    config_from_components,
};
pub use hooks::{
    Admission, AuthHandle, Authorizer, ClientIdentity, ClientRef, ConnectInfo, ConnectionEvents,
    ConnectionGate, DisconnectKind, GateDecision, Hooks, InboundPublish, PolicyAuthorizer,
    RouteMode, TopicHandler, TopicRoute,
};
pub use lichen_mqtt::QoS;
pub use policy::Action;
pub use policy::DeviceGroups;
pub use server::{BrokerHandle, BrokerStats, DeviceInfo, ListenerAddr, start, start_with_hooks};

/// Broker errors. Each names the file, field or device concerned.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker configuration: {0}")]
    Config(String),
    #[error("broker I/O: {0}")]
    Io(String),
    #[error("broker certificate: {0}")]
    Certificate(String),
    #[error("broker store: {0}")]
    Store(String),
    #[error("device {0:?} is already registered with another certificate")]
    DeviceExists(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
