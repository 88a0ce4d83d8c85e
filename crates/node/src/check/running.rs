//! Checks that ask the running core (control channel) and probe what it serves and what it
//! connects to: the sockets, the broker's listeners and certificate, the cloud endpoint, the
//! spool and BROKEN components.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use lichen_core::control::client::{ClientError, ControlClient};
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::paths::RootLayout;
use lichen_core::settings::{CloudSettings, Settings};
use lichen_model::component::ComponentInfo;
use lichen_model::control::{BrokerInfo, CloudStatus, CoreStatus};

use super::probe::{self, CertificateInfo, with_timeout};
use super::{Check, CheckOptions};

/// A certificate closer than this to its end is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 7;
/// A spool fuller than this fraction (in tenths) of its bound is a warning.
const SPOOL_WARNING_TENTHS: u64 = 8;

/// What the core answered, each `Err` the reason it did not.
struct CoreAnswers {
    status: CoreStatus,
    components: Result<Vec<ComponentInfo>, String>,
    broker: Result<Option<BrokerInfo>, String>,
    cloud: Result<Option<CloudStatus>, String>,
}

fn ask_core(root: &Path, timeout: Duration) -> Result<CoreAnswers, ClientError> {
    let root = root.to_path_buf();
    let asked = with_timeout(timeout, move || -> Result<CoreAnswers, ClientError> {
        let mut client = ControlClient::connect(&root)?;
        let status = match client.request(&ControlRequest::CoreStatus {})? {
            ControlReply::CoreStatus(s) => s,
            other => {
                return Err(ClientError::Protocol(format!(
                    "core.status answered {other:?}"
                )));
            }
        };
        let components = match client.request(&ControlRequest::ComponentList {}) {
            Ok(ControlReply::Components(c)) => Ok(c),
            Ok(other) => Err(format!("component.list answered {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        // A core without a broker or a cloud answers these with an error of its own kind.
        let broker = match client.request(&ControlRequest::DeviceBroker {}) {
            Ok(ControlReply::Broker(b)) => Ok(Some(b)),
            Ok(other) => Err(format!("device.broker answered {other:?}")),
            Err(ClientError::Remote { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        let cloud = match client.request(&ControlRequest::CloudStatus {}) {
            Ok(ControlReply::Cloud(c)) => Ok(Some(c)),
            Ok(other) => Err(format!("cloud.status answered {other:?}")),
            Err(ClientError::Remote { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        Ok(CoreAnswers {
            status,
            components,
            broker,
            cloud,
        })
    });
    asked.unwrap_or_else(|| {
        Err(ClientError::Protocol(format!(
            "the core did not answer within {} s",
            timeout.as_secs()
        )))
    })
}

pub fn checks(options: &CheckOptions, settings: Option<&Settings>) -> Vec<Check> {
    let layout = RootLayout::new(&options.root);
    let mut checks = Vec::new();
    let core = ask_core(&options.root, options.timeout);
    checks.push(match &core {
        Ok(a) => Check::ok(
            "control-socket",
            format!(
                "core pid {} (lichen {}), thing {}, {} components",
                a.status.pid, a.status.version, a.status.thing_name, a.status.components
            ),
        ),
        Err(e) => {
            let denied = matches!(e, ClientError::Connect { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied);
            let hint = if denied {
                "run as root or as a member of the admin group (adminGroup; the package's is `lichen`)".to_string()
            } else {
                format!(
                    "start the core: systemctl start lichen (or lichen core run --root {})",
                    options.root.display()
                )
            };
            Check::error("control-socket", e.to_string(), hint)
        }
    });
    checks.push(ipc_socket(&layout, core.is_ok()));
    let core = core.ok();
    if let Some(a) = &core {
        checks.extend(broker(&a.broker, options.timeout));
    }
    if let Some(cloud) = settings.and_then(|s| s.cloud.as_ref().map(|c| (s, c))) {
        checks.extend(cloud_endpoint(options, &layout, cloud.0, cloud.1));
        checks.extend(cloud_link(core.as_ref().map(|a| &a.cloud)));
    }
    checks.push(match &core {
        Some(a) => broken(&a.components),
        None => Check::warning(
            "components.broken",
            "not checked: the core is not running",
            "start the core, then check again",
        ),
    });
    checks
}

fn ipc_socket(layout: &RootLayout, core_up: bool) -> Check {
    const ID: &str = "ipc-socket";
    let path = layout.ipc_socket();
    let connected = lichen_sys::socket::SocketPath::new(&path)
        .and_then(|short| std::os::unix::net::UnixStream::connect(short.as_path()));
    match connected {
        Ok(_) => Check::ok(ID, format!("{} accepts connections", path.display())),
        Err(e) => Check::error(
            ID,
            format!("{}: {e}", path.display()),
            if core_up {
                "the core runs but its IPC server does not answer: see the core's log (lichen logs)"
            } else {
                "start the core; components reach it through this socket"
            },
        ),
    }
}

/// Where to connect to reach a listener bound to `addr` (a wildcard means this host).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

fn broker(answer: &Result<Option<BrokerInfo>, String>, timeout: Duration) -> Vec<Check> {
    const LISTENERS: &str = "broker.listeners";
    const CERT: &str = "broker.certificate";
    let info = match answer {
        Ok(Some(info)) => info,
        Ok(None) => return vec![Check::ok(LISTENERS, "no MQTT broker configured")],
        Err(e) => {
            return vec![Check::error(
                LISTENERS,
                e.clone(),
                "see the core's log (lichen logs)",
            )];
        }
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut tls = None;
    for l in &info.listeners {
        let Ok(addr) = l.addr.parse::<SocketAddr>() else {
            down.push(format!("{} {}: not an address", l.kind, l.addr));
            continue;
        };
        let target = reachable(addr);
        match probe::connect(&[target], timeout) {
            Ok(_) => up.push(format!("{} {}", l.kind, l.addr)),
            Err(e) => down.push(format!("{} {}: {e}", l.kind, l.addr)),
        }
        if l.kind == "tls" && tls.is_none() {
            tls = Some(target);
        }
    }
    let mut checks = vec![if down.is_empty() {
        Check::ok(LISTENERS, format!("accepting: {}", up.join(", ")))
    } else {
        Check::error(
            LISTENERS,
            format!("not accepting: {}", down.join("; ")),
            "see the core's log (lichen logs) for the broker's bind errors; a firewall may drop the port",
        )
    }];
    if let (Some(target), Some(ca)) = (tls, &info.ca_cert_path) {
        checks.push(match probe::probe_tls(target, "localhost", ca, timeout) {
            Err(e) => Check::error(CERT, e, "see the core's log (lichen logs)"),
            Ok(p) => match (&p.leaf, &p.verify_error) {
                (None, _) => Check::error(
                    CERT,
                    format!(
                        "the TLS listener {target} sent no certificate ({})",
                        p.handshake_error.unwrap_or_default()
                    ),
                    "see the core's log (lichen logs)",
                ),
                (Some(leaf), error) => expiry_check(
                    CERT,
                    "the broker's server certificate",
                    leaf,
                    error.as_deref(),
                    "the broker renews its certificate before it ends (tls.renewBeforeDays); restart the core if it did not",
                ),
            },
        });
    }
    checks
}

/// ok / warning (close to its end) / error (expired, or its chain does not verify).
fn expiry_check(
    id: &'static str,
    what: &str,
    leaf: &CertificateInfo,
    verify_error: Option<&str>,
    hint: &str,
) -> Check {
    if leaf.expired() {
        return Check::error(
            id,
            format!("{what} ({}) expired on {}", leaf.subject, leaf.not_after),
            hint,
        );
    }
    if let Some(e) = verify_error {
        return Check::error(
            id,
            format!("{what} ({}) does not verify: {e}", leaf.subject),
            hint,
        );
    }
    if leaf.days_left < EXPIRY_WARNING_DAYS {
        return Check::warning(
            id,
            format!(
                "{what} ({}) ends on {}, in {} days",
                leaf.subject, leaf.not_after, leaf.days_left
            ),
            hint,
        );
    }
    Check::ok(
        id,
        format!(
            "{what} ({}) valid until {} ({} days)",
            leaf.subject, leaf.not_after, leaf.days_left
        ),
    )
}

fn cloud_endpoint(
    options: &CheckOptions,
    layout: &RootLayout,
    settings: &Settings,
    cloud: &CloudSettings,
) -> Vec<Check> {
    let mut checks = Vec::new();
    // The device's own certificate: the bundle's, or the one fleet provisioning stored.
    let (cert, key) = match (&cloud.certificate_file_path, &cloud.private_key_path) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => (
            layout.root().join("cloud/identity/thing.cert.pem"),
            layout.root().join("cloud/identity/thing.private.key"),
        ),
    };
    checks.push(if !cert.exists() && cloud.fleet_provisioning.is_some() {
        Check::warning(
            "cloud.certificate",
            "no identity yet: fleet provisioning obtains it at the core's first connection",
            "start the core with the claim certificate in place",
        )
    } else {
        match probe::pem_file_certificate(&cert) {
            Err(e) => Check::error("cloud.certificate", e, "point cloud.certificateFilePath at the device's PEM certificate"),
            Ok(info) => match super::host::private_file_problem(&key) {
                Some(p) => Check::error("cloud.certificate", p, format!("chmod 0600 {}", key.display())),
                None => expiry_check(
                    "cloud.certificate",
                    "the device certificate",
                    &info,
                    None,
                    "issue a new one (lichen cloud thing create --out, or rotate it in the cloud) and restart the core",
                ),
            },
        }
    });
    let endpoint = cloud.endpoint();
    let host = endpoint
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .unwrap_or_else(|| endpoint.clone());
    let addrs = match probe::resolve(&endpoint, options.timeout) {
        Ok(a) => {
            checks.push(Check::ok(
                "cloud.dns",
                format!(
                    "{host} resolves to {}",
                    a.iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            a
        }
        Err(e) => {
            checks.push(Check::error(
                "cloud.dns",
                format!("{endpoint}: {e}"),
                "check cloud.iotDataEndpoint and the device's resolver (/etc/resolv.conf)",
            ));
            return checks;
        }
    };
    let addr = match probe::connect(&addrs, options.timeout) {
        Ok(stream) => {
            let peer = stream.peer_addr().unwrap_or(addrs[0]);
            checks.push(Check::ok(
                "cloud.tcp",
                format!("{endpoint} accepts TCP ({peer})"),
            ));
            peer
        }
        Err(e) => {
            checks.push(Check::error(
                "cloud.tcp",
                format!("cannot connect to {endpoint}: {e}"),
                "is the cloud up? a firewall or proxy may block the port (MQTT over TLS: 8883)",
            ));
            return checks;
        }
    };
    let Some(ca) = &settings.root_ca_path else {
        return checks;
    };
    checks.push(match probe::probe_tls(addr, &host, ca, options.timeout) {
        Err(e) => Check::error("cloud.tls", e, "check rootCaPath"),
        Ok(p) => match (&p.leaf, &p.verify_error, &p.handshake_error) {
            (Some(leaf), None, None) => {
                let mut c = expiry_check(
                    "cloud.tls",
                    "the endpoint's certificate",
                    leaf,
                    None,
                    "the cloud's operator renews its server certificate",
                );
                if c.status == super::Status::Ok {
                    c.message = format!(
                        "{} over {}; chain verifies against {}",
                        c.message,
                        p.protocol.as_deref().unwrap_or("TLS"),
                        ca.display()
                    );
                }
                c
            }
            (leaf, Some(e), _) => Check::error(
                "cloud.tls",
                match leaf {
                    Some(l) if l.expired() => format!(
                        "the endpoint's certificate ({}) expired on {}: {e}",
                        l.subject, l.not_after
                    ),
                    _ => format!("the endpoint's certificate does not verify against {}: {e}", ca.display()),
                },
                "rootCaPath must be the CA the endpoint's certificate chains to, and the endpoint's name must be in it",
            ),
            (_, None, e) => Check::error(
                "cloud.tls",
                format!("TLS handshake with {endpoint} failed: {}", e.clone().unwrap_or_else(|| "no certificate".into())),
                "is it a TLS port? check cloud.iotDataEndpoint",
            ),
        },
    });
    checks
}

fn cloud_link(answer: Option<&Result<Option<CloudStatus>, String>>) -> Vec<Check> {
    let not_running = || {
        vec![
            Check::warning(
                "cloud.connection",
                "not checked: the core is not running",
                "start the core, then check again",
            ),
            Check::warning(
                "cloud.spool",
                "not checked: the core is not running",
                "start the core, then check again",
            ),
        ]
    };
    let status = match answer {
        None => return not_running(),
        Some(Err(e)) => {
            return vec![Check::error(
                "cloud.connection",
                e.clone(),
                "see the core's log (lichen logs)",
            )];
        }
        Some(Ok(None)) => {
            return vec![Check::error(
                "cloud.connection",
                "a cloud is configured but the running core has no cloud link",
                "restart the core with this config (systemctl restart lichen)",
            )];
        }
        Some(Ok(Some(s))) => s,
    };
    use lichen_model::control::CloudConnectionState as S;
    let connection = match status.state {
        S::Connected => Check::ok(
            "cloud.connection",
            format!("connected to {} as {}", status.endpoint, status.thing_name),
        ),
        state => Check::warning(
            "cloud.connection",
            format!(
                "{state} to {}{}",
                status.endpoint,
                status
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            "see the cloud.* checks above and the core's log (lichen logs)",
        ),
    };
    let spool = match &status.spool {
        None => Check::ok("cloud.spool", "no spool"),
        Some(s) => {
            let message = format!(
                "{} messages waiting ({} of {} bytes, {}), {} dropped",
                s.depth, s.bytes, s.max_bytes, s.storage, s.dropped
            );
            if s.max_bytes > 0
                && s.bytes.saturating_mul(10) >= s.max_bytes.saturating_mul(SPOOL_WARNING_TENTHS)
            {
                Check::warning(
                    "cloud.spool",
                    format!("{message}: nearly full"),
                    "the cloud is not taking messages fast enough or is unreachable; raise mqtt.spooler.maxSizeInBytes or fix the connection",
                )
            } else if s.rejected > 0 {
                Check::warning(
                    "cloud.spool",
                    format!("{message}, {} refused because it was full", s.rejected),
                    "raise mqtt.spooler.maxSizeInBytes or fix the connection",
                )
            } else {
                Check::ok("cloud.spool", message)
            }
        }
    };
    vec![connection, spool]
}

fn broken(answer: &Result<Vec<ComponentInfo>, String>) -> Check {
    const ID: &str = "components.broken";
    let components = match answer {
        Ok(c) => c,
        Err(e) => return Check::error(ID, e.clone(), "see the core's log (lichen logs)"),
    };
    let broken: Vec<&ComponentInfo> = components
        .iter()
        .filter(|c| c.state == lichen_core::LifecycleState::Broken)
        .collect();
    if broken.is_empty() {
        return Check::ok(ID, format!("{} components, none BROKEN", components.len()));
    }
    let list: Vec<String> = broken
        .iter()
        .map(|c| match &c.status_reason {
            Some(r) => format!("{} ({r})", c.component_name),
            None => c.component_name.clone(),
        })
        .collect();
    let first = &broken[0].component_name;
    Check::error(
        ID,
        format!("BROKEN: {}", list.join(", ")),
        format!(
            "read its log (lichen logs {first}), fix the recipe or configuration, then lichen component restart {first}"
        ),
    )
}
