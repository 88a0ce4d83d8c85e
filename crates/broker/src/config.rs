//! Broker configuration (serde, JSON/YAML through the core) and conversion from the
//! Greengrass configuration of the built-in client-device components.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::BrokerError;
use crate::bridge::{BridgeMapping, Endpoint};
use crate::policy::DeviceGroups;

/// Component names whose recipes the core treats as provided by the built-in broker.
pub const BUILTIN_COMPONENTS: &[&str] = &[
    "aws.greengrass.clientdevices.mqtt.Bridge",
    "aws.greengrass.clientdevices.mqtt.Moquette",
    "aws.greengrass.clientdevices.mqtt.EMQX",
    "aws.greengrass.clientdevices.Auth",
];

/// Complete broker configuration. Every field has a default; `{}` is a valid configuration
/// (TLS on 0.0.0.0:8883, state in `./broker`, deny everything).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where the local CA, server certificate, device registry, retained messages and persistent
    /// sessions live. The core passes `<root>/broker`. Default `broker`.
    pub state_dir: PathBuf,
    /// Default: one TLS listener on `0.0.0.0:8883`.
    pub listeners: Vec<ListenerConfig>,
    /// Plain TCP listeners must bind a loopback address unless this is `true`. Default false.
    pub allow_remote_plaintext: bool,
    pub limits: Limits,
    pub tls: TlsConfig,
    /// Greengrass `aws.greengrass.clientdevices.Auth` `deviceGroups` object. Default: none, so
    /// every action is denied.
    #[serde(alias = "deviceGroups")]
    pub device_groups: DeviceGroups,
    /// Greengrass `aws.greengrass.clientdevices.mqtt.Bridge` `mqttTopicMapping` object.
    #[serde(alias = "mqttTopicMapping")]
    pub mqtt_topic_mapping: BTreeMap<String, BridgeMapping>,
    /// Keep retained messages and persistent sessions on disk (SQLite, WAL). Default true.
    pub persistence: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            state_dir: PathBuf::from("broker"),
            listeners: vec![ListenerConfig {
                kind: ListenerKind::Tls,
                bind: SocketAddr::from(([0, 0, 0, 0], 8883)),
            }],
            allow_remote_plaintext: false,
            limits: Limits::default(),
            tls: TlsConfig::default(),
            device_groups: DeviceGroups::default(),
            mqtt_topic_mapping: BTreeMap::new(),
            persistence: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MQTT over TLS with mandatory client certificates.
    Tls,
    /// Plain MQTT over TCP. The client id is the thing name used for policy.
    Tcp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub kind: ListenerKind,
    /// Address to bind; port 0 picks a free port (see `BrokerHandle::local_addrs`).
    pub bind: SocketAddr,
}

