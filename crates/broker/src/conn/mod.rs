//! One client connection: CONNECT and authorization, then a single task that reads packets,
//! answers them, and writes queued deliveries. Memory stays small while idle: an idle plain TCP
//! connection waits on socket readiness with no read buffer (TLS keeps one of 64 bytes), the
//! buffer adapts to traffic, and the write buffer is freed after each flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use lichen_mqtt::{
    ConnAck, Connect, DecodeError, Packet, Properties, Protocol, PubResp, ReasonCode, UnsubAck,
    Will,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::broker::Shared;
use crate::hooks::{AuthHandle, ClientIdentity, ClientRef, ConnectInfo, GateDecision};
use crate::policy::{Action, Grants};
use crate::session::{Session, Stage};
use crate::store::StoreOp;

mod flow;
mod park;

pub(crate) use park::{PARK_AFTER_MS, Parking, run as run_parking};

/// A connection's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether an idle connection on this transport may park (see `park`).
    const PARKABLE: bool;

    /// Resolves when a read would not block, so that an idle connection waits without a read
    /// buffer. May resolve early (the read that follows then waits as usual).
    fn readable(&self) -> impl std::future::Future<Output = ()> + Send + '_;

    /// A duplicate of the socket for parking (None: this transport does not park).
    fn try_clone_std(&self) -> Option<std::net::TcpStream> {
        None
    }
}

impl Transport for tokio::net::TcpStream {
    const PARKABLE: bool = true;

    fn try_clone_std(&self) -> Option<std::net::TcpStream> {
        use std::os::fd::AsFd;
        match self.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(std::net::TcpStream::from(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot duplicate a socket to park it");
                None
            }
        }
    }

    /// Polls readiness directly: the socket keeps the waker, so the waiting future holds only
    /// a reference (a `readable()` future would carry a waiter node in every idle task).
    fn readable(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        // An error shows up again in the read that follows.
        std::future::poll_fn(move |cx| self.poll_read_ready(cx).map(|_| ()))
    }
}

impl<T> Transport for Box<tokio_rustls::server::TlsStream<T>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// TLS state (and any decrypted bytes it holds) stays with its task.
    const PARKABLE: bool = false;

    /// TLS may already hold decrypted bytes the socket no longer shows: let the read wait.
    fn readable(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }
}

/// Who is at the other end, as established by the transport.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Authenticated by its client certificate: the thing name is the registered device name
    /// (or the certificate CN for a trusted-CA certificate).
    Device {
        thing: String,
        fingerprint: String,
        common_name: Option<String>,
    },
    /// Plain TCP: the client id serves as thing name for policy.
    Plain,
}

const MIN_READ: usize = 64;
const MAX_READ: usize = 64 * 1024;
/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 256 * 1024;

#[derive(Default)]
struct Aliases {
    inbound: HashMap<u16, Arc<str>>,
    outbound: HashMap<Arc<str>, u16>,
}

enum Step {
    Done,
    Flush,
}

/// Why the connection ends.
enum Close {
    /// Peer sent DISCONNECT (will discarded unless reason 0x04).
    Normal { with_will: bool },
    /// Socket closed or I/O error.
    Lost,
    /// We end it with this reason (sent in a DISCONNECT to v5 clients).
    Server(ReasonCode),
}

struct Conn<S> {
    shared: Arc<Shared>,
    stream: S,
    protocol: Protocol,
    session: Arc<Session>,
    conn_id: u64,
    client_id: Arc<str>,
    thing: Arc<str>,
    /// Certificate fingerprint of a device connection, re-checked when the registry changes.
    fingerprint: Option<Box<str>>,
    /// What a connection gate attached to the identity (hooks only).
    handle: Option<AuthHandle>,
    grants: Grants,
    grants_gen: u64,
    device_gen: u64,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    read_cap: usize,
    will: Option<Box<Will>>,
    expiry: u32,
    /// Topic alias maps, allocated on first use.
    aliases: Option<Box<Aliases>>,
    out_alias_max: u16,
    client_receive_max: u16,
    client_max_packet: usize,
    /// Store sequence number that must be committed before the write buffer (holding acks of
    /// stored messages) is sent.
    durable: u64,
    /// MQTT 5 QoS 1 PUBLISHes received whose PUBACK is not written to the socket yet (bounded
    /// by our Receive Maximum).
    unacked_qos1: u16,
    /// When the write buffer was last sent (ms on `Shared::now_ms`), for the idle time.
    last_tx_ms: u64,
    /// Park as soon as idle (fresh, or back from a long park), not after `PARK_AFTER_MS`.
    park_soon: bool,
}

