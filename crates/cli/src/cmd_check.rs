//! `lichen check`: placeholder until the checks land.
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {}

pub fn run(_global: &crate::Global, _args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("lichen check: not supported yet")
}