/// Bounds. All are enforced; see the crate documentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections. Default 10,000. Beyond it CONNECT gets Server busy.
    pub max_connections: usize,
    /// QoS 1/2 messages in flight to one client (also capped by the client's Receive Maximum).
    /// Default 256.
    pub max_inflight: u16,
    /// QoS 2 messages from one client awaiting PUBREL: our Receive Maximum. Default 256.
    pub receive_maximum: u16,
    /// Messages queued in memory for one session beyond those in flight. Default 10,000.
    /// Publishers are never slowed by a subscriber: over this bound (or the byte bounds below)
    /// QoS 0 messages are dropped, a persistent session's QoS 1/2 messages go to its queue in
    /// the store (up to `max_stored_per_session`) and its client, if connected, is disconnected
    /// with Quota exceeded, and a clean session's QoS 1/2 messages are dropped. Every drop is
    /// counted per session ([`crate::BrokerHandle::stats`]) and logged at most every 10 s.
    pub max_queued_per_session: usize,
    /// Bytes of messages held in memory for one session, queued and in flight (payload + topic
    /// + 160 bytes of bookkeeping each). Default 8 MiB; at least `max_packet_size`.
    pub max_queued_bytes_per_session: usize,
    /// Bytes of messages held in memory for all sessions together, counted as above. Default
    /// 128 MiB; at least `max_queued_bytes_per_session`.
    pub max_queued_bytes_total: usize,
    /// QoS 1/2 messages a persistent session keeps in the store beyond its memory queue.
    /// Default 100,000. Newer messages over it are dropped (counted).
    pub max_stored_per_session: usize,
    /// Bytes of those stored messages, counted as above. Default 256 MiB.
    pub max_stored_bytes_per_session: u64,
    /// Longest keep alive granted, in seconds (1..=65535). Default 3600. A v5 client asking for
    /// more, or for none (0), gets this value in CONNACK's Server Keep Alive; a v3.1.1 client is
    /// held to it silently. A client silent for 1.5× its keep alive is disconnected.
    pub max_keep_alive_secs: u16,
    /// Largest packet accepted or sent, in bytes. Default 1 MiB (268,435,460 maximum).
    pub max_packet_size: u32,
    /// Topic aliases a client may set up towards the broker. Default 64.
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker uses towards a client (also capped by the client). Default 64.
    pub outgoing_topic_aliases: u16,
    /// Retained messages kept. Default 100,000. Beyond it new retained topics are not stored.
    pub max_retained: usize,
    /// Bytes of retained messages one SUBSCRIBE packet queues for its client (counted as the
    /// queues count them: payload + topic + 160 each). Default 4 MiB; at least
    /// `max_packet_size`. They also never take the session beyond its own memory bounds or the
    /// broker beyond its total. Retained messages that do not fit are not sent: they are
    /// counted as drops of the session ([`crate::BrokerHandle::dropped_for`]) and logged at
    /// most every 10 s. The client gets them by subscribing again once it has read the others.
    pub max_retained_bytes_per_subscribe: usize,
    /// Subscriptions per session. Default 1,000.
    pub max_subscriptions_per_session: usize,
    /// Sessions kept (online and offline). Default 100,000.
    pub max_sessions: usize,
    /// Longest session expiry granted, in seconds. Default 7 days.
    pub max_session_expiry: u32,
    /// Seconds allowed for the TLS handshake plus CONNECT. Default 10.
    pub connect_timeout_secs: u64,
    /// No longer used (publishers are never slowed by subscribers); accepted so existing
    /// configurations still load.
    pub backpressure_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_inflight: 256,
            receive_maximum: 256,
            max_queued_per_session: 10_000,
            max_queued_bytes_per_session: 8 << 20,
            max_queued_bytes_total: 128 << 20,
            max_stored_per_session: 100_000,
            max_stored_bytes_per_session: 256 << 20,
            max_keep_alive_secs: 3600,
            max_packet_size: 1 << 20,
            topic_alias_maximum: 64,
            outgoing_topic_aliases: 64,
            max_retained: 100_000,
            max_retained_bytes_per_subscribe: 4 << 20,
            max_subscriptions_per_session: 1_000,
            max_sessions: 100_000,
            max_session_expiry: 7 * 24 * 3600,
            connect_timeout_secs: 10,
            backpressure_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// DNS names and IP addresses in the server certificate, besides `localhost`,
    /// `127.0.0.1`, `::1` and the host name.
    pub hostnames: Vec<String>,
    /// Server certificate lifetime. Default 30 days.
    pub server_cert_validity_days: u32,
    /// Re-issue the server certificate when fewer days than this remain. Default 10.
    pub renew_before_days: u32,
    /// How often the remaining validity is checked, in seconds. Default 3600.
    pub renew_check_secs: u64,
    /// PEM CA certificates whose issued client certificates are accepted without registration
    /// (thing name = certificate subject CN). Default none.
    pub trusted_ca_pems: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            hostnames: Vec::new(),
            server_cert_validity_days: 30,
            renew_before_days: 10,
            renew_check_secs: 3600,
            trusted_ca_pems: Vec::new(),
        }
    }
}

impl BrokerConfig {
    /// Refuses configurations the broker cannot honour safely.
    pub fn validate(&self) -> Result<(), BrokerError> {
        for l in &self.listeners {
            if l.kind == ListenerKind::Tcp
                && !l.bind.ip().is_loopback()
                && !self.allow_remote_plaintext
            {
                return Err(BrokerError::Config(format!(
                    "plain TCP listener {} is not on loopback; set allow_remote_plaintext to open it",
                    l.bind
                )));
            }
        }
        let l = &self.limits;
        if l.max_inflight == 0 || l.receive_maximum == 0 || l.max_queued_per_session == 0 {
            return Err(BrokerError::Config(
                "limits.max_inflight, receive_maximum and max_queued_per_session must be > 0"
                    .into(),
            ));
        }
        if l.max_inflight > 32_768 {
            return Err(BrokerError::Config(
                "limits.max_inflight must be at most 32768 (packet identifiers are 16-bit)".into(),
            ));
        }
        if l.max_packet_size < 64 {
            return Err(BrokerError::Config(
                "limits.max_packet_size must be >= 64".into(),
            ));
        }
        if l.max_queued_bytes_per_session < l.max_packet_size as usize {
            return Err(BrokerError::Config(
                "limits.max_queued_bytes_per_session must be >= limits.max_packet_size".into(),
            ));
        }
        if l.max_retained_bytes_per_subscribe < l.max_packet_size as usize {
            return Err(BrokerError::Config(
                "limits.max_retained_bytes_per_subscribe must be >= limits.max_packet_size".into(),
            ));
        }
        if l.max_queued_bytes_total < l.max_queued_bytes_per_session {
            return Err(BrokerError::Config(
                "limits.max_queued_bytes_total must be >= limits.max_queued_bytes_per_session"
                    .into(),
            ));
        }
        if l.max_keep_alive_secs == 0 {
            return Err(BrokerError::Config(
                "limits.max_keep_alive_secs must be between 1 and 65535".into(),
            ));
        }
        crate::bridge::validate_mappings(&self.mqtt_topic_mapping)?;
        Ok(())
    }

