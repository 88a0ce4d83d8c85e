//! Startup, listeners, background tasks and the [`BrokerHandle`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lichen_bus::Bus;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::BrokerError;
use crate::bridge::{self, BridgeMapping};
use crate::broker::{DeviceRecord, Shared, lock, read, write};
use crate::config::{BrokerConfig, ListenerKind};
use crate::conn::{self, Identity};
use crate::hooks::{ActiveHooks, ActiveRoute, ClientIdentity, Hooks};
use crate::policy::{DeviceGroups, PolicySet};
use crate::session::Msg;
use crate::session::Session;
use crate::store::{QueueBudget, Store, StoreOp};
use crate::tls::{self, DeviceVerifier, LocalCa, ServerCert};
use crate::topic::{SubEntry, split_shared};

/// A bound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerAddr {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    pub connections: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    /// Bytes of messages held in memory for all sessions (bounded by
    /// `limits.max_queued_bytes_total`).
    pub queued_bytes: usize,
    /// Messages dropped for any session since start (queues over their bounds).
    pub dropped: u64,
    /// Idle plain TCP connections parked without a task (counted in `connections` too).
    pub parked: usize,
}

/// Handle to a running broker. Dropping it does not stop the broker; call
/// [`BrokerHandle::shutdown`].
pub struct BrokerHandle {
    shared: Arc<Shared>,
    addrs: Vec<ListenerAddr>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    bridge_tasks: Mutex<Vec<JoinHandle<()>>>,
    ca_cert_path: Option<PathBuf>,
    ca_cert_pem: Option<String>,
}

/// Starts the broker: opens the store, loads persistent state, issues the server certificate
/// (TLS listeners), binds every listener and starts the bridge.
pub async fn start(config: BrokerConfig, bus: Bus) -> Result<BrokerHandle, BrokerError> {
    start_with_hooks(config, bus, Hooks::default()).await
}

/// [`start`] with an embedder's [`Hooks`] (gate, authorizer, topic routes, events, CA).
pub async fn start_with_hooks(
    config: BrokerConfig,
    bus: Bus,
    hooks: Hooks,
) -> Result<BrokerHandle, BrokerError> {
    config.validate()?;
    hooks.validate()?;
    let dir = config.state_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| BrokerError::Io(format!("{}: {e}", dir.display())))?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let policies = PolicySet::compile(&config.device_groups)?;
    let (store, loaded) = if config.persistence {
        let budget = QueueBudget {
            per_session_count: config.limits.max_queued_per_session,
            per_session_bytes: config.limits.max_queued_bytes_per_session,
            total_bytes: config.limits.max_queued_bytes_total,
        };
        let (s, l) = Store::open(&dir.join("broker.db"), budget)?;
        (Some(s), Some(l))
    } else {
        (None, None)
    };
    let mut tasks = Vec::new();
    let mut routes = Vec::with_capacity(hooks.routes.len());
    for r in &hooks.routes {
        let (route, workers) = ActiveRoute::start(r);
        routes.push(route);
        tasks.extend(workers);
    }
    let active = ActiveHooks {
        track: hooks.gate.is_some()
            || hooks.authorizer.is_some()
            || hooks.events.is_some()
            || !routes.is_empty(),
        gate: hooks.gate,
        authorizer: hooks.authorizer,
        routes,
        events: hooks.events,
    };
    let mut trusted_ca_pems = config.tls.trusted_ca_pems.clone();
    if let Some(ca) = &hooks.ca {
        trusted_ca_pems.push(ca.cert_pem.clone());
    }
    let shared = Arc::new(Shared::new(
        config.limits.clone(),
        policies,
        bus,
        store,
        active,
    ));
    shared
        .trusted_cas
        .store(!trusted_ca_pems.is_empty(), Ordering::Release);
    if let Some(l) = loaded {
        restore(&shared, l);
    }

    let mut ca_cert_path = None;
    let mut ca_cert_pem = None;
    let acceptor = if config.listeners.iter().any(|l| l.kind == ListenerKind::Tls) {
        let ca = match &hooks.ca {
            Some(ca) => LocalCa::from_shared(ca.clone()),
            None => LocalCa::load_or_create(&dir)?,
        };
        let names = tls::server_names(&config.tls.hostnames);
        let (key, expires) = ca.issue_server(&names, config.tls.server_cert_validity_days)?;
        let cert = ServerCert::new(key, expires);
        let verifier = Arc::new(DeviceVerifier::new(
            shared.devices.clone(),
            &trusted_ca_pems,
        )?);
        let server_config = tls::server_config(cert.clone(), verifier)?;
        ca_cert_path = Some(ca.cert_path.clone());
        ca_cert_pem = Some(ca.cert_pem.clone());
        let tlsc = config.tls.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(tlsc.renew_check_secs.max(1))).await;
                if cert.days_left() < i64::from(tlsc.renew_before_days) {
                    match ca.issue_server(&names, tlsc.server_cert_validity_days) {
                        Ok((k, e)) => {
                            cert.replace(k, e);
                            tracing::info!("broker server certificate renewed");
                        }
                        Err(e) => tracing::error!(error = %e, "server certificate renewal failed"),
                    }
                }
            }
        }));
        Some(TlsAcceptor::from(Arc::new(server_config)))
    } else {
        None
    };

    let mut addrs = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: l.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: l.bind,
            source,
        })?;
        tracing::info!(kind = ?l.kind, %addr, "MQTT listener ready");
        addrs.push(ListenerAddr { kind: l.kind, addr });
        let acceptor = if l.kind == ListenerKind::Tls {
            acceptor.clone()
        } else {
            None
        };
        tasks.push(tokio::spawn(accept_loop(
            shared.clone(),
            listener,
            acceptor,
        )));
    }

    tasks.push(tokio::spawn(conn::run_parking(shared.clone())));
    let sweeper = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            sweeper.check_keepalives();
            tick += 1;
            if tick.is_multiple_of(4) {
                sweeper.expire_sessions();
            }
        }
    }));

    let handle = BrokerHandle {
        shared,
        addrs,
        tasks: Mutex::new(tasks),
        bridge_tasks: Mutex::new(Vec::new()),
        ca_cert_path,
        ca_cert_pem,
    };
    handle.set_bridge_mappings(config.mqtt_topic_mapping.clone())?;
    Ok(handle)
}