/// How the serving loop stops.
enum Exit {
    Close(Close),
    /// Idle: the connection parks (plain TCP only).
    Park,
}

async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max: usize,
) -> Result<Option<Connect>, DecodeError> {
    loop {
        if let Some((p, used)) = lichen_mqtt::decode(rbuf, Protocol::V5, max)? {
            rbuf.advance(used);
            return match p {
                Packet::Connect(c) => Ok(Some(*c)),
                _ => Err(DecodeError::Protocol("first packet is not CONNECT")),
            };
        }
        rbuf.reserve(MIN_READ);
        match stream.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn send_connack<S: AsyncWrite + Unpin>(stream: &mut S, protocol: Protocol, code: ReasonCode) {
    let p = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        properties: Properties::default(),
    });
    if let Ok(bytes) = lichen_mqtt::to_vec(&p, protocol) {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
    }
}

/// Runs a connection to its end. The caller counted it in `shared.connections`; this
/// uncounts it when done.
///
/// The CONNECT phase runs in a boxed future, and the established connection is served on a
/// task of its own whose future is just [`drive`]'s (the one awaiting `run` ends): this keeps a
/// connection's long-lived memory small (an awaited inner future would sit beside the outer
/// one's copy of the connection).
pub fn run<S>(
    shared: Arc<Shared>,
    stream: S,
    identity: Identity,
    peer: std::net::SocketAddr,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Transport,
{
    let counter = shared.clone();
    let setup = Box::pin(establish(shared, stream, identity, peer));
    async move {
        match setup.await {
            Some((mut conn, keep_alive)) => {
                conn.start(keep_alive);
                tokio::spawn(drive(conn));
            }
            None => {
                counter.connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Serves an established connection until it closes (then uncounts it) or parks (it stays
/// counted; `park` resumes it through this function on a new task).
async fn drive<S: Transport>(mut conn: Conn<S>) {
    loop {
        match conn.serve().await {
            Exit::Close(close) => {
                let shared = conn.shared.clone();
                Box::pin(conn.finish(close)).await;
                shared.connections.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            Exit::Park => match conn.park() {
                None => return,
                Some(c) => {
                    conn = c;
                    conn.park_soon = false;
                }
            },
        }
    }
}

/// Reads and authorizes CONNECT, attaches the session and queues the CONNACK.
async fn establish<S>(
    shared: Arc<Shared>,
    mut stream: S,
    identity: Identity,
    peer: std::net::SocketAddr,
) -> Option<(Conn<S>, Duration)>
where
    S: Transport,
{
    let limits = shared.limits.clone();
    let max_packet = limits.max_packet_size as usize;
    let mut rbuf = BytesMut::new();
    let connect = tokio::time::timeout(
        Duration::from_secs(limits.connect_timeout_secs),
        read_connect(&mut stream, &mut rbuf, max_packet),
    )
    .await;
    let c = match connect {
        Ok(Ok(Some(c))) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad CONNECT");
            if let DecodeError::UnsupportedProtocol { .. } = e {
                send_connack(
                    &mut stream,
                    Protocol::V311,
                    ReasonCode::UnsupportedProtocolVersion,
                )
                .await;
            }
            return None;
        }
        _ => return None,
    };
    let protocol = c.protocol;
    let v5 = protocol.is_v5();
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // Client identifier.
    let mut assigned = None;
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            send_connack(&mut stream, protocol, ReasonCode::ClientIdentifierNotValid).await;
            return None;
        }
        let id = format!("lichen-{conn_id:x}-{:x}", std::process::id());
        assigned = Some(id.clone());
        Arc::from(id)
    } else {
        Arc::from(c.client_id.as_str())
    };
    let (mut thing, fingerprint, common_name): (Arc<str>, Option<Box<str>>, Option<String>) =
        match identity {
            Identity::Device {
                thing,
                fingerprint,
                common_name,
            } => (Arc::from(thing), Some(fingerprint.into()), common_name),
            Identity::Plain => (client_id.clone(), None, None),
        };
    let mut handle = None;
    if let Some(gate) = shared.hooks.gate.clone() {
        let info = ConnectInfo {
            fingerprint: fingerprint.as_deref().map(str::to_string),
            common_name,
            client_id: client_id.to_string(),
            peer,
            protocol,
        };
        let decision = tokio::time::timeout(
            Duration::from_secs(limits.connect_timeout_secs),
            gate.admit(info),
        )
        .await;
        match decision {
            Ok(GateDecision::Admit(a)) => {
                thing = Arc::from(a.thing);
                handle = a.handle;
            }
            Ok(GateDecision::Refuse(reason)) => {
                tracing::info!(%peer, client = %client_id, %reason, "connection refused by the gate");
                send_connack(&mut stream, protocol, ReasonCode::NotAuthorized).await;
                return None;
            }
            Err(_) => {
                tracing::warn!(%peer, client = %client_id, "connection gate did not answer in time");
                send_connack(&mut stream, protocol, ReasonCode::ServerUnavailable).await;
                return None;
            }
        }
    }
    let grants_gen = shared.policy_gen.load(Ordering::Acquire);
    let device_gen = shared.device_gen.load(Ordering::Acquire);
    let authorizer = shared.hooks.authorizer.clone();
    let grants = if authorizer.is_some() {
        Grants::default()
    } else {
        shared.policies().grants_for(&thing)
    };
    let who = ClientRef {
        client_id: &client_id,
        thing: &thing,
        handle: handle.as_ref(),
    };
    let allows = |action: Action<'_>| match &authorizer {
        Some(a) => a.allows(who, action),
        None => grants.allows(action, &thing, &client_id),
    };
    let mut code = ReasonCode::Success;
    if c.properties.authentication_method.is_some() {
        code = ReasonCode::BadAuthenticationMethod;
    } else if !allows(Action::Connect {
        client_id: &client_id,
    }) {
        code = ReasonCode::NotAuthorized;
    } else if shared.connections.load(Ordering::Relaxed) > limits.max_connections {
        code = ReasonCode::ServerBusy;
    } else if let Some(w) = &c.will {
        if lichen_bus::validate_topic_name(&w.topic).is_err() {
            code = ReasonCode::TopicNameInvalid;
        } else if flow::is_sys_topic(&w.topic) || !allows(Action::Publish { topic: &w.topic }) {
            code = ReasonCode::NotAuthorized;
        }
    }
    if code != ReasonCode::Success {
        tracing::info!(%peer, client = %client_id, thing = %thing, ?code, "connection refused");
        send_connack(&mut stream, protocol, code).await;
        return None;
    }
    let requested = if v5 {
        c.properties.session_expiry_interval.unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        u32::MAX
    };
    let expiry = requested.min(limits.max_session_expiry);
    let (session, present) =
        match shared.attach(&client_id, protocol, c.clean_start, expiry, conn_id) {
            Ok(x) => x,
            Err(code) => {
                send_connack(&mut stream, protocol, code).await;
                return None;
            }
        };
    // A resumed session keeps its own copy of the client id: use it, so that the connection
    // holds no second allocation of the same string.
    if *thing == *client_id {
        thing = session.client_id.clone();
    }
    let client_id = session.client_id.clone();
    let mut props = Properties::default();
    if v5 {
        props.receive_maximum = Some(limits.receive_maximum);
        props.maximum_packet_size = Some(limits.max_packet_size);
        props.topic_alias_maximum = Some(limits.topic_alias_maximum);
        props.retain_available = Some(1);
        props.wildcard_subscription_available = Some(1);
        props.subscription_identifier_available = Some(1);
        props.shared_subscription_available = Some(1);
        props.assigned_client_identifier = assigned;
        if expiry != requested {
            props.session_expiry_interval = Some(expiry);
        }
    }
    // Keep alive: at most `max_keep_alive_secs`; none (0) counts as longer than any. MQTT 5
    // clients are told the lowered value (Server Keep Alive); v3.1.1 has no way to say it.
    let max_keep_alive = limits.max_keep_alive_secs.max(1);
    let keep_alive_secs = if c.keep_alive == 0 {
        max_keep_alive
    } else {
        c.keep_alive.min(max_keep_alive)
    };
    if v5 && keep_alive_secs != c.keep_alive {
        props.server_keep_alive = Some(keep_alive_secs);
    }
    let mut conn = Conn {
        shared: shared.clone(),
        stream,
        protocol,
        session,
        conn_id,
        client_id,
        thing,
        fingerprint,
        handle,
        grants,
        grants_gen,
        device_gen,
        rbuf,
        wbuf: Vec::new(),
        read_cap: MIN_READ,
        will: c.will.map(Box::new),
        expiry,
        aliases: None,
        out_alias_max: if v5 {
            c.properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(limits.outgoing_topic_aliases)
        } else {
            0
        },
        client_receive_max: c.properties.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet: c
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        durable: 0,
        unacked_qos1: 0,
        last_tx_ms: shared.now_ms(),
        park_soon: true,
    };
    conn.send(&Packet::ConnAck(ConnAck {
        session_present: present,
        reason_code: ReasonCode::Success,
        properties: props,
    }));
    tracing::debug!(%peer, client = %conn.client_id, thing = %conn.thing, ?protocol, present, "connected");
    if shared.hooks.track {
        let id = conn.identity();
        crate::broker::lock(&shared.connected).insert(id.client_id.clone(), id.clone());
        if let Some(events) = &shared.hooks.events {
            events.connected(&id, peer);
        }
    }
    let keep_alive = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
    Some((conn, keep_alive))
}

impl<S: Transport> Conn<S> {
    fn v5(&self) -> bool {
        self.protocol.is_v5()
    }

    /// The identity hooks see (built only when hooks are set).
    fn identity(&self) -> ClientIdentity {
        ClientIdentity {
            client_id: self.client_id.clone(),
            thing: self.thing.clone(),
            fingerprint: self.fingerprint.as_deref().map(Arc::from),
            handle: self.handle.clone(),
            connection: self.conn_id,
        }
    }

    fn send(&mut self, p: &Packet) {
        if let Err(e) = lichen_mqtt::encode(p, self.protocol, &mut self.wbuf) {
            tracing::warn!(client = %self.client_id, error = %e, "could not encode {}", p.name());
        }
    }

    async fn flush(&mut self) -> Result<(), Close> {
        self.flush_with(true).await
    }

    /// Sends the write buffer; with `wakeable`, a wake that ends the connection (a kick or a
    /// takeover) stops a write the client does not take.
    async fn flush_with(&mut self, wakeable: bool) -> Result<(), Close> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.durable != 0 {
            if let Some(store) = &self.shared.store
                && store.committed() < self.durable
            {
                Box::pin(store.wait_committed(self.durable)).await;
            }
            self.durable = 0;
        }
        // Written piecewise so that a client that stops reading can still be disconnected
        // (a kick or takeover wakes the session) instead of holding this task in a write.
        let mut sent = 0;
        while sent < self.wbuf.len() {
            tokio::select! {
                biased;
                r = self.stream.write(&self.wbuf[sent..]) => match r {
                    Ok(0) | Err(_) => return Err(Close::Lost),
                    Ok(n) => sent += n,
                },
                _ = self.session.wake.notified(), if wakeable => {
                    if let Some(code) = self.ended() {
                        self.wbuf.drain(..sent);
                        return Err(Close::Server(code));
                    }
                }
            }
        }
        if let Err(e) = self.stream.flush().await {
            tracing::debug!(client = %self.client_id, error = %e, "flush failed");
            return Err(Close::Lost);
        }
        // Free the buffer: idle connections hold none.
        self.wbuf = Vec::new();
        self.last_tx_ms = self.shared.now_ms();
        self.unacked_qos1 = 0;
        Ok(())
    }

    /// Why the connection must end now, if it must: the session was taken over, it was kicked,
    /// or the broker is shutting down. A kick is consumed.
    fn ended(&self) -> Option<ReasonCode> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Some(ReasonCode::ServerShuttingDown);
        }
        let mut st = self.session.lock();
        if st.conn != self.conn_id {
            return Some(ReasonCode::SessionTakenOver);
        }
        st.kick.take()
    }

    /// What a new connection does once before serving.
    fn start(&mut self, keep_alive: Duration) {
        self.resend_inflight();
        self.session
            .last_rx_ms
            .store(self.shared.now_ms(), Ordering::Relaxed);
        self.session.keepalive_ms.store(
            u32::try_from(keep_alive.as_millis()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }

    async fn serve(&mut self) -> Exit {
        let shared = self.shared.clone();
        let session = self.session.clone();
        let exit = self.serve_loop(&shared, &session).await;
        session.park_wanted.store(false, Ordering::Relaxed);
        exit
    }

    async fn serve_loop(&mut self, shared: &Arc<Shared>, session: &Arc<Session>) -> Exit {
        loop {
            if shared.closing.load(Ordering::Acquire) {
                return Exit::Close(Close::Server(ReasonCode::ServerShuttingDown));
            }
            if self.should_refill() {
                // Rare: boxed so the idle task does not carry this future's space.
                Box::pin(self.refill()).await;
            }
            let more = match self.pump() {
                Ok(more) => more,
                Err(code) => return Exit::Close(Close::Server(code)),
            };
            // The busy paths run in boxed futures, allocated only while they run, so the task
            // of an idle connection holds just the state of the wait below.
            if !self.wbuf.is_empty()
                && let Err(c) = Box::pin(self.flush()).await
            {
                return Exit::Close(c);
            }
            if self.rbuf.is_empty() && !more {
                // Idle: wait until the socket has bytes without holding a read buffer (a plain
                // TCP stream tells readiness; a TLS stream resolves at once and its read waits).
                self.rbuf = BytesMut::new();
                if self.may_park() {
                    return Exit::Park;
                }
                tokio::select! {
                    biased;
                    _ = session.wake.notified() => {
                        session.park_wanted.store(false, Ordering::Relaxed);
                        continue;
                    }
                    _ = self.stream.readable() => {
                        session.park_wanted.store(false, Ordering::Relaxed);
                    }
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 32 {
                if self.rbuf.is_empty() {
                    self.rbuf = BytesMut::with_capacity(self.read_cap);
                } else {
                    self.rbuf.reserve(self.read_cap);
                }
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            tokio::select! {
                biased;
                // Work queued, a takeover, a keepalive timeout or shutdown (see `pump`).
                _ = session.wake.notified() => continue,
                r = self.stream.read_buf(&mut self.rbuf) => {
                    let n = match r {
                        Ok(0) | Err(_) => return Exit::Close(Close::Lost),
                        Ok(n) => n,
                    };
                    session.last_rx_ms.store(shared.now_ms(), Ordering::Relaxed);
                    if n == spare {
                        self.read_cap = (self.read_cap * 2).min(MAX_READ);
                    } else if n < self.read_cap / 4 {
                        self.read_cap = (self.read_cap / 2).max(MIN_READ);
                    }
                    if let Err(c) = Box::pin(self.process()).await {
                        return Exit::Close(c);
                    }
                    if self.rbuf.is_empty() {
                        self.rbuf = BytesMut::new();
                    }
                }
                // More deliveries are ready: go round again once the socket has nothing for us.
                _ = std::future::ready(()), if more => continue,
            }
        }
    }

    /// Decodes and handles every whole packet in the read buffer.
    async fn process(&mut self) -> Result<(), Close> {
        loop {
            match self.process_some()? {
                Step::Done => return Ok(()),
                Step::Flush => self.flush().await?,
            }
        }
    }

    /// Handles packets until the buffer is used up or something must be awaited.
    fn process_some(&mut self) -> Result<Step, Close> {
        let max = self.shared.limits.max_packet_size as usize;
        loop {
            let (packet, used) = match lichen_mqtt::decode(&self.rbuf, self.protocol, max) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(Step::Done),
                Err(e) => {
                    tracing::info!(client = %self.client_id, error = %e, "malformed packet");
                    return Err(Close::Server(e.reason_code()));
                }
            };
            self.rbuf.advance(used);
            self.refresh_auth()?;
            self.handle(packet)?;
            if self.wbuf.len() >= WRITE_HIGH_WATER {
                return Ok(Step::Flush);
            }
        }
    }

    /// Re-reads policies and the device registry when they changed (effective on the next
    /// packet).
    fn refresh_auth(&mut self) -> Result<(), Close> {
        let g = self.shared.policy_gen.load(Ordering::Acquire);
        if g != self.grants_gen && self.shared.hooks.authorizer.is_none() {
            self.grants = self.shared.policies().grants_for(&self.thing);
            self.grants_gen = g;
        }
        let d = self.shared.device_gen.load(Ordering::Acquire);
        if d != self.device_gen {
            self.device_gen = d;
            if let Some(fingerprint) = &self.fingerprint
                && self.shared.device_by_fingerprint(fingerprint).is_none()
                && !self.shared.trusts_cas()
            {
                return Err(Close::Server(ReasonCode::NotAuthorized));
            }
        }
        Ok(())
    }

    fn allows(&self, action: Action<'_>) -> bool {
        match &self.shared.hooks.authorizer {
            None => self.grants.allows(action, &self.thing, &self.client_id),
            Some(a) => a.allows(
                ClientRef {
                    client_id: &self.client_id,
                    thing: &self.thing,
                    handle: self.handle.as_ref(),
                },
                action,
            ),
        }
    }

    /// Handles one packet.
    fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(r) => self.on_ack(r.packet_id, Stage::Ack),
            Packet::PubRec(r) => {
                let pos = self.session.lock().find_inflight(r.packet_id);
                match pos {
                    Some(_) if r.reason_code.is_error() => self.on_ack(r.packet_id, Stage::Rec),
                    Some(i) => {
                        let mut st = self.session.lock();
                        let mut stored = 0;
                        if let Some(inf) = st.flow_mut().inflight.get_mut(i) {
                            inf.stage = Stage::Comp;
                            stored = inf.delivery.store_id;
                        }
                        drop(st);
                        if stored != 0 {
                            // The PUBREL goes out once the stage is stored: after a crash the
                            // client gets PUBREL again, never the message a second time.
                            let seq = self.shared.persist(StoreOp::SetInflight {
                                id: stored,
                                packet_id: r.packet_id,
                                stage: Stage::Comp,
                            });
                            self.durable = self.durable.max(seq);
                        }
                        self.send(&Packet::PubRel(PubResp::new(
                            r.packet_id,
                            ReasonCode::Success,
                        )));
                    }
                    None => self.send(&Packet::PubRel(PubResp::new(
                        r.packet_id,
                        ReasonCode::PacketIdentifierNotFound,
                    ))),
                }
            }
            Packet::PubRel(r) => {
                let known = {
                    let mut st = self.session.lock();
                    let pos = st
                        .flow()
                        .incoming_qos2
                        .iter()
                        .position(|id| *id == r.packet_id);
                    pos.map(|i| st.flow_mut().incoming_qos2.swap_remove(i))
                        .is_some()
                };
                if known && self.persistent_qos2() {
                    // PUBCOMP once the release is stored, so a later PUBLISH reusing the packet
                    // id is not mistaken for a resend after a crash.
                    let seq = self.shared.persist(StoreOp::DelIncoming {
                        client_id: self.client_id.clone(),
                        packet_id: r.packet_id,
                    });
                    self.durable = self.durable.max(seq);
                }
                let code = if known {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send(&Packet::PubComp(PubResp::new(r.packet_id, code)));
            }
            Packet::PubComp(r) => self.on_ack(r.packet_id, Stage::Comp),
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                let mut codes = Vec::with_capacity(u.filters.len());
                for f in &u.filters {
                    codes.push(
                        if lichen_bus::validate_topic_filter(strip_share(f)).is_err() {
                            ReasonCode::TopicFilterInvalid
                        } else if self.shared.unsubscribe(&self.session, f) {
                            ReasonCode::Success
                        } else {
                            ReasonCode::NoSubscriptionExisted
                        },
                    );
                }
                let reason_codes = if self.v5() { codes } else { Vec::new() };
                self.send(&Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    reason_codes,
                    properties: Properties::default(),
                }));
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry_interval {
                    if self.expiry == 0 && e != 0 {
                        return Err(Close::Server(ReasonCode::ProtocolError));
                    }
                    let e = e.min(self.shared.limits.max_session_expiry);
                    self.expiry = e;
                    self.session.lock().expiry = e;
                }
                return Err(Close::Normal {
                    with_will: d.reason_code == ReasonCode::DisconnectWithWill,
                });
            }
            Packet::Connect(_) => return Err(Close::Server(ReasonCode::ProtocolError)),
            Packet::Auth(_) => return Err(Close::Server(ReasonCode::ProtocolError)),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Close::Server(ReasonCode::ProtocolError));
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, packet_id: u16, stage: Stage) {
        let mut st = self.session.lock();
        if let Some(i) = st.find_inflight(packet_id)
            && st.flow().inflight[i].stage == stage
            && let Some(done) = st.flow_mut().inflight.remove(i)
        {
            st.release(&done.delivery, &self.shared.queued_bytes);
            drop(st);
            if done.delivery.store_id != 0 {
                self.shared.persist(StoreOp::DelQueued {
                    id: done.delivery.store_id,
                });
            }
        }
    }
}

fn strip_share(f: &str) -> &str {
    crate::topic::split_shared(f).map(|(_, p)| p).unwrap_or(f)
}
