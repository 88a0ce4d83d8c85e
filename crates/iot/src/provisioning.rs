//! Fleet provisioning (in progress).