fn restore(shared: &Arc<Shared>, l: crate::store::Loaded) {
    let now = Instant::now();
    for m in l.retained {
        write(&shared.retained).insert(m.topic.clone(), m);
    }
    for (fp, name, cert_pem) in l.devices {
        write(&shared.devices).insert(fp, DeviceRecord { name, cert_pem });
    }
    shared
        .next_store_id
        .store(l.max_queued_id + 1, Ordering::Release);
    let mut sessions = lock(&shared.sessions);
    for s in l.sessions {
        if s.expiry != u32::MAX && s.offline_for >= u64::from(s.expiry) {
            shared.persist(StoreOp::DelSession {
                client_id: Arc::from(s.client_id.as_str()),
            });
            continue;
        }
        let session = Session::new(Arc::from(s.client_id.as_str()), s.protocol, s.expiry);
        {
            let mut st = session.lock();
            st.persisted = true;
            st.offline_since = Some(
                now.checked_sub(Duration::from_secs(s.offline_for))
                    .unwrap_or(now),
            );
            for (filter, options, subscription_id) in s.subs {
                let Ok((share, plain)) = split_shared(&filter) else {
                    continue;
                };
                write(&shared.subs).insert(
                    plain,
                    SubEntry {
                        session: session.clone(),
                        options,
                        subscription_id,
                        share: share.map(Arc::from),
                    },
                );
                st.subs.insert(
                    Arc::from(filter.as_str()),
                    crate::session::SubRecord {
                        options,
                        subscription_id,
                    },
                );
            }
            for (packet_id, stage, delivery) in s.inflight {
                st.push_queued(delivery, &shared.queued_bytes);
                if let Some(delivery) = st.flow_mut().queue.pop_back() {
                    st.flow_mut().inflight.push_back(crate::session::Inflight {
                        packet_id,
                        stage,
                        delivery,
                    });
                }
            }
            if !s.incoming_qos2.is_empty() {
                st.flow_mut().incoming_qos2 = s.incoming_qos2;
            }
            for (_, d) in s.queued {
                st.push_queued(d, &shared.queued_bytes);
            }
            if s.dropped > 0 {
                let o = st.overflow_mut();
                o.dropped = s.dropped;
                o.persisted_dropped = s.dropped;
            }
            if s.spilled > 0 {
                let o = st.overflow_mut();
                o.spilled = s.spilled;
                o.spilled_bytes = s.spilled_bytes;
                o.spill_after = s.spill_after;
            }
        }
        sessions.insert(session);
    }
    tracing::info!(
        sessions = sessions.len(),
        retained = read(&shared.retained).len(),
        "broker state restored"
    );
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, acceptor: Option<TlsAcceptor>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.closed.notified() => return,
        };
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::AcqRel);
        let shared = shared.clone();
        match acceptor.clone() {
            // Separate tasks: a plain connection's task does not carry TLS state.
            None => {
                tokio::spawn(conn::run(shared, sock, Identity::Plain, peer));
            }
            Some(acceptor) => {
                tokio::spawn(run_tls(shared, acceptor, sock, peer));
            }
        }
    }
}

