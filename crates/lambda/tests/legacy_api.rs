//! The v1 Lambda IPC HTTP API over real sockets (raw HTTP/1.1, as `http.client` sends it):
//! token authentication, Event and RequestResponse invocations, results fetched only by
//! their caller, refusals passed through with their status and text.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use lichen_lambda::legacy::{
    Caller, LegacyFuture, LegacyHost, LegacyRefusal, LegacyReply, LegacyRequest, LegacyServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes RequestResponse payloads, upper-cased, as a handled error when the subject is
/// "fail"; refuses the ARN "refuse"; records what it saw.
/// Caller, target ARN, subject, payload.
type Seen = (Caller, String, Option<String>, Vec<u8>);

#[derive(Default)]
struct Echo {
    seen: Mutex<Vec<Seen>>,
}

impl LegacyHost for Echo {
    fn invoke(&self, request: LegacyRequest) -> LegacyFuture<'_> {
        Box::pin(async move {
            let subject = request.custom("subject").map(str::to_string);
            self.seen.lock().unwrap().push((
                request.caller.clone(),
                request.target_arn.clone(),
                subject.clone(),
                request.payload.clone(),
            ));
            if request.target_arn == "refuse" {
                return Err(LegacyRefusal::new(400, "No subscription exists for this"));
            }
            match request.invocation_type {
                lichen_lambda::legacy::InvocationType::Event => Ok(LegacyReply::Accepted),
                lichen_lambda::legacy::InvocationType::RequestResponse => Ok(LegacyReply::Result {
                    payload: request.payload.to_ascii_uppercase(),
                    function_error: (subject.as_deref() == Some("fail")).then_some("Handled"),
                }),
            }
        })
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn http(
    port: u16,
    method: &str,
    arn: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!(
        "{method} /2016-11-01/functions/{arn} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        // One-chunk bodies are all these tests get: "<hex>\r\n<data>\r\n0\r\n\r\n".
        let text = body.clone();
        let end = text.windows(2).position(|w| w == b"\r\n").unwrap();
        let len = usize::from_str_radix(std::str::from_utf8(&text[..end]).unwrap(), 16).unwrap();
        body = text[end + 2..end + 2 + len].to_vec();
    }
    Response {
        status,
        headers,
        body,
    }
}

/// A POST (an invocation) authenticated by `token`, with `extra` headers.
async fn post(port: u16, arn: &str, token: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
    let mut headers = vec![("Authorization", token)];
    headers.extend_from_slice(extra);
    http(port, "POST", arn, &headers, body).await
}

/// The GET that fetches invocation `id`'s result, authenticated by `token`.
async fn fetch(port: u16, token: &str, id: &str) -> Response {
    http(
        port,
        "GET",
        "fn",
        &[("Authorization", token), ("X-Amz-InvocationId", id)],
        b"",
    )
    .await
}

fn context(subject: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!(r#"{{"custom": {{"subject": "{subject}"}}}}"#))
}

#[tokio::test]
async fn tokens_invocations_results_and_refusals() {
    let host = Arc::new(Echo::default());
    let server = LegacyServer::start(host.clone()).await.unwrap();
    let port = server.port();
    let alice = Caller {
        component: "com.example.A".into(),
        function_arn: "arn:aws:lambda:r:1:function:a:1".into(),
    };
    let bob = Caller {
        component: "com.example.B".into(),
        function_arn: "arn:aws:lambda:r:1:function:b:1".into(),
    };
    let a = server.register("token-a", alice.clone());
    assert_eq!(a, "token-a");
    let b = server.register("", bob.clone());
    assert_eq!(b.len(), 48, "a fresh token when none is given");

    // No or a wrong token: refused, the host never sees it.
    let r = http(port, "POST", "x", &[], b"p").await;
    assert_eq!(r.status, 403);
    let r = post(port, "x", "nope", &[], b"p").await;
    assert_eq!(r.status, 403);
    assert!(host.seen.lock().unwrap().is_empty());

    // Event: accepted with an invocation id; the caller and subject reach the host.
    let ctx = context("t/1");
    let r = post(
        port,
        "arn:aws:lambda:::function:GGRouter",
        &a,
        &[
            ("X-Amz-Invocation-Type", "Event"),
            ("X-Amz-Client-Context", &ctx),
        ],
        b"{\"n\":1}",
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(
        r.header("X-Amz-InvocationId")
            .is_some_and(|i| i.len() == 36)
    );
    {
        let seen = host.seen.lock().unwrap();
        assert_eq!(seen[0].0, alice);
        assert_eq!(seen[0].1, "arn:aws:lambda:::function:GGRouter");
        assert_eq!(seen[0].2.as_deref(), Some("t/1"));
        assert_eq!(seen[0].3, b"{\"n\":1}");
    }

    // RequestResponse: the result is fetched by its id, once, by its caller only.
    let fail = context("fail");
    let r = post(port, "fn", &a, &[("X-Amz-Client-Context", &fail)], b"hello").await;
    assert_eq!(r.status, 202);
    let id = r.header("X-Amz-InvocationId").unwrap().to_string();
    let r = fetch(port, &b, &id).await;
    assert_eq!(r.status, 404, "another function cannot fetch it");
    let r = fetch(port, &a, &id).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"HELLO");
    assert_eq!(r.header("X-Amz-Function-Error"), Some("Handled"));
    let r = fetch(port, &a, &id).await;
    assert_eq!(r.status, 404, "fetched once");

    // A refusal keeps its status and text; bad headers are refused before the host.
    let r = post(
        port,
        "refuse",
        &a,
        &[("X-Amz-Invocation-Type", "Event")],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, b"No subscription exists for this");
    let before = host.seen.lock().unwrap().len();
    let r = post(port, "x", &a, &[("X-Amz-Client-Context", "%%%")], b"").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("base64"));
    let r = post(port, "x", &a, &[("X-Amz-Invocation-Type", "DryRun")], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(host.seen.lock().unwrap().len(), before);

    // Unregistered: the token no longer authenticates.
    server.unregister(&a);
    let r = post(port, "x", &a, &[], b"").await;
    assert_eq!(r.status, 403);
}
