//! The lichen cloud's control plane.
//!
//! - [`api`]: the HTTPS admin API — one route table from which the axum router and the
//!   OpenAPI document ([`openapi`]) are both built; handlers over any
//!   `lichen_cloud_store::Backend`.
//! - [`server`]: `lichen cloud run` — data directory, CA, TLS accept loop, first admin
//!   token, `api.json`, and the one seam where the device endpoint starts.
//! - [`device_api`]: `/device/v1` on the same listener, for cores' fleet agents: recipes and
//!   artifacts of what is deployed to them, authenticated by their thing certificates.
//! - [`client`]: the HTTPS client the CLI and the tests use.
//! - [`bundle`]: provisioning bundles (key generated locally, only the CSR sent).
//!
//! Never depends on `lichen-core`, `lichen-node` or `lichen-ipc`.

pub mod api;
pub mod bundle;
pub mod client;
pub mod compose;
pub mod device_api;
pub mod device_resolve;
pub mod device_streams;
pub mod openapi;
pub mod server;
pub mod tls;
pub mod tokens;
pub mod validate;

pub use api::{ApiExtension, AppState, DeviceEndpoint, Endpoints};
pub use client::{ClientError, CloudClient};
pub use server::{ApiInfo, CloudConfig, CloudHandle, DataDir, StartedEndpoint};

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] lichen_sys::SysError),
    #[error("cloud CA: {0}")]
    Pki(#[from] lichen_pki::PkiError),
    #[error("store: {0}")]
    Store(#[from] lichen_cloud_store::StoreError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening for the {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}
