//! What `lichen cloud run` starts: the data directory and CA, the store, the component store's
//! routes, the device endpoint, and the API over them. The one place that knows the concrete
//! parts; [`crate::server::start`] is generic over them.

use crate::CloudError;
use crate::server::{CloudConfig, CloudHandle};

/// Starts a cloud as `lichen cloud run` does.
pub async fn start_cloud(config: &CloudConfig) -> Result<CloudHandle, CloudError> {
    let _ca = crate::server::prepare_data_dir(&config.data_dir)?;
    Err(CloudError::Config(
        "`lichen cloud run` is not supported yet in this build: the store backends \
         (lichen-cloud-store's SQLite and PostgreSQL) have not landed"
            .into(),
    ))
}
