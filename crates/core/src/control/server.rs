//! Serving the control channel.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{
    ControlReply, ControlRequest, ControlRequestError, ControlService, CoreStatus,
    DeploymentCreated, Done, ErrorBody, Extensions, MAX_CLIENTS, MAX_REQUEST_BYTES, Response,
};
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
            match ControlRequest::from_json(&line) {
                Ok(req) => dispatch(&core, &extensions, req).await,
                Err(e @ ControlRequestError::UnknownOp(_)) => {
                    error_response("NotSupported", e.to_string())
                }
                Err(e) => error_response("InvalidArgument", e.to_string()),
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

async fn dispatch(core: &CoreHandle, extensions: &Extensions, req: ControlRequest) -> Response {
    let result = match req.service() {
        ControlService::Core => serve_core(core, req).await,
        service => match extensions.iter().find(|ext| ext.service() == service) {
            Some(ext) => ext.handle(req).await,
            None => Err(CoreError::NotSupported(format!(
                "control operation {:?}",
                req.op()
            ))),
        },
    }
    .and_then(|reply| serde_json::to_value(reply).map_err(|e| CoreError::Other(e.to_string())));
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

/// The root filesystem's free space, with a warning when low or when the reserve is gone.
fn disk_state(root: &std::path::Path) -> Option<lichen_model::control::DiskState> {
    use crate::reserve;
    let (free_bytes, total_bytes) = match reserve::disk_space(root) {
        Ok(space) => space,
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "cannot read the root's disk space");
            return None;
        }
    };
    let reserve_held = reserve::held();
    let threshold = reserve::low_space_threshold(total_bytes);
    let warning = if free_bytes < threshold || !reserve_held {
        Some(format!(
            "the disk holding {} is {}: {free_bytes} bytes free (warning below {}){}",
            root.display(),
            if free_bytes == 0 {
                "full"
            } else {
                "low on space"
            },
            threshold,
            if reserve_held {
                ""
            } else {
                "; the core released its space reserve. Remove components (`lichen deployment create --remove NAME`) or free space"
            }
        ))
    } else {
        None
    };
    Some(lichen_model::control::DiskState {
        free_bytes,
        total_bytes,
        reserve_held,
        warning,
    })
}

async fn serve_core(core: &CoreHandle, req: ControlRequest) -> Result<ControlReply> {
    Ok(match req {
        ControlRequest::CoreStatus {} => ControlReply::CoreStatus(CoreStatus {
            root: core.layout().root().to_path_buf(),
            thing_name: core.thing_name().to_string(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            components: core.list_components().len(),
            cloud: None,
            disk: disk_state(core.layout().root()),
        }),
        ControlRequest::DeploymentCreate(request) => {
            let deployment_id = core.create_deployment(request).await?;
            ControlReply::DeploymentCreated(DeploymentCreated { deployment_id })
        }
        ControlRequest::DeploymentStatus { deployment_id } => {
            ControlReply::Deployment(Box::new(core.deployment(&deployment_id)?))
        }
        ControlRequest::DeploymentList {} => ControlReply::Deployments(core.list_deployments()),
        ControlRequest::DeploymentCancel { deployment_id } => {
            core.cancel_deployment(&deployment_id).await?;
            ControlReply::Done(Done {})
        }
        ControlRequest::ComponentList {} => ControlReply::Components(core.list_components()),
        ControlRequest::ComponentDetails { component_name } => {
            ControlReply::Component(Box::new(core.component_details(&component_name)?))
        }
        ControlRequest::ComponentRestart { component_name } => {
            core.restart_component(&component_name).await?;
            ControlReply::Done(Done {})
        }
        ControlRequest::ComponentStop { component_name } => {
            core.stop_component(&component_name).await?;
            ControlReply::Done(Done {})
        }
        other => {
            return Err(CoreError::NotSupported(format!(
                "control operation {:?}",
                other.op()
            )));
        }
    })
}
