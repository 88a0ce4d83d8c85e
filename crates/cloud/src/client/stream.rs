//! Requests whose body streams from a reader (component uploads: artifacts can be
//! gigabytes, so they are never held in memory).
//!
//! Bounds: [`CONNECT_TIMEOUT`] to connect; the body is sent in chunks of [`CHUNK`] bytes as
//! the server takes them, with no time bound on the whole (the server abandons an upload
//! that stalls); then [`REQUEST_TIMEOUT`] for the answer, of at most [`MAX_RESPONSE_BYTES`].

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};

use super::{
    Answer, CONNECT_TIMEOUT, ClientError, CloudClient, MAX_RESPONSE_BYTES, REQUEST_TIMEOUT,
};

/// Bytes read from the body's reader per frame.
pub const CHUNK: usize = 64 * 1024;

/// A request body read from an `AsyncRead` of known length.
struct ReaderBody {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    remaining: u64,
    buffer: Box<[u8]>,
}

impl hyper::body::Body for ReaderBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let want = this
            .buffer
            .len()
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        let mut buf = ReadBuf::new(&mut this.buffer[..want]);
        match this.reader.as_mut().poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the body ended {} bytes early", this.remaining),
                ))))
            }
            Poll::Ready(Ok(())) => {
                let chunk = Bytes::copy_from_slice(buf.filled());
                this.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl CloudClient {
    /// Sends one request whose body is `content_length` bytes read from `body`; any status
    /// is an answer.
    pub async fn send_stream(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Pin<Box<dyn AsyncRead + Send>>,
        content_length: u64,
    ) -> Result<Answer, ClientError> {
        let transport = |m: String| ClientError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message: m,
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| e.to_string())
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .map_err(|message| ClientError::Connect {
                url: self.url.clone(),
                message,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("user-agent", concat!("lichen/", env!("CARGO_PKG_VERSION")))
            .header("content-length", content_length);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(ReaderBody {
                reader: body,
                remaining: content_length,
                buffer: vec![0u8; CHUNK].into_boxed_slice(),
            })
            .map_err(|e| transport(e.to_string()))?;
        // The answer may come before the body is all sent (a refusal); hyper returns it then.
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = super::header_pairs(resp.headers());
        let bytes = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect(),
        )
        .await
        .map_err(|_| transport(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
        .map_err(|e| transport(format!("reading the answer: {e}")))?
        .to_bytes()
        .to_vec();
        driver.abort();
        Ok(Answer {
            status,
            headers,
            body: bytes,
        })
    }
}
