//! `lichen completions bash|zsh|fish`: the completion script for a shell, generated from the
//! same clap definition the binary parses with (so it never lags behind a new flag).

use std::io::Write;
use std::process::ExitCode;

use clap_complete::Shell;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn run<C: clap::CommandFactory>(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = C::command();
    let name = command.get_name().to_string();
    // Generated into memory first: clap_complete panics on a write error (a closed pipe, as
    // in `lichen completions bash | head`), and that must be an ordinary exit.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::anyhow!("writing the completion script: {e}")),
    }
}
