//! A blocking Rust client of the Stream Manager protocol (std TCP, no tokio): what lichen's
//! tests and benchmarks use where an SDK is not the point, and a Rust component can use to
//! talk to any stream manager (lichen's or Greengrass's). One request at a time per client,
//! like the SDKs' synchronous calls; every reply is checked against its request id.
//!
//! Bounds: replies ≤ [`MAX_FRAME_BYTES`] (a larger header is refused before allocating);
//! each reply within the timeout given at connect (default [`DEFAULT_TIMEOUT`], the SDKs' 60 s).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ciborium::value::Value;

use crate::protocol::cbor::{self, Map};
use crate::protocol::{CONNECT_VERSION, FrameHeader, MAX_FRAME_BYTES, Operation, encode_frame};

/// The SDKs' request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("stream manager connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream manager protocol: {0}")]
    Protocol(String),
    /// The server answered with a non-zero status.
    #[error("stream manager status {status}: {message}")]
    Status { status: i64, message: String },
}

type Result<T> = std::result::Result<T, ClientError>;

fn protocol(message: impl Into<String>) -> ClientError {
    ClientError::Protocol(message.into())
}

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sequence_number: i64,
    pub ingest_time: i64,
    pub payload: Vec<u8>,
}

pub struct Client {
    socket: TcpStream,
    next_id: u64,
}

