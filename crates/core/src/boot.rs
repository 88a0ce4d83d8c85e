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
    _lock: RootLock,
}

fn create_dirs(layout: &RootLayout) -> Result<()> {
    for dir in [
        layout.root().to_path_buf(),
        layout.config_dir(),
        layout.recipes_dir(),
        layout.deployments_dir(),
        layout.logs_dir(),
        layout.root().join("work"),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
    }
    Ok(())
}

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
        let config = ConfigStore::open(layout.config_store_file())?;
        let deployments = DeploymentQueue::open(layout.deployment_records_dir())?;
        let (lifecycle_events, _) = broadcast::channel(LIFECYCLE_CHANNEL_CAPACITY);
        let cgroups = CgroupSupport::probe(std::path::Path::new(CGROUP_ROOT));
        if let Some(reason) = cgroups.unavailable_reason() {
            tracing::warn!(%reason, "component resource limits are unavailable; components run without them");
        }
        let rt = Arc::new(Runtime {
            store: ComponentStore::new(layout.clone()),
            orphans: crate::lifecycle::orphans::GroupRegistry::new(layout.groups_dir()),
            layout,
            settings: options.settings,
            bus: lichen_bus::Bus::new(),
            config,
            tokens: TokenRegistry::default(),
            supervisor: Supervisor::new(cgroups),
            deployments,
            lifecycle_events,
            hooks: RwLock::new(None),
            metrics: Mutex::new(HashMap::new()),
            is_root: nix::unistd::geteuid().is_root(),
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
            _lock: lock,
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
    /// timeouts and ending their process groups. The root is released when this returns.
    pub async fn shutdown(self) {
        if let Some(worker) = self.worker {
            worker.abort();
        }
        self.handle.rt.supervisor.stop_all().await;
    }
}