    /// Applies the Greengrass configuration of built-in components, as a deployment gives it:
    /// `component` is one of [`BUILTIN_COMPONENTS`], `config` its configuration JSON. Auth's
    /// `deviceGroups` become the policies; Bridge's `mqttTopicMapping` the bridge mappings;
    /// Moquette's `moquette.ssl_port` / `moquette.host` move the TLS listener; EMQX settings
    /// are accepted and not used.
    pub fn apply_component_config(
        &mut self,
        component: &str,
        config: &serde_json::Value,
    ) -> Result<(), BrokerError> {
        match component {
            "aws.greengrass.clientdevices.Auth" => {
                if let Some(groups) = config.get("deviceGroups") {
                    self.device_groups = serde_json::from_value(groups.clone()).map_err(|e| {
                        BrokerError::Config(format!("{component}: deviceGroups: {e}"))
                    })?;
                }
            }
            "aws.greengrass.clientdevices.mqtt.Bridge" => {
                if let Some(m) = config.get("mqttTopicMapping") {
                    let mappings: BTreeMap<String, BridgeMapping> =
                        serde_json::from_value(m.clone()).map_err(|e| {
                            BrokerError::Config(format!("{component}: mqttTopicMapping: {e}"))
                        })?;
                    crate::bridge::validate_mappings(&mappings)?;
                    self.mqtt_topic_mapping = mappings;
                }
            }
            "aws.greengrass.clientdevices.mqtt.Moquette" => {
                // `moquette.ssl_port` / `moquette.host` move the TLS listener.
                if let Some(m) = config.get("moquette") {
                    let port = match m.get("ssl_port") {
                        None => None,
                        Some(v) => Some(
                            v.as_u64()
                                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                                .and_then(|p| u16::try_from(p).ok())
                                .ok_or_else(|| {
                                    BrokerError::Config(format!(
                                        "{component}: moquette.ssl_port {v} is not a port"
                                    ))
                                })?,
                        ),
                    };
                    let host = match m.get("host").and_then(|h| h.as_str()) {
                        None => None,
                        Some(h) => Some(h.parse::<std::net::IpAddr>().map_err(|e| {
                            BrokerError::Config(format!("{component}: moquette.host {h:?}: {e}"))
                        })?),
                    };
                    if port.is_some() || host.is_some() {
                        let default = SocketAddr::from(([0, 0, 0, 0], 8883));
                        let idx = match self
                            .listeners
                            .iter()
                            .position(|l| l.kind == ListenerKind::Tls)
                        {
                            Some(i) => i,
                            None => {
                                self.listeners.push(ListenerConfig {
                                    kind: ListenerKind::Tls,
                                    bind: default,
                                });
                                self.listeners.len() - 1
                            }
                        };
                        let bind = &mut self.listeners[idx].bind;
                        if let Some(p) = port {
                            bind.set_port(p);
                        }
                        if let Some(h) = host {
                            bind.set_ip(h);
                        }
                    }
                }
                tracing::info!(component, "served by the built-in lichen broker");
            }
            "aws.greengrass.clientdevices.mqtt.EMQX" => {
                tracing::info!(
                    component,
                    "served by the built-in lichen broker (EMQX settings are not used)"
                );
            }
            other => {
                return Err(BrokerError::Config(format!(
                    "{other} is not a built-in broker component"
                )));
            }
        }
        Ok(())
    }
}

/// Builds policies and bridge mappings from the configurations of the built-in components
/// a deployment carries (`(component name, configuration JSON)` pairs), on top of `base`.
pub fn config_from_components<'a>(
    mut base: BrokerConfig,
    components: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> Result<BrokerConfig, BrokerError> {
    for (name, cfg) in components {
        base.apply_component_config(name, cfg)?;
    }
    Ok(base)
}

/// True for a mapping leg that needs the cloud link (not connected yet).
pub(crate) fn is_cloud(e: Endpoint) -> bool {
    e == Endpoint::IotCore
}
