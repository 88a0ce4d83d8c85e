//! A small Greengrass IPC client over the same codec, for tests, benchmarks and tools.
//! Components should keep using the AWS SDKs; this speaks the same wire protocol.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use lichen_eventstream::{
    DEFAULT_MAX_FRAME_BYTES, Decoder, Header, MessageType, RpcMessage, flags, headers,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::error::IpcError;

/// Events buffered per stream in the client before it stops reading the socket.
pub const CLIENT_STREAM_BUFFER: usize = 4096;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// A modeled error: `shape` is the `service-model-type` without the namespace.
    #[error("{shape}: {body}")]
    Remote { shape: String, body: Value },
    #[error("connection closed")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
}

impl CallError {
    pub fn shape(&self) -> Option<&str> {
        match self {
            CallError::Remote { shape, .. } => Some(shape),
            _ => None,
        }
    }
}

type Routes = Arc<Mutex<HashMap<i32, mpsc::Sender<RpcMessage>>>>;

pub struct IpcClient {
    writer: tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    next_stream: AtomicI32,
    routes: Routes,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for IpcClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// An open stream: the initial response has been received; events follow.
#[derive(Debug)]
pub struct IpcStream {
    pub stream_id: i32,
    rx: mpsc::Receiver<RpcMessage>,
}

impl IpcStream {
    /// The next event's JSON payload with its `service-model-type`; `None` when the server
    /// ended the stream or the connection closed.
    pub async fn next_event(&mut self) -> Option<Result<(String, Value), CallError>> {
        let msg = self.rx.recv().await?;
        if msg.message_type == MessageType::ApplicationMessage
            && msg.terminates()
            && msg.payload.is_empty()
        {
            return None;
        }
        Some(decode_reply(msg))
    }

    /// The next raw message, for tests that check headers and flags.
    pub async fn next_raw(&mut self) -> Option<RpcMessage> {
        self.rx.recv().await
    }
}

fn decode_reply(msg: RpcMessage) -> Result<(String, Value), CallError> {
    let model = msg
        .header_str(headers::SERVICE_MODEL_TYPE)
        .unwrap_or_default()
        .to_string();
    let body: Value = if msg.payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&msg.payload).map_err(|e| CallError::Protocol(e.to_string()))?
    };
    match msg.message_type {
        MessageType::ApplicationMessage => Ok((model, body)),
        MessageType::ApplicationError => Err(CallError::Remote {
            shape: model.trim_start_matches("aws.greengrass#").to_string(),
            body,
        }),
        other => Err(CallError::Protocol(format!("unexpected {other:?}"))),
    }
}

/// Connects to a socket path of any length.
pub async fn connect_socket(path: &Path) -> Result<UnixStream, IpcError> {
    let err = |source| IpcError::Connect {
        path: path.to_path_buf(),
        source,
    };
    // Paths longer than sun_path go through /proc/self/fd (see lichen_sys::socket).
    let short = lichen_core::unix_path::SocketPath::new(path).map_err(err)?;
    UnixStream::connect(short.as_path()).await.map_err(err)
}

pub fn encode(msg: RpcMessage) -> Bytes {
    let mut out = BytesMut::new();
    let _ = msg.encode(&mut out, DEFAULT_MAX_FRAME_BYTES);
    out.freeze()
}

impl IpcClient {
    /// Connects and authenticates with an SVCUID.
    pub async fn connect(path: &Path, token: &str) -> Result<IpcClient, IpcError> {
        let stream = connect_socket(path).await?;
        Self::handshake(stream, token).await
    }

