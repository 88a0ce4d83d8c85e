//! The lichen cloud's component store.
//!
//! Publishing a component version takes its recipe (YAML or JSON, validated by
//! `lichen-recipe`) and every artifact its manifests list, streams each artifact into the
//! content-addressed artifact store computing its SHA-256, and stores the recipe as JSON
//! with each artifact's `Digest` (base64 of the SHA-256, as Greengrass writes it) and
//! `Algorithm: SHA-256`. Versions are immutable. A publish that fails leaves nothing behind;
//! deleting a version is refused while a deployment names it and removes the artifacts no
//! other version refers to.
//!
//! [`Components`] holds the logic; [`http::router`] serves it (nested by the control plane
//! under `/v1`), [`http::device_router`] serves artifact downloads to devices, and
//! [`openapi_paths`] documents the routes. [`upload`] is the publish body's format.
//!
//! Bounds: recipe 4 MiB (`lichen_recipe::MAX_RECIPE_BYTES`), upload header
//! [`upload::MAX_HEADER_BYTES`] (9 MiB), [`upload::MAX_ARTIFACTS_PER_VERSION`] (256)
//! artifacts of URIs up to [`upload::MAX_URI_BYTES`] (1 KiB), and [`Limits`] (2 GiB per
//! artifact, 4 GiB per version by default); beyond them 413.

mod error;
pub mod http;
pub mod local;
mod openapi;
pub mod recipe;
mod service;
pub mod upload;

pub use error::{ComponentError, Result};
pub use http::{ARTIFACT_PATH, RECIPE_PATH, ROUTES, device_router, router};
pub use openapi::{openapi_paths, openapi_schemas};
pub use service::{Components, Limits, SWEEP_GRACE, SWEEP_PAGE};
