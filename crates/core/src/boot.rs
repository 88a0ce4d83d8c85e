//! Starting and stopping a core on a root.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::ConfigStore;
use crate::deployment::queue::DeploymentQueue;
use crate::error::{CoreError, Result};
use crate::handle::CoreHandle;
use crate::lifecycle::Supervisor;
use crate::lifecycle::cgroup::{CGROUP_ROOT, CgroupSupport};
use crate::lock::RootLock;
use crate::paths::RootLayout;
use crate::runtime::Runtime;
use crate::settings::Settings;
use crate::store::ComponentStore;
use crate::tokens::TokenRegistry;

/// Lifecycle notifications kept for slow observers.
pub const LIFECYCLE_CHANNEL_CAPACITY: usize = 1024;

pub struct CoreOptions {
    pub root: PathBuf,
    pub settings: Settings,
}

/// A running core. Call [`Core::shutdown`] to stop its components.
pub struct Core {
    handle: CoreHandle,
    worker: Option<JoinHandle<()>>,
    lock: RootLock,
}

fn create_dirs(layout: &RootLayout) -> Result<()> {
    for dir in [
        layout.root().to_path_buf(),
        layout.config_dir(),
        layout.recipes_dir(),
        layout.deployments_dir(),
        layout.logs_dir(),
        layout.work_root(),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
    }
    Ok(())
}

/// Copies the configured `rootCaPath` to `<root>/rootCA.pem` (crash-safely), so that
/// `GG_ROOT_CA_PATH` names a file that exists; `None` when none is configured.
fn install_root_ca(
    layout: &RootLayout,
    configured: Option<&std::path::Path>,
) -> Result<Option<PathBuf>> {
    let Some(source) = configured else {
        return Ok(None);
    };
    let bad = |message: String| {
        CoreError::InvalidArgument(format!("rootCaPath {}: {message}", source.display()))
    };
    let meta = std::fs::metadata(source).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_ROOT_CA_BYTES {
        return Err(bad(format!(
            "not a regular file of at most {MAX_ROOT_CA_BYTES} bytes"
        )));
    }
    let pem = std::fs::read(source).map_err(|e| bad(e.to_string()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad("no PEM certificate in it".into()));
    }
    let dest = layout.root_ca();
    crate::atomic::write_atomic(&dest, &pem, 0o644)?;
    tracing::info!(source = %source.display(), file = %dest.display(), "root CA installed for components");
    Ok(Some(dest))
}

/// Largest `rootCaPath` file accepted (a CA bundle is far smaller).
pub const MAX_ROOT_CA_BYTES: u64 = 1024 * 1024;

impl Core {
    /// [`Core::prepare`] then [`Core::launch`]: for callers that attach no services first.
    pub async fn start(options: CoreOptions) -> Result<Core> {
        let mut core = Core::prepare(options).await?;
        core.launch().await?;
        Ok(core)
    }

    /// Takes the root's lock and loads state, without starting anything. Services that
    /// components talk to (the IPC server) attach to [`Core::handle`] before
    /// [`Core::launch`] starts the components, so a component never finds them missing.
    /// Fails fast when another core holds the root.
    pub async fn prepare(options: CoreOptions) -> Result<Core> {
        Core::prepare_on_bus(options, lichen_bus::Bus::new()).await
    }

    /// [`Core::prepare`] on a bus the caller created, so that services composed beside the
    /// core (the node's) share it from the start.
    pub async fn prepare_on_bus(options: CoreOptions, bus: lichen_bus::Bus) -> Result<Core> {
        let layout = RootLayout::new(&options.root);
        std::fs::create_dir_all(layout.root())
            .map_err(|e| CoreError::io(format!("creating root {}", layout.root().display()), e))?;
        let lock = RootLock::acquire(&layout)?;
        create_dirs(&layout)?;
        // Temp files of atomic writes cut short by a crash; we are the only writer now.
        let stale: usize = [
            layout.root().to_path_buf(),
            layout.config_dir(),
            layout.deployments_dir(),
            layout.deployment_records_dir(),
            layout.recipes_dir(),
        ]
        .iter()
        .map(|dir| lichen_sys::atomic::remove_stale_temps(dir))
        .sum();
        if stale > 0 {
            tracing::info!(
                stale,
                "removed temporary files left by an interrupted write"
            );
        }
        crate::reserve::install(layout.space_reserve());
        let root_ca = install_root_ca(&layout, options.settings.root_ca_path.as_deref())?;
        let config = ConfigStore::open(layout.config_store_file())?;
        let deployments = DeploymentQueue::open(layout.deployment_records_dir())?;
        let (lifecycle_events, _) = broadcast::channel(LIFECYCLE_CHANNEL_CAPACITY);
        let cgroups = CgroupSupport::probe(std::path::Path::new(CGROUP_ROOT));
        if let Some(reason) = cgroups.unavailable_reason() {
            tracing::warn!(%reason, "component resource limits are unavailable; components run without them");
        }
        let orphans = Arc::new(crate::lifecycle::orphans::GroupRegistry::new(
            layout.groups_dir(),
        ));
        let is_root = nix::unistd::geteuid().is_root();
        let default_user = if is_root && options.settings.posix_user.is_empty() {
            let user = crate::lifecycle::process::default_component_user();
            match &user {
                Some(u) => {
                    tracing::info!(user = %u, "the core runs as root and no posixUser is configured; components run as the default user")
                }
                None => tracing::error!(
                    "the core runs as root, no posixUser is configured and neither ggc_user nor nobody exists; components cannot start"
                ),
            }
            user
        } else {
            None
        };
        let rt = Arc::new(Runtime {
            store: ComponentStore::new(layout.clone()),
            process_runner: Arc::new(crate::lifecycle::launch::ProcessRunner {
                groups: orphans.clone(),
            }),
            runners: RwLock::new(HashMap::new()),
            orphans,
            layout,
            settings: options.settings,
            bus,
            config,
            tokens: TokenRegistry::default(),
            supervisor: Supervisor::new(cgroups),
            deployments,
            lifecycle_events,
            hooks: RwLock::new(None),
            metrics: Mutex::new(HashMap::new()),
            is_root,
            default_user,
            root_ca,
            provided_builtins: Default::default(),
        });
        let leftovers = rt.orphans.reap_leftovers();
        if leftovers > 0 {
            tracing::warn!(
                leftovers,
                "ended process groups of a core that did not stop cleanly"
            );
        }
        Ok(Core {
            handle: CoreHandle { rt },
            worker: None,
            lock,
        })
    }

    /// Recovers from an interrupted deployment, starts the deployed components and the
    /// deployment worker. Idempotent.
    pub async fn launch(&mut self) -> Result<()> {
        if self.worker.is_some() {
            return Ok(());
        }
        let rt = self.handle.rt.clone();
        crate::deployment::engine::boot(&rt)
            .await
            .map_err(CoreError::Other)?;
        self.worker = Some(tokio::spawn(crate::deployment::worker(rt)));
        Ok(())
    }

    pub fn handle(&self) -> CoreHandle {
        self.handle.clone()
    }

    /// Stops the deployment worker (a deployment cut short here is rolled back at the next
    /// start), then every component, dependents first, running Shutdown steps within their
    /// timeouts and ending their process groups.
    ///
    /// The root's lock is handed back rather than released: whoever composed the core (the
    /// node) stops its other services first and drops the lock last, so that a second core
    /// cannot take the root while this one still has sockets and databases open in it.
    pub async fn shutdown(self) -> RootLock {
        if let Some(worker) = self.worker {
            worker.abort();
        }
        self.handle.rt.supervisor.stop_all().await;
        self.lock
    }
}
