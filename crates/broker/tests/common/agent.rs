//! Drives `py/mqtt_agent.py` (paho-mqtt): send commands, wait for the events it prints.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct Agent {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every event seen so far, in order.
    pub seen: Vec<Value>,
}

/// TLS files of a client: CA, certificate, key.
pub struct TlsFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Agent {
    pub fn spawn(
        py: &Path,
        port: u16,
        version: &str,
        client_id: &str,
        tls: Option<TlsFiles<'_>>,
    ) -> Agent {
        let mut cmd = Command::new(py);
        cmd.arg(super::py_script("mqtt_agent.py")).args([
            "localhost",
            &port.to_string(),
            version,
            client_id,
        ]);
        if let Some(t) = tls {
            cmd.args([t.ca, t.cert, t.key]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent {
            name: client_id.to_string(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<i64> {
        self.send(json!({"op": "sub", "filter": filter, "qos": qos}))
            .await;
        let ev = self.expect("suback", |_| true).await;
        ev["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .collect()
    }

    pub async fn publish(&mut self, topic: &str, payload: &str, qos: u8) {
        self.send(json!({"op": "pub", "topic": topic, "payload": payload, "qos": qos}))
            .await;
    }

    /// The next event of `kind` satisfying `pred`, within 10 s (panics otherwise).
    pub async fn expect(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.wait(kind, &pred, Duration::from_secs(10)).await {
            Some(v) => v,
            None => panic!("{}: no {kind} event; saw {:?}", self.name, self.seen),
        }
    }

    /// The next event of `kind` satisfying `pred` within `d`, or None.
    pub async fn wait(
        &mut self,
        kind: &str,
        pred: &impl Fn(&Value) -> bool,
        d: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                _ => return None,
            };
            let v: Value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
            self.seen.push(v.clone());
            if v["event"] == kind && pred(&v) {
                return Some(v);
            }
        }
    }

    pub async fn quit(mut self) {
        self.send(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