    pub async fn handshake(stream: UnixStream, token: &str) -> Result<IpcClient, IpcError> {
        let (mut rd, mut wr) = stream.into_split();
        let connect = RpcMessage::new(MessageType::Connect, 0, 0)
            .with_header(Header::string(headers::VERSION, headers::PROTOCOL_VERSION))
            .with_payload(json!({ "authToken": token }).to_string());
        wr.write_all(&encode(connect))
            .await
            .map_err(|e| IpcError::Protocol(e.to_string()))?;
        let mut decoder = Decoder::default();
        let ack = loop {
            if let Some(f) = decoder
                .next_frame()
                .map_err(|e| IpcError::Protocol(e.to_string()))?
            {
                break RpcMessage::from_frame(f).map_err(|e| IpcError::Protocol(e.to_string()))?;
            }
            let n = rd
                .read_buf(decoder.buffer_mut())
                .await
                .map_err(|e| IpcError::Protocol(e.to_string()))?;
            if n == 0 {
                return Err(IpcError::Closed);
            }
        };
        if ack.message_type != MessageType::ConnectAck
            || ack.flags & flags::CONNECTION_ACCEPTED == 0
        {
            // A refusal with a reason comes as a connection-level error carrying a message.
            let reason = serde_json::from_slice::<Value>(&ack.payload)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string));
            return Err(IpcError::Protocol(match reason {
                Some(r) => format!("connection refused: {r}"),
                None => "connection refused".into(),
            }));
        }
        let routes: Routes = Arc::default();
        let reader = tokio::spawn(read_loop(rd, decoder, routes.clone()));
        Ok(IpcClient {
            writer: tokio::sync::Mutex::new(wr),
            next_stream: AtomicI32::new(1),
            routes,
            reader,
        })
    }

    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), CallError> {
        self.writer
            .lock()
            .await
            .write_all(bytes)
            .await
            .map_err(|_| CallError::Closed)
    }

    async fn open(
        &self,
        op: &str,
        request: &Value,
    ) -> Result<(i32, mpsc::Receiver<RpcMessage>), CallError> {
        let (tx, rx) = mpsc::channel(CLIENT_STREAM_BUFFER);
        let mut writer = self.writer.lock().await;
        // Ids are taken under the writer lock so they reach the server in increasing order.
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let msg = RpcMessage::json(
            MessageType::ApplicationMessage,
            0,
            id,
            &format!("aws.greengrass#{op}Request"),
            request.to_string(),
        )
        .with_header(Header::string(
            headers::OPERATION,
            format!("aws.greengrass#{op}"),
        ));
        writer
            .write_all(&encode(msg))
            .await
            .map_err(|_| CallError::Closed)?;
        Ok((id, rx))
    }

    /// A unary call: the response body, or the modeled error.
    pub async fn call(&self, op: &str, request: &Value) -> Result<Value, CallError> {
        let (id, mut rx) = self.open(op, request).await?;
        let reply = rx.recv().await.ok_or(CallError::Closed);
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let (model, body) = decode_reply(reply?)?;
        let expected = format!("aws.greengrass#{op}Response");
        if model != expected {
            return Err(CallError::Protocol(format!(
                "response type {model}, expected {expected}"
            )));
        }
        Ok(body)
    }

    /// Opens a streaming operation and waits for its initial response.
    pub async fn subscribe(&self, op: &str, request: &Value) -> Result<IpcStream, CallError> {
        let (id, mut rx) = self.open(op, request).await?;
        let first = rx.recv().await.ok_or(CallError::Closed)?;
        decode_reply(first)?;
        Ok(IpcStream { stream_id: id, rx })
    }

    /// Closes a stream from the client side, as the SDKs do.
    pub async fn close_stream(&self, stream_id: i32) -> Result<(), CallError> {
        let msg = RpcMessage::new(
            MessageType::ApplicationMessage,
            flags::TERMINATE_STREAM,
            stream_id,
        );
        self.send_raw(&encode(msg)).await
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }
}

async fn read_loop(rd: tokio::net::unix::OwnedReadHalf, decoder: Decoder, routes: Routes) {
    read_frames(rd, decoder, &routes).await;
    // Ends every open stream and pending call.
    routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

async fn read_frames(
    mut rd: tokio::net::unix::OwnedReadHalf,
    mut decoder: Decoder,
    routes: &Routes,
) {
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            let Ok(msg) = RpcMessage::from_frame(frame) else {
                return;
            };
            if msg.stream_id == 0 {
                if matches!(
                    msg.message_type,
                    MessageType::ProtocolError | MessageType::ServerError
                ) {
                    return;
                }
                continue;
            }
            let terminates = msg.terminates();
            let stream_id = msg.stream_id;
            let route = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&msg.stream_id)
                .cloned();
            if let Some(tx) = route {
                let _ = tx.send(msg).await;
            }
            if terminates {
                routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&stream_id);
            }
        }
        if decoder.buffered() == 0 {
            decoder.buffer_mut().reserve(64 * 1024);
        }
        match rd.read_buf(decoder.buffer_mut()).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
