//! Greengrass v2 component recipes for lichen.
//!
//! This is a protocol crate: recipe text in, typed values out. The runtime stores recipes,
//! picks the manifest for its platform, renders recipe variables and resolves dependency
//! versions with it, but nothing here touches processes, the network or (apart from the
//! [`parse_recipe_file`] convenience) the filesystem.
//!
//! Compatibility choices, all following the Java nucleus and the developer guide:
//! keys are matched ignoring ASCII case (`Setenv`/`setenv`, `URI`/`Uri`); `docker:` and
//! `s3:` artifacts are accepted at parse time (fetching is the runtime's business);
//! version requirements follow npm semantics; unsubstituted build placeholders in the
//! component name or version are rejected with an error that says so.

#![warn(missing_docs)]

mod error;
mod keys;
pub mod lifecycle;
mod model;
mod parse;
pub mod platform;
pub mod range;
pub mod resolve;
pub mod variables;

pub use error::RecipeError;
pub use lifecycle::{
    Interpolator, Lifecycle, SkipIf, Step, default_timeout, select_global_lifecycle,
    selection_keywords,
};
pub use model::{
    Access, Artifact, ComponentType, Dependency, DependencyType, Manifest, Permission, Recipe,
    SelectedComponent, Unarchive,
};
pub use parse::{
    MAX_DEFAULT_CONFIGURATION_DEPTH, MAX_RECIPE_BYTES, RECIPE_FORMAT_VERSION, find_bidi_control,
    parse_recipe, parse_recipe_file, recipe_from_value,
};
pub use platform::{Platform, PlatformRequirement, PlatformValue};
pub use range::VersionRange;
pub use resolve::{MAX_COMPONENTS_PER_DEPLOYMENT, ResolveError, RootRequirement, resolve_versions};
pub use variables::{VariableSource, interpolate, interpolate_json};
