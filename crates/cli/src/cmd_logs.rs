//! `lichen logs [NAME] [--follow]`: reads the log files (read-only; the core writes them).

use std::process::ExitCode;

use anyhow::Context;
use lichen_core::paths::RootLayout;

use crate::Global;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// A component name; without it, the core's own log.
    name: Option<String>,
    /// Keep printing new lines as they are written (survives rotation).
    #[arg(long, short = 'f')]
    follow: bool,
    /// How many of the last lines to print first.
    #[arg(long, short = 'n', default_value_t = 50)]
    lines: usize,
}

pub fn run(global: &Global, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let layout = RootLayout::new(global.root());
    let path = match &args.name {
        Some(n) => layout.component_log(n),
        None => layout.core_log(),
    };
    if !path.exists() {
        anyhow::bail!(
            "no log at {}{}",
            path.display(),
            args.name
                .as_ref()
                .map(|n| format!(" (has component {n} been deployed on this root?)"))
                .unwrap_or_default()
        );
    }
    let lines = lichen_core::logs::tail_lines_rotated(&path, args.lines)
        .with_context(|| format!("reading {}", path.display()))?;
    for l in &lines {
        println!("{l}");
    }
    if args.follow {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            tokio::spawn(lichen_core::logs::follow(path.clone(), true, tx));
            while let Some(line) = rx.recv().await {
                println!("{line}");
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}
