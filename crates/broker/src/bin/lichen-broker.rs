//! Runs the lichen broker on its own, from a JSON configuration file: used by the persistence
//! tests (kill -9) and the benchmark. `lichen core run` embeds the same broker.
//!
//! Usage: `lichen-broker CONFIG.json [--print-addrs]`
//! Prints `listening <kind> <addr>` for each listener once ready, then serves until SIGTERM or
//! SIGINT. `--device NAME=CERT.pem` (repeatable) registers devices at start.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LICHEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: lichen-broker CONFIG.json [--device NAME=CERT.pem]...");
        return ExitCode::from(2);
    };
    let mut devices = Vec::new();
    while let Some(a) = args.next() {
        if a == "--device"
            && let Some(spec) = args.next()
            && let Some((name, file)) = spec.split_once('=')
        {
            devices.push((name.to_string(), file.to_string()));
        } else {
            eprintln!("unknown argument {a}");
            return ExitCode::from(2);
        }
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config: lichen_broker::BrokerConfig = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let bus = lichen_bus::Bus::new();
        let handle = match lichen_broker::start(config, bus).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        for (name, file) in devices {
            let pem = match std::fs::read_to_string(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = handle.add_device(&name, &pem) {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        }
        for l in handle.local_addrs() {
            let kind = match l.kind {
                lichen_broker::ListenerKind::Tls => "tls",
                lichen_broker::ListenerKind::Tcp => "tcp",
            };
            println!("listening {kind} {}", l.addr);
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("signal: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}
