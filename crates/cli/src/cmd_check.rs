//! `lichen check`: runs `lichen_node::check` and prints its report (the checks themselves live
//! in the node crate, which knows the settings, the layout and the control channel).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lichen_node::check::{CheckOptions, Report, Status};

use crate::Global;

/// The config file a packaged core reads (the unit's `--config`).
pub const DEFAULT_CONFIG: &str = "/etc/lichen/config.yaml";

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The core's config file. Defaults to $LICHEN_CONFIG, then /etc/lichen/config.yaml when
    /// it exists (else the defaults apply).
    #[arg(long, value_name = "FILE", env = "LICHEN_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds each network step (connect, TLS handshake, a request to the core) may take.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    timeout: u64,
}

pub fn run(global: &Global, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    let options = CheckOptions {
        root: global.root(),
        config,
        timeout: Duration::from_secs(args.timeout.max(1)),
        core_is_root: nix::unistd::geteuid().is_root(),
    };
    let report = lichen_node::check::run(&options);
    if global.json {
        crate::output::json(&report);
    } else {
        print_report(&report);
    }
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(report: &Report) {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.checks {
        let mark = match c.status {
            Status::Ok => "ok     ",
            Status::Warning => "warning",
            Status::Error => "error  ",
        };
        println!("{mark}  {:width$}  {}", c.id, c.message);
        if let Some(hint) = &c.hint {
            println!("{:pad$}hint: {hint}", "", pad = 7 + 2 + width + 2);
        }
    }
    let s = &report.summary;
    println!();
    println!(
        "{} ok, {} warning{}, {} error{}",
        s.ok,
        s.warning,
        if s.warning == 1 { "" } else { "s" },
        s.error,
        if s.error == 1 { "" } else { "s" }
    );
}