impl Client {
    /// Connects and completes the handshake (`token`: the component's
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, omitted when None).
    pub fn connect(addr: impl ToSocketAddrs, token: Option<&str>) -> Result<Client> {
        Client::connect_with_timeout(addr, token, DEFAULT_TIMEOUT)
    }

    pub fn connect_with_timeout(
        addr: impl ToSocketAddrs,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Client> {
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        socket.set_nodelay(true)?;
        let mut client = Client { socket, next_id: 0 };
        let mut fields = vec![
            ("requestId", Some(cbor::text("connect"))),
            ("protocolVersion", Some(cbor::text("1.1.0"))),
            (
                "otherSupportedProtocolVersions",
                Some(Value::Array(vec![cbor::text("1.0.0")])),
            ),
            ("sdkVersion", Some(cbor::text("1.1.0"))),
        ];
        if let Some(t) = token {
            fields.push(("authToken", Some(cbor::text(t))));
        }
        let mut out = vec![CONNECT_VERSION];
        out.extend(encode_frame(
            Operation::Connect as u8,
            &cbor::encode(&cbor::map(fields)),
        ));
        client.socket.write_all(&out)?;
        let mut version = [0u8; 1];
        client.socket.read_exact(&mut version)?;
        if version[0] != CONNECT_VERSION {
            return Err(protocol(format!("connect version {}", version[0])));
        }
        let (op, reply) = client.recv()?;
        if op != Operation::ConnectResponse as u8 {
            return Err(protocol(format!("operation {op} in answer to Connect")));
        }
        check_status(&reply)?;
        Ok(client)
    }

    fn recv(&mut self) -> Result<(u8, Map)> {
        let mut head = [0u8; 5];
        self.socket.read_exact(&mut head)?;
        let header = FrameHeader::parse(head).map_err(|e| protocol(e.to_string()))?;
        if !header.within_bound() {
            return Err(protocol(format!(
                "a reply of {} bytes is over {MAX_FRAME_BYTES}",
                header.payload_len
            )));
        }
        let mut payload = vec![0u8; header.payload_len];
        self.socket.read_exact(&mut payload)?;
        let map = cbor::decode_map(&payload).map_err(|e| protocol(e.to_string()))?;
        Ok((header.operation, map))
    }

    /// Sends one request (its `requestId` added) and returns the successful reply.
    pub fn call(&mut self, op: Operation, mut fields: Vec<(&str, Option<Value>)>) -> Result<Map> {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        fields.insert(0, ("requestId", Some(cbor::text(&id))));
        self.socket
            .write_all(&encode_frame(op as u8, &cbor::encode(&cbor::map(fields))))?;
        let (rop, reply) = self.recv()?;
        let got_id = reply.text("requestId").ok().flatten().unwrap_or_default();
        if got_id != id {
            return Err(protocol(format!(
                "reply for request {got_id:?}, expected {id:?}"
            )));
        }
        if rop == Operation::UnknownOperationError as u8 {
            check_status(&reply)?;
            return Err(protocol("unknown operation"));
        }
        if Some(rop) != op.response().map(|o| o as u8) {
            return Err(protocol(format!("operation {rop} in answer to {op:?}")));
        }
        check_status(&reply)?;
        Ok(reply)
    }

    /// CreateMessageStream with a `MessageStreamDefinition` map.
    pub fn create(&mut self, definition: Value) -> Result<()> {
        self.call(
            Operation::CreateMessageStream,
            vec![("definition", Some(definition))],
        )
        .map(drop)
    }

    pub fn update(&mut self, definition: Value) -> Result<()> {
        self.call(
            Operation::UpdateMessageStream,
            vec![("definition", Some(definition))],
        )
        .map(drop)
    }

    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.call(
            Operation::DeleteMessageStream,
            vec![("name", Some(cbor::text(name)))],
        )
        .map(drop)
    }

    /// AppendMessage; the message's sequence number.
    pub fn append(&mut self, stream: &str, payload: &[u8]) -> Result<i64> {
        let reply = self.call(
            Operation::AppendMessage,
            vec![
                ("name", Some(cbor::text(stream))),
                ("payload", Some(Value::Bytes(payload.to_vec()))),
            ],
        )?;
        reply
            .int("sequenceNumber", 0, i64::MAX)
            .map_err(|e| protocol(e.to_string()))?
            .ok_or_else(|| protocol("no sequenceNumber"))
    }

    /// ReadMessages from `start`: at least `min`, at most `max`, waiting up to `timeout_ms`.
    pub fn read(
        &mut self,
        stream: &str,
        start: u64,
        min: u64,
        max: u64,
        timeout_ms: u64,
    ) -> Result<Vec<Message>> {
        let options = cbor::map(vec![
            ("desiredStartSequenceNumber", Some(cbor::int(start as i64))),
            ("minMessageCount", Some(cbor::int(min as i64))),
            ("maxMessageCount", Some(cbor::int(max as i64))),
            ("readTimeoutMillis", Some(cbor::int(timeout_ms as i64))),
        ]);
        let reply = self.call(
            Operation::ReadMessages,
            vec![
                ("streamName", Some(cbor::text(stream))),
                ("readMessagesOptions", Some(options)),
            ],
        )?;
        let bad = |e: cbor::CborError| protocol(e.to_string());
        reply
            .maps("messages")
            .map_err(bad)?
            .iter()
            .map(|m| {
                Ok(Message {
                    sequence_number: m
                        .int("sequenceNumber", 0, i64::MAX)
                        .map_err(bad)?
                        .unwrap_or(-1),
                    ingest_time: m.int("ingestTime", 0, i64::MAX).map_err(bad)?.unwrap_or(0),
                    payload: m
                        .bytes("payload")
                        .map_err(bad)?
                        .unwrap_or_default()
                        .to_vec(),
                })
            })
            .collect()
    }

    /// DescribeMessageStream: the `messageStreamInfo` map.
    pub fn describe(&mut self, name: &str) -> Result<Map> {
        let reply = self.call(
            Operation::DescribeMessageStream,
            vec![("name", Some(cbor::text(name)))],
        )?;
        reply
            .map("messageStreamInfo")
            .map_err(|e| protocol(e.to_string()))?
            .ok_or_else(|| protocol("no messageStreamInfo"))
    }

    pub fn list(&mut self) -> Result<Vec<String>> {
        let reply = self.call(Operation::ListStreams, vec![])?;
        match reply.get("streams") {
            Some(Value::Array(items)) => Ok(items
                .iter()
                .filter_map(|v| v.as_text().map(str::to_string))
                .collect()),
            _ => Err(protocol("no streams list")),
        }
    }
}

fn check_status(reply: &Map) -> Result<()> {
    let status = reply
        .int("status", i64::MIN, i64::MAX)
        .map_err(|e| protocol(e.to_string()))?
        .ok_or_else(|| protocol("no status"))?;
    if status == 0 {
        return Ok(());
    }
    Err(ClientError::Status {
        status,
        message: reply
            .text("errorMessage")
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
    })
}
