//! What the cloud benchmarks share (`bench_endpoint` here, `bench_fleet` in lichen-cloud,
//! which includes this file by path): command-line flags, the measured child process's
//! peak RSS and CPU seconds from /proc, and registering N devices with certificates issued by
//! the cloud CA directly in the store (setup, not what is measured).
#![allow(dead_code)] // each benchmark uses a part

use std::io::BufRead;
use std::process::{Child, ChildStdout, Command, Stdio};

use lichen_cloud_store::{
    Backend, CertificateKind, CertificateRecord, CertificateStatus, NewThing, Store,
};

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Whether the flag `name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Peak resident set (VmHWM, KiB) and CPU seconds (utime + stime) of process `pid`.
pub fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // /proc reports CPU times in USER_HZ, 100 on every architecture Linux supports.
    (hwm, ticks as f64 / 100.0)
}

/// A registered device: its thing name, certificate and PKCS#8 key (DER and PEM).
pub struct Device {
    pub name: String,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

/// Registers `n` things `bench-00000…`, each with an active device certificate attached.
pub async fn register(store: &Store, ca: &lichen_pki::LocalCa, n: usize) -> Vec<Device> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("bench-{i:05}");
        let key = rcgen::KeyPair::generate().expect("key pair");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, &name);
        let csr = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("csr pem");
        let issued = ca.issue_from_csr(&csr, 30).expect("certificate issued");
        store
            .create_thing(&NewThing {
                name: name.clone(),
                attributes: Default::default(),
            })
            .await
            .expect("thing created");
        let fp = lichen_pki::fingerprint(&issued.cert_der);
        store
            .put_certificate(&CertificateRecord {
                fingerprint: fp.clone(),
                serial: issued.serial.clone(),
                pem: issued.cert_pem.clone(),
                kind: CertificateKind::Device,
                status: CertificateStatus::Active,
                thing: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                not_after: "2036-01-01T00:00:00Z".into(),
                revoked_at: None,
            })
            .await
            .expect("certificate stored");
        store
            .attach_certificate(&fp, &name)
            .await
            .expect("certificate attached");
        out.push(Device {
            name,
            cert_der: issued.cert_der,
            cert_pem: issued.cert_pem,
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        });
    }
    out
}

/// The measured process: this benchmark re-executed with `args` (its first word selects the
/// serving mode). It prints one line when ready and stops when its stdin closes.
pub struct Served {
    pub child: Child,
    pub pid: u32,
    pub ready_line: String,
    _stdout: std::io::BufReader<ChildStdout>,
}

impl Served {
    pub fn spawn(args: &[&std::ffi::OsStr]) -> Served {
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("serving child starts");
        let pid = child.id();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut ready_line = String::new();
        stdout
            .read_line(&mut ready_line)
            .expect("serving child reports ready");
        Served {
            child,
            pid,
            ready_line: ready_line.trim().to_string(),
            _stdout: stdout,
        }
    }

    /// Closes its stdin (it stops) and waits for it.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// For the serving child: blocks until stdin closes (the driver ended or dropped it).
pub async fn until_stdin_closes() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
    })
    .await;
}
