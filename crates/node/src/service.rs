//! The seam every device service plugs into: started with the core, told when the
//! configuration it follows changes, serving control and IPC operations, stopped in order.

use lichen_bus::Bus;
use lichen_core::control::{ControlReply, ControlRequest, ControlService};
use lichen_core::handle::BoxFuture;
use lichen_core::paths::RootLayout;
use lichen_core::settings::Settings;
use lichen_core::{CoreError, CoreHandle};

/// What a service is given when it starts (and whenever its configuration changes).
#[derive(Clone)]
pub struct ServiceContext {
    pub core: CoreHandle,
    /// The device's local bus (the same one the core and IPC use).
    pub bus: Bus,
    pub layout: RootLayout,
    /// The core's settings (`--config`), including sections for services (e.g. `broker`).
    pub settings: Settings,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[error("service {service}: {message}")]
pub struct ServiceError {
    pub service: String,
    pub message: String,
}

impl ServiceError {
    pub fn new(service: &str, message: impl Into<String>) -> Self {
        ServiceError {
            service: service.to_string(),
            message: message.into(),
        }
    }
}

/// A device service (the MQTT broker; next shadows, secrets, the cloud link, …).
///
/// The node calls, in order: [`Service::ipc_operations`] (before the IPC server starts),
/// [`Service::start`] (before components launch), [`Service::apply_configuration`] whenever a
/// deployment or IPC changes a component it [`Service::follows`], [`Service::control`] for
/// control requests of its [`Service::control_service`], and [`Service::shutdown`] (after
/// the control channel stops, before IPC and the components stop). Object-safe: the node
/// holds services as `Arc<dyn Service>`.
pub trait Service: Send + Sync + 'static {
    /// A short name for logs and errors, e.g. `broker`.
    fn name(&self) -> &str;

    /// Starts the service. A failure stops the node from starting.
    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>>;

    /// The components whose configuration this service follows: exact names, or a prefix
    /// ending in `*` (e.g. `aws.greengrass.clientdevices.*`).
    fn follows(&self) -> &[&str] {
        &[]
    }

    /// Applies a changed configuration. `component` is the followed component that changed,
    /// or `None` when changes were missed (a slow observer) and everything must be re-read.
    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        let _ = (ctx, component);
        Box::pin(async {})
    }

    /// The control requests of this [`ControlService`] (e.g. `Devices`: `device.*`) are sent
    /// to [`Service::control`].
    fn control_service(&self) -> Option<ControlService> {
        None
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            Err(CoreError::NotSupported(format!(
                "control operation {:?}",
                request.op()
            )))
        })
    }

    /// IPC operations this service serves, added to the core's own (a name the core or
    /// another service already serves stops the node from starting).
    fn ipc_operations(&self) -> Vec<lichen_ipc::Operation> {
        Vec::new()
    }

    /// Stops the service; it must not fail.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Whether `component` is named by `patterns` (see [`Service::follows`]).
pub fn follows(patterns: &[&str], component: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => component.starts_with(prefix),
        None => *p == component,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns() {
        let p = ["aws.greengrass.clientdevices.*", "com.example.Exact"];
        assert!(super::follows(&p, "aws.greengrass.clientdevices.Auth"));
        assert!(super::follows(&p, "com.example.Exact"));
        assert!(!super::follows(&p, "com.example.Exactly"));
        assert!(!super::follows(&p, "aws.greengrass.Nucleus"));
    }
}
