//! `Runtime::runner_for`: a runner registered for a recipe's component type is chosen for
//! it; every other component gets the process runner.

use std::sync::Arc;

use crate::lifecycle::ComponentSpec;
use crate::lifecycle::launch::{LaunchContext, Launched, Runner, StepLaunch};
use crate::{Core, CoreOptions};

struct Refusing;

impl Runner for Refusing {
    fn launch(
        &self,
        _ctx: &dyn LaunchContext,
        _launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        Err("refused".into())
    }
}

fn spec(component_type: &str) -> ComponentSpec {
    let text = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.F\nComponentVersion: 1.0.0\nComponentType: {component_type}\nManifests:\n  - Lifecycle: {{}}\n"
    );
    ComponentSpec {
        name: "com.example.F".into(),
        version: "1.0.0".into(),
        recipe: Some(Arc::new(
            lichen_recipe::parse_recipe(&text, "test").expect("recipe parses"),
        )),
        lifecycle: Default::default(),
        dependencies: Vec::new(),
        root: true,
        builtin: false,
        run_with: Default::default(),
    }
}

#[tokio::test]
async fn a_registered_runner_serves_its_component_type_only() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::prepare(CoreOptions {
        root: dir.path().to_path_buf(),
        settings: Default::default(),
    })
    .await
    .unwrap();
    let handle = core.handle();
    let lambda = spec("aws.greengrass.lambda");
    let generic = spec("aws.greengrass.generic");
    let process = handle.process_runner();
    assert!(Arc::ptr_eq(&handle.rt.runner_for(&lambda), &process));

    let refusing: Arc<dyn Runner> = Arc::new(Refusing);
    handle.register_runner("aws.greengrass.lambda", refusing.clone());
    assert!(Arc::ptr_eq(&handle.rt.runner_for(&lambda), &refusing));
    assert!(Arc::ptr_eq(&handle.rt.runner_for(&generic), &process));
    let builtin = ComponentSpec {
        recipe: None,
        ..spec("aws.greengrass.lambda")
    };
    assert!(Arc::ptr_eq(&handle.rt.runner_for(&builtin), &process));
    drop(core.shutdown().await);
}
