//! One IPC connection: the CONNECT handshake, connection-level messages, and the streams
//! multiplexed on it.
//!
//! Bounds per connection:
//! - inbound: one frame of at most `ipc.maxFrameBytes` (prelude checked before allocating);
//! - outbound: [`OUTBOUND_QUEUE`] queued writes (a response, or a batch of up to 64 events
//!   and about 1 MiB) and [`OUTBOUND_QUEUE_BYTES`] queued bytes (a larger single frame
//!   waits for the whole budget);
//!   when it is full, subscription forwarders wait and their bus queues drop their oldest
//!   messages, and the reader stops reading new requests from this client;
//! - at most [`MAX_STREAMS_PER_CONNECTION`] open streams (subscriptions and running slow
//!   operations); beyond it new requests get a ServiceError;
//! - the client has [`CONNECT_TIMEOUT`] after accept to complete CONNECT; until then the
//!   connection is pending (bounded per uid and in total, see [`crate::admission`]) and
//!   buffers at most [`PENDING_READ_CHUNK`] at a time; buffers are allocated on first use.
//!
//! A malformed frame, a bad CRC or an oversized frame gets a PROTOCOL_ERROR and closes this
//! connection only. When a connection ends, every stream task it started is aborted, which
//! drops its bus subscriptions and deployment-hook registrations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lichen_eventstream::{Decoder, Frame, Header, MessageType, RpcMessage, flags, headers};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::admission::{Admission, PendingSlot, Refusal};
use crate::error::OpError;
use crate::ops::{self, Caller, EventSink, NAMESPACE, Operation, Reply, Shared, StreamRun};

pub const OUTBOUND_QUEUE: usize = 1024;
/// Bytes of encoded frames queued for one connection's socket.
pub const OUTBOUND_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// The byte budget is kept in units of this many bytes (semaphore permits).
const BUDGET_UNIT: usize = 1024;

/// The sending side of a connection's write queue, bounded in writes and in bytes.
#[derive(Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

/// The connection is gone.
#[derive(Debug)]
pub(crate) struct Closed;

impl Outbound {
    fn channel() -> (Outbound, mpsc::Receiver<(Bytes, OwnedSemaphorePermit)>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let budget = Arc::new(Semaphore::new(OUTBOUND_QUEUE_BYTES / BUDGET_UNIT));
        (Outbound { tx, budget }, rx)
    }

