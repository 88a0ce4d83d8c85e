//! Component lifecycle: states, process supervision, the BROKEN rule.

pub mod state;
