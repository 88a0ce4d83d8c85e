//! Serving the control channel.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{ErrorBody, Extensions, MAX_CLIENTS, MAX_REQUEST_BYTES, Request, Response};
use crate::deployment::model::DeploymentRequest;
use crate::error::{CoreError, Result};
use crate::handle::CoreHandle;

pub struct ControlServer {
    task: JoinHandle<()>,
}

impl ControlServer {
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Binds `<root>/control.socket` and serves it until shut down.
pub fn serve(core: CoreHandle, extensions: Extensions) -> Result<ControlServer> {
    let path = core.layout().control_socket();
    let _ = std::fs::remove_file(&path);
    let listener = crate::unix_path::SocketPath::new(&path)
        .and_then(|short| UnixListener::bind(short.as_path()))
        .map_err(|e| CoreError::io(format!("binding control socket {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| CoreError::io(format!("chmod {}", path.display()), e))?;
    let admin_gid = nix::unistd::Group::from_name(&core.settings().admin_group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    if let Some(gid) = admin_gid {
        let _ = std::os::unix::fs::chown(&path, None, Some(gid));
    }
    let extensions = Arc::new(extensions);
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!("control channel: too many clients; connection refused");
                continue;
            };
            let core = core.clone();
            let extensions = extensions.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_client(stream, core, extensions, admin_gid).await {
                    tracing::debug!(error = %e, "control client ended");
                }
                drop(permit);
            });
        }
    });
    Ok(ControlServer { task })
}

/// Root, the core's own user, or a member of the admin group.
fn peer_allowed(stream: &UnixStream, admin_gid: Option<u32>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    let uid = cred.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    let Some(admin) = admin_gid else {
        return false;
    };
    if cred.gid() == admin {
        return true;
    }
    // Supplementary groups of the peer process.
    cred.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Groups:"))
                .map(|l| l.split_whitespace().skip(1).any(|g| g == admin.to_string()))
        })
        .unwrap_or(false)
}

async fn serve_client(
    stream: UnixStream,
    core: CoreHandle,
    extensions: Arc<Extensions>,
    admin_gid: Option<u32>,
) -> std::io::Result<()> {
    let allowed = peer_allowed(&stream, admin_gid);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if !allowed {
            error_response(
                "Unauthorized",
                "only root or members of the admin group may use the control channel".into(),
            )
        } else if n > MAX_REQUEST_BYTES {
            error_response(
                "InvalidArgument",
                format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => dispatch(&core, &extensions, req).await,
                Err(e) => error_response("InvalidArgument", format!("malformed request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        write.write_all(&out).await?;
        if !allowed || n > MAX_REQUEST_BYTES {
            return Ok(());
        }
    }
}

fn error_response(kind: &str, message: String) -> Response {
    Response {
        ok: false,
        result: None,
        error: Some(ErrorBody {
            kind: kind.into(),
            message,
        }),
    }
}

fn arg_str(args: &Value, key: &str) -> Result<String> {
    args.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CoreError::InvalidArgument(format!("missing string argument {key:?}")))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| CoreError::Other(e.to_string()))
}

async fn dispatch(core: &CoreHandle, extensions: &Extensions, req: Request) -> Response {
    let result: Result<Value> = async {
        match req.op.as_str() {
            "core.status" => Ok(json!({
                "root": core.layout().root(),
                "thingName": core.thing_name(),
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "components": core.list_components().len(),
            })),
            "deployment.create" => {
                let request: DeploymentRequest = serde_json::from_value(req.args)
                    .map_err(|e| CoreError::InvalidArgument(format!("deployment request: {e}")))?;
                let id = core.create_deployment(request).await?;
                Ok(json!({ "deploymentId": id }))
            }
            "deployment.status" => to_value(core.deployment(&arg_str(&req.args, "deploymentId")?)?),
            "deployment.list" => to_value(core.list_deployments()),
            "deployment.cancel" => {
                core.cancel_deployment(&arg_str(&req.args, "deploymentId")?)
                    .await?;
                Ok(json!({}))
            }
            "component.list" => to_value(core.list_components()),
            "component.details" => {
                to_value(core.component_details(&arg_str(&req.args, "componentName")?)?)
            }
            "component.restart" => {
                core.restart_component(&arg_str(&req.args, "componentName")?)
                    .await?;
                Ok(json!({}))
            }
            "component.stop" => {
                core.stop_component(&arg_str(&req.args, "componentName")?)
                    .await?;
                Ok(json!({}))
            }
            op => match extensions
                .iter()
                .find(|(prefix, _)| op.starts_with(prefix.as_str()))
            {
                Some((_, ext)) => ext.handle(op, req.args).await,
                None => Err(CoreError::NotSupported(format!("control operation {op:?}"))),
            },
        }
    }
    .await;
    match result {
        Ok(v) => Response {
            ok: true,
            result: Some(v),
            error: None,
        },
        Err(e) => Response {
            ok: false,
            result: None,
            error: Some(ErrorBody::from_core(&e)),
        },
    }
}