    /// Queues encoded frames, waiting while the queue is full in writes or bytes.
    pub async fn send(&self, frames: Bytes) -> Result<(), Closed> {
        let units = frames
            .len()
            .div_ceil(BUDGET_UNIT)
            .clamp(1, OUTBOUND_QUEUE_BYTES / BUDGET_UNIT) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| Closed)?;
        self.tx.send((frames, permit)).await.map_err(|_| Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Clients send CONNECT right after connecting; a pending connection holds a scarce slot.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read reservation before CONNECT (a CONNECT frame is a few hundred bytes; a larger one
/// still arrives, in more reads).
pub const PENDING_READ_CHUNK: usize = 4 * 1024;
/// After the client goes away or errs, queued replies get this long to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 64 * 1024;
const WRITE_COALESCE: usize = 256 * 1024;

enum Flow {
    Continue,
    Close,
}

/// What admits a connection: the pending bounds, and the permit it needs once authenticated.
pub(crate) struct Gate {
    pub admission: Arc<Admission>,
    pub limit: Arc<Semaphore>,
    pub max_connections: usize,
    /// The peer's uid (`SO_PEERCRED`).
    pub uid: u32,
}

pub(crate) async fn run(stream: UnixStream, shared: Arc<Shared>, gate: Gate, slot: PendingSlot) {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = Outbound::channel();
    let writer = write_loop(wr, rx);
    let conn = Conn {
        shared,
        tx,
        caller: None,
        streams: HashMap::new(),
        last_stream_id: 0,
        gate,
        pending: Some(slot),
        permit: None,
        component_slot: None,
    };
    let reader = conn.read_loop(rd);
    tokio::pin!(writer);
    tokio::select! {
        _ = &mut writer => {}
        _ = reader => {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, writer).await;
        }
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<(Bytes, OwnedSemaphorePermit)>) {
    // Allocated on the first write that needs coalescing, not per idle connection.
    let mut buf = BytesMut::new();
    // Budget is given back only once the bytes are written.
    let mut permits = Vec::new();
    while let Some((first, permit)) = rx.recv().await {
        if rx.is_empty() {
            if wr.write_all(&first).await.is_err() {
                return;
            }
            drop((first, permit));
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&first);
        drop(first);
        permits.push(permit);
        while buf.len() < WRITE_COALESCE {
            match rx.try_recv() {
                Ok((more, permit)) => {
                    buf.extend_from_slice(&more);
                    permits.push(permit);
                }
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        permits.clear();
        if buf.capacity() > 4 * WRITE_COALESCE {
            // One huge frame must not pin its buffer for the connection's lifetime.
            buf = BytesMut::new();
        }
    }
    let _ = wr.shutdown().await;
}

struct Conn {
    shared: Arc<Shared>,
    tx: Outbound,
    caller: Option<Caller>,
    streams: HashMap<i32, AbortHandle>,
    last_stream_id: i32,
    gate: Gate,
    /// Held until CONNECT succeeds.
    pending: Option<PendingSlot>,
    /// Held from CONNECT on: one of `ipc.maxConnections`.
    permit: Option<OwnedSemaphorePermit>,
    /// Held from CONNECT on: one of the component's
    /// [`crate::admission::MAX_CONNECTIONS_PER_COMPONENT`].
    component_slot: Option<crate::admission::ComponentSlot>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for (_, h) in self.streams.drain() {
            h.abort();
        }
    }
}

fn encode(msg: RpcMessage, max_frame: usize) -> Bytes {
    let mut out = BytesMut::new();
    match msg.encode(&mut out, max_frame) {
        Ok(()) => out.freeze(),
        Err(e) => {
            tracing::warn!(error = %e, "IPC message could not be encoded");
            Bytes::new()
        }
    }
}

fn error_message(stream_id: i32, e: &OpError, max_frame: usize) -> Bytes {
    let body = serde_json::to_vec(&e.to_json()).unwrap_or_default();
    let mut out = BytesMut::new();
    let encoded = lichen_eventstream::encode_json(
        &mut out,
        MessageType::ApplicationError,
        flags::TERMINATE_STREAM,
        stream_id,
        &e.shape.model_type(),
        &body,
        max_frame,
    );
    match encoded {
        Ok(()) => out.freeze(),
        Err(err) if e.message.len() > 256 => {
            // A long message (it may quote the request) under a small frame limit.
            let mut short = e.clone();
            short.message = format!(
                "{}… ({err})",
                e.message.chars().take(128).collect::<String>()
            );
            short.resource = None;
            error_message(stream_id, &short, max_frame)
        }
        Err(err) => {
            tracing::warn!(error = %err, "IPC error reply could not be encoded");
            Bytes::new()
        }
    }
}

/// Encodes the reply of `operation` on stream `id`; for a stream, also what runs its events.
fn encode_reply(
    shared: &Shared,
    tx: &Outbound,
    id: i32,
    operation: &Operation,
    result: Result<Reply, OpError>,
) -> (Bytes, Option<(StreamRun, EventSink)>) {
    let max = shared.max_frame;
    let op = operation.name();
    let (value, flags, stream) = match result {
        Ok(Reply::Unary(v)) => (v, flags::TERMINATE_STREAM, None),
        Ok(Reply::Stream { initial, run }) => {
            let sink = EventSink {
                tx: tx.clone(),
                stream_id: id,
                model_type: operation
                    .stream_event_shape()
                    .unwrap_or("aws.greengrass#Unknown"),
                max_frame: max,
            };
            (initial, 0, Some((run, sink)))
        }
        Err(e) => {
            tracing::debug!(op, shape = e.shape.name(), message = %e.message, "IPC operation failed");
            return (error_message(id, &e, max), None);
        }
    };
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let mut out = BytesMut::new();
    let encoded = lichen_eventstream::encode_json(
        &mut out,
        MessageType::ApplicationMessage,
        flags,
        id,
        operation.response_type(),
        &body,
        max,
    );
    match encoded {
        Ok(()) => (out.freeze(), stream),
        Err(e) => (
            error_message(
                id,
                &OpError::service(format!("the {op} response is too large: {e}")),
                max,
            ),
            None,
        ),
    }
}

impl Conn {
    async fn send(&self, bytes: Bytes) -> bool {
        !bytes.is_empty() && self.tx.send(bytes).await.is_ok()
    }

    async fn connection_error(&self, ty: MessageType, message: &str) {
        match &self.caller {
            Some(c) => {
                tracing::info!(component = %c.component, message = ?message, "closing IPC connection")
            }
            // Anyone can open the socket: counted and logged in aggregate.
            None => self
                .gate
                .admission
                .refused(Refusal::BadHandshake, self.gate.uid),
        }
        self.send_connection_error(ty, message).await;
    }

    async fn send_connection_error(&self, ty: MessageType, message: &str) {
        let body = serde_json::to_vec(&json!({ "message": message })).unwrap_or_default();
        let msg = RpcMessage::new(ty, 0, 0)
            .with_header(Header::string(
                headers::CONTENT_TYPE,
                headers::CONTENT_TYPE_JSON,
            ))
            .with_payload(body);
        self.send(encode(msg, self.shared.max_frame)).await;
    }

    async fn read_loop(mut self, mut rd: OwnedReadHalf) {
        let mut decoder = Decoder::new(self.shared.max_frame);
        let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Flow::Close = self.on_frame(frame).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.connection_error(
                            MessageType::ProtocolError,
                            &format!("malformed frame: {e}"),
                        )
                        .await;
                        return;
                    }
                }
            }
            let buf = decoder.buffer_mut();
            let chunk = if self.caller.is_none() {
                PENDING_READ_CHUNK
            } else {
                READ_CHUNK
            };
            if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
            let read = if self.caller.is_none() {
                match tokio::time::timeout_at(connect_deadline, rd.read_buf(buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.gate
                            .admission
                            .refused(Refusal::TimedOut, self.gate.uid);
                        return;
                    }
                }
            } else {
                rd.read_buf(buf).await
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Flow {
        let msg = match RpcMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => {
                self.connection_error(MessageType::ProtocolError, &e.to_string())
                    .await;
                return Flow::Close;
            }
        };
        if self.caller.is_none() {
            return self.on_connect(msg).await;
        }
        if msg.stream_id != 0 {
            return match msg.message_type {
                MessageType::ApplicationMessage | MessageType::ApplicationError => {
                    self.on_stream(msg).await
                }
                other => {
                    self.connection_error(
                        MessageType::ProtocolError,
                        &format!("message type {other:?} is not valid on a stream"),
                    )
                    .await;
                    Flow::Close
                }
            };
        }
        match msg.message_type {
            MessageType::Ping => {
                let mut pong = RpcMessage::new(MessageType::PingResponse, 0, 0);
                pong.headers = msg
                    .headers
                    .into_iter()
                    .filter(|h| !h.name.starts_with(':'))
                    .collect();
                pong.payload = msg.payload;
                self.send(encode(pong, self.shared.max_frame)).await;
                Flow::Continue
            }
            MessageType::PingResponse => Flow::Continue,
            MessageType::Connect => {
                self.connection_error(MessageType::ProtocolError, "already connected")
                    .await;
                Flow::Close
            }
            other => {
                self.connection_error(
                    MessageType::ServerError,
                    &format!("unexpected connection-level message {other:?}"),
                )
                .await;
                Flow::Close
            }
        }
    }

    async fn on_connect(&mut self, msg: RpcMessage) -> Flow {
        if msg.message_type != MessageType::Connect || msg.stream_id != 0 {
            self.connection_error(
                MessageType::ProtocolError,
                "the first message must be CONNECT",
            )
            .await;
            return Flow::Close;
        }
        let version_ok = msg.header_str(headers::VERSION) == Some(headers::PROTOCOL_VERSION);
        let token = serde_json::from_slice::<Value>(&msg.payload)
            .ok()
            .and_then(|v| {
                v.get("authToken")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let component = if version_ok {
            token.and_then(|t| self.shared.core.authenticate(&t))
        } else {
            None
        };
        // Authenticated: the component must have a place left, then leave the pending
        // bounds for one of `ipc.maxConnections`.
        if let Some(c) = &component {
            match self.gate.admission.claim_component(c, self.gate.uid) {
                Some(slot) => self.component_slot = Some(slot),
                None => {
                    let message = format!(
                        "component {c} already has {} authenticated IPC connections (the per-component limit); close one first",
                        crate::admission::MAX_CONNECTIONS_PER_COMPONENT
                    );
                    self.send_connection_error(MessageType::ServerError, &message)
                        .await;
                    return Flow::Close;
                }
            }
        }
        let component = match component {
            Some(c) => match self.gate.limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.permit = Some(permit);
                    self.pending = None;
                    Some(c)
                }
                Err(_) => {
                    self.gate
                        .admission
                        .refused(Refusal::OverLimit, self.gate.uid);
                    let message = format!(
                        "IPC connection limit reached ({} connections)",
                        self.gate.max_connections
                    );
                    self.send_connection_error(MessageType::ServerError, &message)
                        .await;
                    return Flow::Close;
                }
            },
            None => None,
        };
        let accepted = component.is_some();
        let ack = RpcMessage::new(
            MessageType::ConnectAck,
            if accepted {
                flags::CONNECTION_ACCEPTED
            } else {
                0
            },
            0,
        );
        self.send(encode(ack, self.shared.max_frame)).await;
        match component {
            Some(c) => {
                tracing::debug!(component = %c, "IPC client connected");
                self.caller = Some(Caller::new(c));
                Flow::Continue
            }
            None => {
                tracing::debug!(
                    version_ok,
                    "IPC connection refused: unknown token or bad :version"
                );
                self.gate
                    .admission
                    .refused(Refusal::BadHandshake, self.gate.uid);
                Flow::Close
            }
        }
    }

    async fn on_stream(&mut self, msg: RpcMessage) -> Flow {
        let id = msg.stream_id;
        if let Some(handle) = self.streams.get(&id) {
            if msg.terminates() {
                let finished = handle.is_finished();
                handle.abort();
                self.streams.remove(&id);
                if !finished {
                    let close = RpcMessage::new(
                        MessageType::ApplicationMessage,
                        flags::TERMINATE_STREAM,
                        id,
                    );
                    self.send(encode(close, self.shared.max_frame)).await;
                }
            }
            // Greengrass operations take no client events on an open stream: ignored.
            return Flow::Continue;
        }
        if id <= self.last_stream_id {
            // A stream that has already ended (e.g. the client's close crossing our
            // TERMINATE): nothing to do.
            return Flow::Continue;
        }
        self.last_stream_id = id;
        let Some(op_full) = msg.header_str(headers::OPERATION) else {
            self.connection_error(
                MessageType::ProtocolError,
                &format!("stream {id} starts without an operation header"),
            )
            .await;
            return Flow::Close;
        };
        let op = op_full
            .strip_prefix(NAMESPACE)
            .unwrap_or(op_full)
            .to_string();
        let Some(caller) = self.caller.clone() else {
            return Flow::Close;
        };
        if self.streams.len() >= MAX_STREAMS_PER_CONNECTION {
            self.streams.retain(|_, h| !h.is_finished());
        }
        if self.streams.len() >= MAX_STREAMS_PER_CONNECTION {
            let e = OpError::service(format!(
                "too many open streams on this connection (limit {MAX_STREAMS_PER_CONNECTION})"
            ));
            self.send(error_message(id, &e, self.shared.max_frame))
                .await;
            return Flow::Continue;
        }
        tracing::trace!(component = %caller.component, op, stream = id, "IPC request");
        let Some(operation) = self.shared.operations.get(&op).cloned() else {
            let e = ops::unsupported(&op);
            tracing::debug!(op, message = %e.message, "IPC operation failed");
            self.send(error_message(id, &e, self.shared.max_frame))
                .await;
            return Flow::Continue;
        };
        if operation.is_slow() {
            let shared = self.shared.clone();
            let tx = self.tx.clone();
            let payload = msg.payload;
            let task = tokio::spawn(async move {
                let result = operation.dispatch(&shared, &caller, &payload).await;
                let (bytes, stream) = encode_reply(&shared, &tx, id, &operation, result);
                if tx.send(bytes).await.is_err() {
                    return;
                }
                if let Some((run, sink)) = stream {
                    run(sink).await;
                }
            });
            self.streams.insert(id, task.abort_handle());
        } else {
            let result = operation
                .dispatch(&self.shared, &caller, &msg.payload)
                .await;
            let (bytes, stream) = encode_reply(&self.shared, &self.tx, id, &operation, result);
            if !self.send(bytes).await {
                return Flow::Close;
            }
            if let Some((run, sink)) = stream {
                let task = tokio::spawn(run(sink));
                self.streams.insert(id, task.abort_handle());
            }
        }
        Flow::Continue
    }
}
