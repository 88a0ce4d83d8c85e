//! Local deployments: queue, version resolution, execution and rollback.

pub mod model;
