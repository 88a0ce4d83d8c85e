//! The Stream Manager's TCP server: one task per connection reading frames, one writer
//! task per connection (each reply one write, as the Python client needs), each request in
//! its own task so a long-polling read never holds up the others.
//!
//! Bounds: frames ≤ `MAX_FRAME_BYTES` (16 MiB; a larger append is drained and answered
//! `4` when its requestId is in its first 4 KiB, else the connection closes), 128
//! connections (more wait in the kernel backlog), 64 requests in flight per connection
//! (more: the connection stops reading), 256 long-polling reads per core (more: `1`
//! UnknownFailure saying so), read replies ≤ 16 MiB of payload, the handshake ≤ 10 s.
//! A bad frame (unreadable header, CBOR without a requestId) closes that connection only.

use std::sync::Arc;
use std::time::Duration;

use lichen_streams::protocol::{
    self as proto, CONNECT_VERSION, FrameHeader, Operation, Refusal, Request, Status, cbor,
    encode_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::Shared;

pub const MAX_CONNECTIONS: usize = 128;
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
pub const MAX_LONG_POLLS: usize = 256;
pub const MAX_READ_REPLY_BYTES: u64 = 16 * 1024 * 1024;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A long poll answers this much before its readTimeoutMillis ends, so the reply reaches
/// the client before its own timer (≥ readTimeoutMillis, started before sending) fires.
pub const LONG_POLL_MARGIN: Duration = Duration::from_millis(100);
/// Bytes of an oversized frame searched for its requestId.
const OVERSIZED_PREFIX: usize = 4096;

pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "stream manager accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(reason) = connection(stream, shared).await {
                tracing::debug!(%peer, reason, "stream manager connection closed");
            }
            drop(permit);
        });
    }
}

fn frame(op: Operation, value: &ciborium::value::Value) -> Vec<u8> {
    encode_frame(op as u8, &cbor::encode(value))
}

async fn read_header(stream: &mut TcpStream) -> Result<Option<FrameHeader>, String> {
    let mut head = [0u8; FrameHeader::LEN];
    match stream.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    FrameHeader::parse(head)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The connect exchange; returns the component that connected (or "unauthenticated").
async fn handshake(stream: &mut TcpStream, shared: &Shared) -> Result<String, String> {
    let version = stream.read_u8().await.map_err(|e| e.to_string())?;
    if version != CONNECT_VERSION {
        return Err(format!("connect version {version} is not 1"));
    }
    let header = read_header(stream)
        .await?
        .ok_or("closed before connecting")?;
    if header.operation != Operation::Connect as u8 || header.payload_len > 64 * 1024 {
        return Err(format!(
            "first frame is operation {}, not a connect request",
            header.operation
        ));
    }
    let mut payload = vec![0u8; header.payload_len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    let server_version = env!("CARGO_PKG_VERSION");
    let refuse = |id: &str, status: Status, message: &str| {
        let mut out = vec![CONNECT_VERSION];
        out.extend(frame(
            Operation::ConnectResponse,
            &proto::connect_response(id, status, Some(message), server_version),
        ));
        out
    };
    let request = match proto::parse_connect(&payload) {
        Ok(r) => r,
        Err(r) => {
            let id = r.request_id.unwrap_or_else(|| "unknown".into());
            let _ = stream.write_all(&refuse(&id, r.status, &r.message)).await;
            return Err(r.message);
        }
    };
    let id = request.request_id.clone();
    let speaks = std::iter::once(&request.protocol_version)
        .chain(&request.other_supported_protocol_versions)
        .any(|v| proto::SUPPORTED_PROTOCOL_VERSIONS.contains(&v.as_str()));
    if !speaks {
        let msg = format!(
            "protocol version {} is not supported",
            request.protocol_version
        );
        let _ = stream
            .write_all(&refuse(&id, Status::UnsupportedProtocolVersion, &msg))
            .await;
        return Err(msg);
    }
    let component = match request.auth_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => shared.core.authenticate(token),
        None => None,
    };
    let component = match component {
        Some(c) => c,
        None if !shared.authenticate_client() => "unauthenticated".to_string(),
        None => {
            // Never log the token itself.
            let msg = "the client's authorization token is missing or not a component's";
            tracing::warn!("stream manager refused a client: {msg}");
            let _ = stream
                .write_all(&refuse(&id, Status::Unauthorized, msg))
                .await;
            return Err(msg.into());
        }
    };
    let mut out = vec![CONNECT_VERSION];
    out.extend(frame(
        Operation::ConnectResponse,
        &proto::connect_response(&id, Status::Success, None, server_version),
    ));
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    Ok(component)
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) -> Result<(), String> {
    let component = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, &shared))
        .await
        .map_err(|_| "handshake timed out".to_string())??;
    tracing::debug!(%component, "stream manager client connected");
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    let result = loop {
        let mut head = [0u8; FrameHeader::LEN];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
        let header = match FrameHeader::parse(head) {
            Ok(h) => h,
            Err(e) => break Err(e.to_string()),
        };
        let op = header.operation;
        let reply_op = Operation::from_u8(op)
            .and_then(Operation::response)
            .unwrap_or(Operation::UnknownOperationError);
        if !header.within_bound() {
            let mut prefix = vec![0u8; OVERSIZED_PREFIX.min(header.payload_len)];
            if let Err(e) = reader.read_exact(&mut prefix).await {
                break Err(e.to_string());
            }
            let rest = (header.payload_len - prefix.len()) as u64;
            let mut sink = tokio::io::sink();
            if let Err(e) = tokio::io::copy(&mut (&mut reader).take(rest), &mut sink).await {
                break Err(e.to_string());
            }
            let Some(id) = cbor::request_id_in_prefix(&prefix) else {
                break Err(format!(
                    "frame of {} bytes without a readable requestId",
                    header.payload_len
                ));
            };
            let msg = format!(
                "request of {} bytes exceeds the stream manager's {} byte frame bound",
                header.payload_len,
                proto::MAX_FRAME_BYTES
            );
            let v = proto::response(&id, Status::RequestPayloadTooLarge, Some(&msg), vec![]);
            if tx.send(frame(reply_op, &v)).await.is_err() {
                break Ok(());
            }
            continue;
        }
        let mut payload = vec![0u8; header.payload_len];
        if let Err(e) = reader.read_exact(&mut payload).await {
            break Err(e.to_string());
        }
        let (id, request) = match proto::parse_request(op, &payload) {
            Ok(r) => r,
            Err(Refusal {
                request_id: Some(id),
                status,
                message,
            }) => {
                tracing::debug!(%component, op, %message, "stream manager request refused");
                let v = proto::response(&id, status, Some(&message), vec![]);
                if tx.send(frame(reply_op, &v)).await.is_err() {
                    break Ok(());
                }
                continue;
            }
            Err(r) => {
                break Err(format!(
                    "unreadable request (operation {op}): {}",
                    r.message
                ));
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let reply = super::handle(&shared, &id, request).await;
            let _ = tx.send(frame(reply_op, &reply)).await;
            drop(permit);
        });
    };
    drop(tx);
    let _ = writer_task.await;
    result
}

/// Whether a request of this kind may long-poll.
pub fn is_long_poll(request: &Request) -> bool {
    matches!(request, Request::Read { options, .. } if options.timeout_millis > 0)
}
