//! Several services serving one `ControlService`: asked in registration order, passing on
//! `ComponentNotFound`.

use std::sync::Arc;

use lichen_core::CoreError;
use lichen_core::control::FunctionResult;
use lichen_core::control::{ControlReply, ControlRequest, ControlService};
use lichen_core::handle::BoxFuture;

use crate::{Service, ServiceContext, ServiceError};

/// Answers `function.invoke` for the one component it runs.
struct Runs(&'static str);

impl Service for Runs {
    fn name(&self) -> &str {
        self.0
    }
    fn start<'a>(&'a self, _ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async { Ok(()) })
    }
    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Functions)
    }
    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            match request {
                ControlRequest::FunctionInvoke { component, .. } if component == self.0 => {
                    Ok(ControlReply::FunctionResult(FunctionResult {
                        result: format!("from {}", self.0),
                        base64: false,
                        error: false,
                        duration_ms: 0,
                    }))
                }
                ControlRequest::FunctionInvoke { component, .. } => {
                    Err(CoreError::ComponentNotFound(component))
                }
                other => Err(CoreError::NotSupported(other.op().into())),
            }
        })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn invoke(component: &str) -> ControlRequest {
    ControlRequest::FunctionInvoke {
        component: component.into(),
        payload: "{}".into(),
        topic: None,
    }
}

#[tokio::test]
async fn each_function_is_served_by_the_service_that_runs_it() {
    let services: Vec<Arc<dyn Service>> =
        vec![Arc::new(Runs("lambda.F")), Arc::new(Runs("wasm.G"))];
    let extensions = super::control_extensions(&services);
    assert_eq!(extensions.len(), 1, "one extension per ControlService");
    let ext = &extensions[0];
    assert_eq!(ext.service(), ControlService::Functions);
    for (component, expected) in [("lambda.F", "from lambda.F"), ("wasm.G", "from wasm.G")] {
        match ext.handle(invoke(component)).await {
            Ok(ControlReply::FunctionResult(r)) => assert_eq!(r.result, expected),
            other => panic!("{component}: {other:?}"),
        }
    }
    match ext.handle(invoke("nobody.H")).await {
        Err(CoreError::ComponentNotFound(name)) => assert_eq!(name, "nobody.H"),
        other => panic!("unknown function: {other:?}"),
    }
    // Another error stops the search: the first service's answer is final.
    match ext.handle(ControlRequest::CoreStatus {}).await {
        Err(CoreError::NotSupported(_)) => {}
        other => panic!("{other:?}"),
    }
}