async fn run_tls(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let timeout = Duration::from_secs(shared.limits.connect_timeout_secs);
    match Box::pin(tokio::time::timeout(timeout, acceptor.accept(sock))).await {
        Ok(Ok(tls)) => match tls_identity(&shared, tls.get_ref().1.peer_certificates()) {
            // `run` uncounts the connection when it ends.
            Some(id) => return conn::run(shared, Box::new(tls), id, peer).await,
            None => tracing::info!(%peer, "TLS client without a usable certificate"),
        },
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
    }
    shared.connections.fetch_sub(1, Ordering::AcqRel);
}

fn tls_identity(
    shared: &Shared,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Option<Identity> {
    let der = certs?.first()?;
    let fingerprint = tls::fingerprint(der);
    let common_name = tls::common_name(der);
    let thing = match shared.device_by_fingerprint(&fingerprint) {
        Some(name) => name,
        // With a gate, the gate names the thing; a certificate without a CN may still pass it.
        None if shared.hooks.gate.is_some() => common_name.clone().unwrap_or_default(),
        None => common_name.clone()?,
    };
    Some(Identity::Device {
        thing,
        fingerprint,
        common_name,
    })
}

impl BrokerHandle {
    pub fn local_addrs(&self) -> &[ListenerAddr] {
        &self.addrs
    }

    /// First bound address of the given kind.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|l| l.kind == kind).map(|l| l.addr)
    }

    /// Path of the local CA certificate devices use to verify the broker (TLS listeners only).
    pub fn ca_cert_path(&self) -> Option<&std::path::Path> {
        self.ca_cert_path.as_deref()
    }

    /// The CA certificate (PEM) devices use to verify the broker (TLS listeners only).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_cert_pem.as_deref()
    }

    /// Publishes a message from the server itself to every matching subscriber (and the
    /// retained store and the bridge, as a client's message would). Returns how many sessions
    /// got it. Topic routes do not apply.
    pub fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: lichen_mqtt::QoS,
        retain: bool,
    ) -> Result<usize, BrokerError> {
        let msg = self.server_msg(topic, payload, qos, retain)?;
        Ok(self.shared.route(msg).matched)
    }

    /// Publishes to one client only (replies AWS sends only to the requester, such as fleet
    /// provisioning's `…/accepted` with a private key). It reaches the client's session only if
    /// one of its subscriptions matches the topic, at the lower of `qos` and that
    /// subscription's QoS. Returns whether it was queued for the client.
    pub fn publish_to_client(
        &self,
        client_id: &str,
        topic: &str,
        payload: bytes::Bytes,
        qos: lichen_mqtt::QoS,
    ) -> Result<bool, BrokerError> {
        let msg = self.server_msg(topic, payload, qos, false)?;
        Ok(self.shared.deliver_to(client_id, &msg, qos))
    }

    fn server_msg(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: lichen_mqtt::QoS,
        retain: bool,
    ) -> Result<Arc<Msg>, BrokerError> {
        lichen_bus::validate_topic_name(topic)
            .map_err(|e| BrokerError::Config(format!("topic {topic:?}: {e}")))?;
        if payload.len() + topic.len() > self.shared.limits.max_packet_size as usize {
            return Err(BrokerError::Config(format!(
                "message on {topic:?} is larger than limits.max_packet_size"
            )));
        }
        Ok(Arc::new(Msg {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties: lichen_mqtt::Properties::default(),
            expires_at: None,
            origin: None,
            from_bridge: false,
        }))
    }

    /// Closes the connection of `client_id` (MQTT 5: DISCONNECT Not authorized). Returns
    /// whether it was connected.
    pub fn disconnect_client(&self, client_id: &str) -> bool {
        self.shared
            .kick_client(client_id, lichen_mqtt::ReasonCode::NotAuthorized)
    }

    /// Closes every connection of `thing` (identities are tracked when any hook is set;
    /// without hooks this finds none). Returns how many.
    pub fn disconnect_thing(&self, thing: &str) -> usize {
        self.shared
            .kick_where(lichen_mqtt::ReasonCode::NotAuthorized, |c| {
                &*c.thing == thing
            })
    }

    /// Closes every connection made with the certificate of this SHA-256 fingerprint (hex),
    /// e.g. once it is revoked. Tracked as for [`BrokerHandle::disconnect_thing`].
    pub fn disconnect_certificate(&self, fingerprint: &str) -> usize {
        let fp = fingerprint.to_ascii_lowercase();
        self.shared
            .kick_where(lichen_mqtt::ReasonCode::NotAuthorized, |c| {
                c.fingerprint.as_deref() == Some(fp.as_str())
            })
    }

    /// The connected clients (tracked when any hook is set).
    pub fn connected_clients(&self) -> Vec<ClientIdentity> {
        let mut v: Vec<ClientIdentity> = lock(&self.shared.connected).values().cloned().collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    /// Messages each topic route dropped because its queue was full, by prefix.
    pub fn route_drops(&self) -> Vec<(String, u64)> {
        self.shared
            .hooks
            .routes
            .iter()
            .map(|r| (r.prefix.clone(), r.dropped.load(Ordering::Relaxed)))
            .collect()
    }

    /// Registers a client device: its certificate (PEM) is accepted on TLS listeners and the
    /// device's thing name for policies is `name`. Re-adding the same name replaces the cert.
    pub fn add_device(&self, name: &str, cert_pem: &str) -> Result<DeviceInfo, BrokerError> {
        if name.is_empty() || name.len() > 128 {
            return Err(BrokerError::Config(format!(
                "device name {name:?} must be 1 to 128 bytes"
            )));
        }
        let der = tls::cert_der_from_pem(cert_pem)?;
        tls::check_client_cert(&der)?;
        let fingerprint = tls::fingerprint(&der);
        {
            let mut devices = write(&self.shared.devices);
            if let Some(existing) = devices.get(&fingerprint)
                && existing.name != name
            {
                return Err(BrokerError::DeviceExists(existing.name.clone()));
            }
            let old: Vec<String> = devices
                .iter()
                .filter(|(_, d)| d.name == name)
                .map(|(f, _)| f.clone())
                .collect();
            for f in old {
                devices.remove(&f);
                self.shared.persist(StoreOp::DelDevice { fingerprint: f });
            }
            devices.insert(
                fingerprint.clone(),
                DeviceRecord {
                    name: name.to_string(),
                    cert_pem: cert_pem.to_string(),
                },
            );
        }
        self.shared.persist(StoreOp::PutDevice {
            fingerprint: fingerprint.clone(),
            name: name.to_string(),
            cert_pem: cert_pem.to_string(),
        });
        self.shared.device_gen.fetch_add(1, Ordering::AcqRel);
        tracing::info!(device = name, %fingerprint, "client device registered");
        Ok(DeviceInfo {
            name: name.to_string(),
            fingerprint,
        })
    }

    /// Unregisters a device; its open connections close on their next packet. Returns whether
    /// it was registered.
    pub fn remove_device(&self, name: &str) -> bool {
        let removed: Vec<String> = {
            let mut devices = write(&self.shared.devices);
            let fps: Vec<String> = devices
                .iter()
                .filter(|(_, d)| d.name == name)
                .map(|(f, _)| f.clone())
                .collect();
            for f in &fps {
                devices.remove(f);
            }
            fps
        };
        for f in &removed {
            self.shared.persist(StoreOp::DelDevice {
                fingerprint: f.clone(),
            });
        }
        self.shared.device_gen.fetch_add(1, Ordering::AcqRel);
        !removed.is_empty()
    }

    pub fn list_devices(&self) -> Vec<DeviceInfo> {
        let mut v: Vec<DeviceInfo> = read(&self.shared.devices)
            .iter()
            .map(|(f, d)| DeviceInfo {
                name: d.name.clone(),
                fingerprint: f.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Replaces the client device policies (Greengrass `deviceGroups`); every connection uses
    /// them from its next packet on.
    pub fn set_policies(&self, groups: &DeviceGroups) -> Result<(), BrokerError> {
        let compiled = PolicySet::compile(groups)?;
        *write(&self.shared.policies) = Arc::new(compiled);
        self.shared.policy_gen.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Sets (or with `None` clears) the embedder's `LocalMqtt → IotCore` leg: device messages
    /// matching such a mapping go to it from then on.
    pub fn set_cloud_bridge(&self, cloud: Option<Arc<dyn bridge::CloudBridge>>) {
        *write(&self.shared.cloud_bridge) = cloud;
    }

    /// Publishes a message the embedder's bridge brought in (`IotCore → LocalMqtt`): routed to
    /// matching subscribers like [`BrokerHandle::publish`], with its MQTT 5 properties, but
    /// never bridged again (no loop back to the bus or the cloud). Returns how many sessions got it.
    pub fn publish_bridged(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: lichen_mqtt::QoS,
        properties: lichen_mqtt::Properties,
    ) -> Result<usize, BrokerError> {
        let mut msg = self.server_msg(topic, payload, qos, false)?;
        if let Some(m) = Arc::get_mut(&mut msg) {
            let mut properties = properties;
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            m.expires_at = properties
                .message_expiry_interval
                .and_then(|s| Instant::now().checked_add(Duration::from_secs(u64::from(s))));
            m.properties = properties;
            m.from_bridge = true;
        }
        Ok(self.shared.route(msg).matched)
    }

    /// Replaces the bridge mappings (Greengrass `mqttTopicMapping`).
    pub fn set_bridge_mappings(
        &self,
        mappings: BTreeMap<String, BridgeMapping>,
    ) -> Result<(), BrokerError> {
        bridge::validate_mappings(&mappings)?;
        let list: Vec<(String, BridgeMapping)> = mappings.into_iter().collect();
        let mut tasks = lock(&self.bridge_tasks);
        for t in tasks.drain(..) {
            t.abort();
        }
        *write(&self.shared.bridge) = Arc::new(list.clone());
        *tasks = bridge::start(&self.shared, &list);
        Ok(())
    }

    /// Applies a built-in component's Greengrass configuration at run time.
    pub fn apply_component_config(
        &self,
        component: &str,
        config: &serde_json::Value,
    ) -> Result<(), BrokerError> {
        let mut c = BrokerConfig::default();
        c.apply_component_config(component, config)?;
        match component {
            "aws.greengrass.clientdevices.Auth" if config.get("deviceGroups").is_some() => {
                self.set_policies(&c.device_groups)
            }
            "aws.greengrass.clientdevices.mqtt.Bridge"
                if config.get("mqttTopicMapping").is_some() =>
            {
                self.set_bridge_mappings(c.mqtt_topic_mapping)
            }
            _ => Ok(()),
        }
    }

    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            connections: self.shared.connections.load(Ordering::Acquire),
            sessions: lock(&self.shared.sessions).len(),
            subscriptions: read(&self.shared.subs).len(),
            retained: read(&self.shared.retained).len(),
            queued_bytes: self.shared.queued_bytes.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            parked: self.shared.parking.as_ref().map_or(0, |p| p.len()),
        }
    }

    /// Messages dropped for `client_id`'s session since it started (0 for an unknown client).
    pub fn dropped_for(&self, client_id: &str) -> u64 {
        lock(&self.shared.sessions)
            .get(client_id)
            .map_or(0, |s| s.lock().dropped())
    }

    /// Stops accepting, closes every connection (MQTT 5 clients get Server shutting down),
    /// commits the store and returns.
    /// Takes `&self` so that an embedder holding the handle in an `Arc` can stop it too.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.closed.notify_waiters();
        self.shared
            .kick_all(lichen_mqtt::ReasonCode::ServerShuttingDown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            self.shared.closed.notify_waiters();
            self.shared
                .kick_all(lichen_mqtt::ReasonCode::ServerShuttingDown);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in lock(&self.tasks)
            .drain(..)
            .chain(lock(&self.bridge_tasks).drain(..))
        {
            t.abort();
        }
        if let Some(store) = &self.shared.store {
            self.shared.persist_drop_counts();
            store.flush();
            store.close();
        }
        tracing::info!("broker stopped");
    }
}
