//! The core's connection to its cloud (`cloud` section of the core config): MQTT 5 over
//! mutual TLS to `iotDataEndpoint`, client id = thing name, the server verified against
//! `rootCaPath`. It reports the device broker's addresses as Greengrass connectivity info
//! (`$lichen/things/<thing>/connectivity/update`, QoS 1, at connect and when they change),
//! serves `cloud.status` (what `lichen core status` shows), reconnects with capped
//! exponential backoff and full jitter, and sends DISCONNECT when the node stops.
//!
//! The identity comes from [`super::provisioning`]: the bundle's files, or the one fleet
//! provisioning stored (done by the node before the core starts, so components see the
//! provisioned thing name).
//!
//! Bounds: backoff from [`CloudOptions::backoff_base`] (1 s) doubling to
//! [`CloudOptions::backoff_cap`] (60 s), each wait drawn uniformly from its upper half;
//! addresses re-checked every [`CloudOptions::connectivity_interval`] (10 s); at most
//! [`MAX_CONNECTIVITY_ENTRIES`] entries reported; the last error kept is at most 512 bytes.
//! [`CloudLink`] (link.rs) is the handle on the connection other code uses; ipc.rs serves
//! PublishToIoTCore / SubscribeToIoTCore over it; spool.rs keeps PublishToIoTCore messages
//! (on disk by default, `mqtt.spooler`) and drains them while connected.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lichen_core::CoreError;
use lichen_core::control::{ControlReply, ControlRequest, ControlService};
use lichen_core::handle::BoxFuture;
use lichen_model::control::{CloudConnectionState, CloudStatus};
use lichen_mqtt_client::{Client, ConnectOptions, Protocol, QoS, TlsFiles, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::broker::BrokerService;
use super::provisioning::{Identity, PROVISIONING_TIMEOUT, ensure_identity};
use crate::service::{Service, ServiceContext, ServiceError};

mod ipc;
mod link;
mod spool;
pub use ipc::event as iot_core_event;
pub use link::{CloudLink, LinkError, LinkState, MAX_SUBSCRIPTIONS, SUBSCRIPTION_CAPACITY};
pub use spool::{CloudSpool, SpoolerSettings, StorageType};

/// Connectivity entries reported at most (interfaces × listeners).
pub const MAX_CONNECTIVITY_ENTRIES: usize = 64;
const MAX_ERROR_BYTES: usize = 512;

/// Timing of the cloud connection (defaults for a device; tests shorten them).
#[derive(Debug, Clone)]
pub struct CloudOptions {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub connectivity_interval: Duration,
    pub keep_alive_secs: u16,
}

impl Default for CloudOptions {
    fn default() -> Self {
        CloudOptions {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            connectivity_interval: Duration::from_secs(10),
            keep_alive_secs: 60,
        }
    }
}

/// `$lichen/things/<thing>/connectivity/update`.
pub fn connectivity_topic(thing: &str) -> String {
    format!("$lichen/things/{thing}/connectivity/update")
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The cloud connection as a node service. Idle when the config has no `cloud` section.
pub struct CloudService {
    options: CloudOptions,
    broker: Option<Arc<BrokerService>>,
    status: Arc<Mutex<Option<CloudStatus>>>,
    /// Shared with the IoT Core IPC operations, registered before the link exists.
    link: Arc<Mutex<Option<CloudLink>>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl CloudService {
    /// `broker`: the device broker whose listeners are reported as connectivity info.
    pub fn new(broker: Option<Arc<BrokerService>>) -> Self {
        Self::with_options(broker, CloudOptions::default())
    }

    pub fn with_options(broker: Option<Arc<BrokerService>>, options: CloudOptions) -> Self {
        CloudService {
            options,
            broker,
            status: Arc::new(Mutex::new(None)),
            link: Arc::new(Mutex::new(None)),
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// The handle on the cloud connection, once the service started with a `cloud` section
    /// (`None` before, or without one). Services started after this one may take it in
    /// their own `start`.
    pub fn link(&self) -> Option<CloudLink> {
        self.link.lock().ok().and_then(|l| l.clone())
    }

    /// The connection's status, `None` without a `cloud` section.
    pub fn status(&self) -> Option<CloudStatus> {
        let mut status = self.status.lock().ok().and_then(|s| s.clone())?;
        if let Some(link) = self.link() {
            status.subscriptions = link.subscriptions() as u64;
            status.messages_dropped = link.dropped();
            status.spool = link.spool().map(|s| s.status());
        }
        Some(status)
    }
}

impl Service for CloudService {
    fn name(&self) -> &str {
        "cloud"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let Some(cloud) = ctx.settings.cloud.clone() else {
                return Ok(());
            };
            let Some(ca) = ctx.settings.root_ca_path.clone() else {
                return Err(ServiceError::new(
                    "cloud",
                    "the cloud section needs rootCaPath",
                ));
            };
            // Fleet provisioning already ran in `Node::start`; this finds its stored identity.
            let identity = ensure_identity(ctx.layout.root(), &ctx.settings, PROVISIONING_TIMEOUT)
                .await
                .map_err(|e| ServiceError::new("cloud", e.to_string()))?;
            let endpoint = cloud.endpoint();
            let status = CloudStatus {
                endpoint: endpoint.clone(),
                thing_name: identity.thing_name.clone(),
                state: CloudConnectionState::Connecting,
                last_error: None,
                provisioned: identity.provisioned,
                subscriptions: 0,
                messages_dropped: 0,
                spool: None,
            };
            *self
                .status
                .lock()
                .map_err(|_| ServiceError::new("cloud", "status lock poisoned"))? = Some(status);
            let handle = CloudLink::new(identity.thing_name.clone());
            handle.set_spool(open_spool(ctx).await?);
            if let Ok(mut l) = self.link.lock() {
                *l = Some(handle.clone());
            }
            let link = Link {
                handle,
                connect: connect_options(&endpoint, &identity, &ca, &self.options),
                identity,
                options: self.options.clone(),
                broker: self.broker.clone(),
                status: self.status.clone(),
            };
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(link.run(stop_rx));
            *self.running.lock().await = Some(Running { stop, task });
            tracing::info!(endpoint = %endpoint, "cloud connection started");
            Ok(())
        })
    }

    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Cloud)
    }

    fn ipc_operations(&self) -> Vec<lichen_ipc::Operation> {
        ipc::operations(self.link.clone())
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            match request {
                ControlRequest::CloudStatus {} => {
                    self.status().map(ControlReply::Cloud).ok_or_else(|| {
                        CoreError::NotSupported(
                            "cloud status: the core config has no cloud section".into(),
                        )
                    })
                }
                other => Err(CoreError::NotSupported(format!(
                    "control operation {:?}",
                    other.op()
                ))),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(spool) = self.link().and_then(|l| l.spool().cloned()) {
                tokio::task::spawn_blocking(move || spool.flush())
                    .await
                    .ok();
            }
            if let Some(running) = self.running.lock().await.take() {
                let _ = running.stop.send(true);
                let mut task = running.task;
                // The link sends DISCONNECT and returns; don't let a dead peer hold the node.
                if tokio::time::timeout(Duration::from_secs(5), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        })
    }
}

/// Opens the spool `mqtt.spooler` describes (see spool.rs), under `<root>/cloud/spool`.
async fn open_spool(ctx: &ServiceContext) -> Result<Arc<CloudSpool>, ServiceError> {
    let deployed = ctx
        .core
        .get_configuration("aws.greengrass.Nucleus", &["mqtt".into(), "spooler".into()])
        .ok();
    let settings = SpoolerSettings::resolve(&ctx.settings, deployed)
        .map_err(|e| ServiceError::new("cloud", e))?;
    let dir = ctx.layout.cloud_spool_dir();
    tracing::info!(storage = ?settings.storage, max_bytes = settings.max_bytes,
        keep_qos0_when_offline = settings.keep_qos0_when_offline, when_full = ?settings.when_full,
        fsync = ?settings.fsync, dir = %dir.display(), "cloud spool");
    let spool = tokio::task::spawn_blocking(move || CloudSpool::open(settings, &dir))
        .await
        .map_err(|e| ServiceError::new("cloud", format!("opening the spool: {e}")))?
        .map_err(|e| ServiceError::new("cloud", format!("opening the spool: {e}")))?;
    Ok(Arc::new(spool))
}

fn connect_options(
    endpoint: &str,
    identity: &Identity,
    ca: &std::path::Path,
    options: &CloudOptions,
) -> ConnectOptions {
    let mut o = ConnectOptions::new(endpoint, identity.thing_name.clone());
    o.protocol = Protocol::V5;
    o.keep_alive = options.keep_alive_secs;
    o.transport = Transport::Tls(TlsFiles {
        ca: ca.to_path_buf(),
        client_cert: Some(identity.cert_path.clone()),
        client_key: Some(identity.key_path.clone()),
        server_name: None,
    });
    o
}

/// The connection loop's state.
struct Link {
    handle: CloudLink,
    connect: ConnectOptions,
    identity: Identity,
    options: CloudOptions,
    broker: Option<Arc<BrokerService>>,
    status: Arc<Mutex<Option<CloudStatus>>>,
}

impl Link {
    fn set(&self, state: CloudConnectionState, error: Option<String>) {
        let error = error.map(|mut e| {
            truncate(&mut e, MAX_ERROR_BYTES);
            e
        });
        if let Ok(mut guard) = self.status.lock()
            && let Some(s) = guard.as_mut()
        {
            s.state = state;
            if let Some(e) = &error {
                s.last_error = Some(e.clone());
            }
        }
        match state {
            CloudConnectionState::Connected => self.handle.set_state(LinkState::Connected),
            _ => {
                let last_error = error.or_else(|| match &*self.handle.state().borrow() {
                    LinkState::Disconnected { last_error } => last_error.clone(),
                    LinkState::Connected => None,
                });
                self.handle
                    .set_state(LinkState::Disconnected { last_error });
            }
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            self.set(CloudConnectionState::Connecting, None);
            let attempt = tokio::select! {
                r = Client::connect(self.connect.clone()) => r,
                _ = stop.changed() => return,
            };
            match attempt {
                Ok((client, incoming)) => {
                    // Every registered subscription is restored before the link says
                    // Connected, so users waiting for it find their filters in place.
                    let router = tokio::spawn(route(self.handle.clone(), incoming));
                    let restored = tokio::select! {
                        r = self.handle.attach(&client) => r,
                        _ = stop.changed() => {
                            self.handle.detach();
                            let _ = client.disconnect().await;
                            return;
                        }
                    };
                    if let Err(e) = restored {
                        self.handle.detach();
                        router.abort();
                        tracing::warn!(error = %e, "cloud subscriptions not restored; reconnecting");
                        self.set(CloudConnectionState::Error, Some(e.to_string()));
                        let _ = client.disconnect().await;
                        let delay = backoff(&self.options, failures);
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return,
                        }
                        continue;
                    }
                    failures = 0;
                    self.set(CloudConnectionState::Connected, None);
                    tracing::info!(endpoint = %self.connect.addr, thing = %self.identity.thing_name, "connected to the cloud");
                    let ended = self.connected(&client, &mut stop).await;
                    self.handle.detach();
                    router.abort();
                    match ended {
                        None => {
                            let _ = client.disconnect().await;
                            tracing::info!("disconnected from the cloud");
                            return;
                        }
                        Some(e) => {
                            tracing::warn!(error = %e, "cloud connection lost");
                            self.set(CloudConnectionState::Error, Some(e));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %self.connect.addr, error = %e, "cannot connect to the cloud");
                    self.set(CloudConnectionState::Error, Some(e.to_string()));
                }
            }
            let delay = backoff(&self.options, failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Serves one connection: reports connectivity at once and when it changes. `None` when
    /// asked to stop, else why the connection ended.
    async fn connected(&self, client: &Client, stop: &mut watch::Receiver<bool>) -> Option<String> {
        let topic = connectivity_topic(&self.identity.thing_name);
        let mut reported: Option<Vec<ConnectivityEntry>> = None;
        let mut tick = tokio::time::interval(self.options.connectivity_interval);
        // The spool goes out on every connection, from its first unacked message.
        let spool = self.handle.spool().cloned();
        let drain = async {
            match &spool {
                Some(s) => s.drain(client).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(drain);
        loop {
            tokio::select! {
                e = &mut drain => return Some(e.to_string()),
                _ = tick.tick() => {
                    let now = self.connectivity().await;
                    let changed = reported.as_ref() != Some(&now);
                    // With no broker nothing is reported, until one starts.
                    if changed && (reported.is_some() || !now.is_empty()) {
                        let body = connectivity_body(&now);
                        match client.publish(topic.as_str(), body, QoS::AtLeastOnce).await {
                            Ok(_) => {
                                tracing::info!(entries = now.len(), "connectivity info reported");
                                reported = Some(now);
                            }
                            Err(e) if e.is_connection_error() => return Some(e.to_string()),
                            Err(e) => tracing::warn!(error = %e, "connectivity report refused"),
                        }
                    }
                }
                e = client.closed() => return Some(e.to_string()),
                _ = stop.changed() => return None,
            }
        }
    }

    async fn connectivity(&self) -> Vec<ConnectivityEntry> {
        let Some(broker) = &self.broker else {
            return Vec::new();
        };
        let mut listeners: Vec<(bool, SocketAddr)> = broker
            .local_addrs()
            .await
            .iter()
            .map(|l| (l.kind == lichen_broker::ListenerKind::Tls, l.addr))
            .collect();
        // TLS first: it is what client devices use.
        listeners.sort_by_key(|(tls, _)| !tls);
        connectivity_entries(&listeners, &interface_addresses())
    }
}

/// Hands every message of one connection to the link's subscribers.
async fn route(link: CloudLink, mut incoming: lichen_mqtt_client::Incoming) {
    while let Some(p) = incoming.recv().await {
        link.route(p);
    }
}

/// One ConnectivityInfo entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectivityEntry {
    pub host: IpAddr,
    pub port: u16,
}

/// Listener addresses as reachable addresses: a wildcard listener stands for every
/// non-loopback interface address of its family.
pub fn connectivity_entries(
    listeners: &[(bool, SocketAddr)],
    interfaces: &[IpAddr],
) -> Vec<ConnectivityEntry> {
    let mut out: Vec<ConnectivityEntry> = Vec::new();
    for (_, addr) in listeners {
        let hosts: Vec<IpAddr> = if addr.ip().is_unspecified() {
            interfaces
                .iter()
                .filter(|ip| !ip.is_loopback() && ip.is_ipv4() == addr.ip().is_ipv4())
                .copied()
                .collect()
        } else {
            vec![addr.ip()]
        };
        for host in hosts {
            let e = ConnectivityEntry {
                host,
                port: addr.port(),
            };
            if !out.contains(&e) && out.len() < MAX_CONNECTIVITY_ENTRIES {
                out.push(e);
            }
        }
    }
    out
}

/// Greengrass UpdateConnectivityInfo body.
pub fn connectivity_body(entries: &[ConnectivityEntry]) -> String {
    let info: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let host = e.host.to_string();
            serde_json::json!({
                "Id": format!("{host}:{}", e.port),
                "HostAddress": host,
                "PortNumber": e.port,
                "Metadata": "",
            })
        })
        .collect();
    serde_json::json!({ "ConnectivityInfo": info }).to_string()
}

/// This host's interface addresses (IPv6 link-local left out: unusable without a scope).
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(storage) = a.address else { continue };
        let ip = if let Some(v4) = storage.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = storage.as_sockaddr_in6() {
            let ip = v6.ip();
            if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                continue;
            }
            IpAddr::V6(ip)
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Full jitter: uniform in [d/2, d], d = min(cap, base × 2^failures).
fn backoff(options: &CloudOptions, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
    let d = options
        .backoff_base
        .saturating_mul(factor)
        .min(options.backoff_cap);
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_stand_for_non_loopback_interfaces() {
        let ifs: Vec<IpAddr> = ["127.0.0.1", "192.168.1.5", "10.0.0.2", "::1", "fd00::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let listeners = [
            (true, "0.0.0.0:8883".parse().unwrap()),
            (false, "127.0.0.1:1883".parse().unwrap()),
        ];
        let e = connectivity_entries(&listeners, &ifs);
        let got: Vec<String> = e.iter().map(|e| format!("{}:{}", e.host, e.port)).collect();
        assert_eq!(got, ["192.168.1.5:8883", "10.0.0.2:8883", "127.0.0.1:1883"]);
        let body: serde_json::Value = serde_json::from_str(&connectivity_body(&e)).unwrap();
        assert_eq!(body["ConnectivityInfo"][0]["HostAddress"], "192.168.1.5");
        assert_eq!(body["ConnectivityInfo"][0]["PortNumber"], 8883);
        assert_eq!(body["ConnectivityInfo"][0]["Metadata"], "");
        assert_eq!(body["ConnectivityInfo"][0]["Id"], "192.168.1.5:8883");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let o = CloudOptions {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..50 {
            let first = backoff(&o, 0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&o, 2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(&o, 40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }
}
