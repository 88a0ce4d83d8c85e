//! See the crate description and ARCHITECTURE.md.
