//! The listening socket and the accept loop.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lichen_core::CoreHandle;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::admission::{Admission, REFUSAL_LOG_INTERVAL};
use crate::authz::PolicyCache;
use crate::conn;
use crate::error::IpcError;
use crate::hooks::{HooksAdapter, IpcHooks};
use crate::ops::{Operations, Shared};

/// A running IPC server. Dropping it without [`IpcServer::shutdown`] also stops it (the
/// tasks are aborted) but leaves the socket file behind.
pub struct IpcServer {
    path: PathBuf,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    invalidator: JoinHandle<()>,
    limit: Arc<Semaphore>,
    max_connections: usize,
}

impl IpcServer {
    /// Where the server listens (`<root>/ipc.socket`).
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Live authenticated IPC connections (pending ones are bounded separately, see
    /// [`crate::admission`]).
    pub fn connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.limit.available_permits())
    }

    /// Stops accepting, closes every connection (ending their streams) and removes the
    /// socket file.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.invalidator.abort();
        let _ = std::fs::remove_file(&self.path);
        tracing::info!(socket = %self.path.display(), "IPC server stopped");
    }
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.invalidator.abort();
    }
}

/// Binds `path` even when it is longer than `sun_path` allows, by going through
/// `/proc/self/fd/<dirfd>/`. A stale socket file is replaced; anything else is refused.
fn bind(path: &Path) -> Result<UnixListener, IpcError> {
    let err = |source| IpcError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(IpcError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Roots longer than sun_path are bound through /proc/self/fd (see core::unix_path).
    let listener = lichen_core::unix_path::SocketPath::new(path)
        .and_then(|short| UnixListener::bind(short.as_path()))
        .map_err(err)?;
    // Components may run as other users; the SVCUID is what authenticates them.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// [`serve_with`] the core's own operations ([`Operations::builtin`]).
pub async fn serve(core: CoreHandle) -> Result<IpcServer, IpcError> {
    serve_with(core, Operations::builtin()).await
}

/// Starts the Greengrass IPC server on `core.layout().ipc_socket()`, answering `operations`
/// (the built-in ones plus what services registered), and installs the deployment hooks
/// (configuration validation, component update notices) in the core.
pub async fn serve_with(core: CoreHandle, operations: Operations) -> Result<IpcServer, IpcError> {
    let path = core.layout().ipc_socket();
    let listener = bind(&path)?;
    let settings = core.settings().ipc.clone();
    let hooks = IpcHooks::new();
    core.set_deployment_hooks(Arc::new(HooksAdapter(hooks.clone())));
    let policies = PolicyCache::new(core.clone());
    let invalidator = policies.spawn_invalidator();
    let shared = Arc::new(Shared {
        core,
        policies,
        hooks,
        operations,
        max_frame: settings
            .max_frame_bytes
            .max(lichen_eventstream::MIN_FRAME_LEN),
    });
    let (stop, mut stopped) = watch::channel(false);
    let max_connections = settings.max_connections.max(1);
    let limit = Arc::new(Semaphore::new(max_connections));
    let accept_limit = limit.clone();
    let admission = Arc::new(Admission::default());
    let accept = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        let mut report = tokio::time::interval(REFUSAL_LOG_INTERVAL);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = report.tick() => admission.flush(),
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "IPC accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Unknown credentials share one bucket (they cannot happen on Linux).
                    let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
                    let gate = conn::Gate {
                        admission: admission.clone(),
                        limit: accept_limit.clone(),
                        max_connections,
                        uid,
                    };
                    let shared = shared.clone();
                    admission.admit(uid, |slot| {
                        connections.spawn(conn::run(stream, shared, gate, slot))
                    });
                }
            }
        }
        connections.shutdown().await;
    });
    tracing::info!(socket = %path.display(), "IPC server listening");
    Ok(IpcServer {
        path,
        stop,
        accept: Some(accept),
        invalidator,
        limit,
        max_connections,
    })
}
