//! The CLI side of the control channel (blocking: the CLI has no runtime of its own).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{ControlReply, ControlRequest, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach a core at {socket}: {source} (is `lichen core run --root {root}` running, and may you use it?)"
    )]
    Connect {
        socket: String,
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel sent an invalid response: {0}")]
    Protocol(String),
    #[error("{kind}: {message}")]
    Remote { kind: String, message: String },
}

pub struct ControlClient {
    stream: BufReader<UnixStream>,
}

impl ControlClient {
    pub fn connect(root: &Path) -> Result<ControlClient, ClientError> {
        let socket = crate::paths::RootLayout::new(root).control_socket();
        let stream = crate::unix_path::SocketPath::new(&socket)
            .and_then(|short| UnixStream::connect(short.as_path()))
            .map_err(|source| ClientError::Connect {
                socket: socket.display().to_string(),
                root: root.display().to_string(),
                source,
            })?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        Ok(ControlClient {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request and decodes the reply the core sent for it.
    pub fn request(&mut self, request: &ControlRequest) -> Result<ControlReply, ClientError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.stream.get_mut().write_all(&line)?;
        let mut buf = String::new();
        if self.stream.read_line(&mut buf)? == 0 {
            return Err(ClientError::Protocol("connection closed".into()));
        }
        let resp: Response =
            serde_json::from_str(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.ok {
            request
                .decode_reply(resp.result.unwrap_or(serde_json::Value::Null))
                .map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            let err = resp.error.unwrap_or(super::ErrorBody {
                kind: "ServiceError".into(),
                message: "unknown error".into(),
            });
            Err(ClientError::Remote {
                kind: err.kind,
                message: err.message,
            })
        }
    }
}
