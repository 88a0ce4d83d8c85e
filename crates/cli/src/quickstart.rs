//! `lichen quickstart`: a cloud and one core on this machine, the example components
//! deployed from the one to the other the way a fleet gets them.
//!
//! The cloud is `lichen cloud run` as a child process (its own process group, so Ctrl-C
//! reaches only this process, which stops the core first and then the cloud; it gets SIGTERM
//! should this process die without doing so). Its stderr is the cloud's log. The core runs
//! in this process on a provisioning bundle, as `lichen core run --config` would. Then:
//! thing + certificate (bundle) → examples published to the cloud's component store → the
//! core started → deployment to the thing group → progress until the device reports it.
//!
//! Layout under DIR (default ./lichen-demo):
//!   cloud/      the cloud's data directory (`lichen cloud --data DIR/cloud …`)
//!   cloud.log   the cloud's log (appended)
//!   device/     the core's provisioning bundle (config.yaml, key 0600, certificate, CA)
//!   core/       the core's root (`lichen --root DIR/core …`); logs in core/logs/
//!   examples/   the compiled-in example recipes and artifacts that were published
//!
//! `--local` keeps the earlier demo: one core on DIR with the examples deployed locally.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lichen_cloud::CloudClient;
use lichen_cloud::bundle;
use lichen_cloud::client::encode;
use lichen_cloud_components::local::{Progress, find_artifacts, upload_header, upload_reader};
use lichen_cloud_components::recipe::PublishedRecipe;
use lichen_cloud_components::upload::UPLOAD_CONTENT_TYPE;
use lichen_core::paths::RootLayout;
use lichen_core::settings::Settings;
use serde_json::{Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, text};
use crate::cmd_core::{EXAMPLES, StopSignals, current_uid, runtime, start_node, write_examples};
use crate::logging::{LogFormat, Terminal, init_logging};

/// The demo's thing and thing group in the cloud.
const THING: &str = "lichen-demo-core";
const GROUP: &str = "lichen-demo";
/// How long the cloud may take to print its ready line.
const CLOUD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cloud gets to stop on SIGTERM before it is killed.
const CLOUD_STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(300);
/// The cloud's ready line is one small JSON object.
const MAX_READY_LINE: u64 = 64 * 1024;

#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Where the demo keeps its state (default ./lichen-demo, or --root with --local).
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Only a core, the examples deployed to it locally (no cloud): the earlier demo.
    #[arg(long)]
    local: bool,
    /// Where the demo cloud's HTTPS API listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    api_listen: SocketAddr,
    /// Where the demo cloud's device endpoint (mTLS MQTT) listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8883")]
    mqtt_listen: SocketAddr,
    /// How long to wait for the core to connect and for the deployment to finish, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

/// Where everything is, under the quickstart's directory.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn cloud_data(&self) -> PathBuf {
        self.dir.join("cloud")
    }
    fn cloud_log(&self) -> PathBuf {
        self.dir.join("cloud.log")
    }
    fn bundle(&self) -> PathBuf {
        self.dir.join("device")
    }
    fn core_root(&self) -> PathBuf {
        self.dir.join("core")
    }
    fn examples(&self) -> PathBuf {
        self.dir.join("examples")
    }
}

pub fn run(global: &Global, args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    if args.local {
        let root = args
            .dir
            .or_else(|| global.root.clone())
            .unwrap_or_else(|| PathBuf::from("lichen-demo"));
        return crate::cmd_core::quickstart_local(global, root);
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("lichen-demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute, so that the commands printed at the end work from any directory.
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let layout = Layout { dir };
    let core_layout = RootLayout::new(layout.core_root());

    // Spawned from the main thread, which lives as long as the process: the child's
    // parent-death signal is tied to the thread that forked it.
    let mut cloud = CloudProcess::spawn(&layout, &args)?;
    let outcome = runtime()?.block_on(async {
        let mut signals = StopSignals::install()?;
        let client = Connection {
            data: Some(layout.cloud_data()),
            ..Connection::default()
        }
        .client()?;
        let steps = steps_bar();
        let settings = tokio::select! {
            r = prepare_cloud(&client, &layout, &steps) => r?,
            s = signals.wait() => {
                steps.finish_and_clear();
                println!("{s}: stopping the demo cloud…");
                return Ok(Outcome::Interrupted);
            }
        };
        let format = LogFormat::resolve(global.log_format, &settings)?;
        init_logging(
            &core_layout,
            &settings,
            format,
            Terminal::Quiet,
            global.verbose,
        )?;
        steps.set_message("starting the core");
        let node = start_node(core_layout.root(), settings).await?;
        steps.inc(1);
        let deployed = tokio::select! {
            r = deploy_and_wait(&client, node.handle(), &steps, args.timeout) => r,
            s = signals.wait() => {
                steps.finish_and_clear();
                println!("{s}: stopping the demo core and cloud…");
                node.shutdown().await;
                return Ok(Outcome::Interrupted);
            }
        };
        steps.finish_and_clear();
        let outcome = match deployed {
            Ok(id) => {
                print_summary(&layout, &core_layout, &cloud, node.handle(), &id);
                let signal = signals.wait().await;
                println!("\n{signal}: stopping the demo core and cloud…");
                Outcome::Succeeded
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                eprintln!(
                    "logs: the core {} ({}/<component>.log), the cloud {}",
                    core_layout.core_log().display(),
                    core_layout.logs_dir().display(),
                    layout.cloud_log().display()
                );
                Outcome::Failed
            }
        };
        node.shutdown().await;
        Ok::<_, anyhow::Error>(outcome)
    });
    let stopped = cloud.stop();
    let outcome = outcome?;
    match stopped {
        Ok(()) => println!("stopped the core and the cloud"),
        Err(e) => eprintln!("error: stopping the cloud: {e:#}"),
    }
    Ok(match outcome {
        Outcome::Succeeded | Outcome::Interrupted => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::FAILURE,
    })
}

enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
}

/// The steps shown as "n/6 what is happening".
fn steps_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(6);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `lichen cloud run` as a child process; stopped (SIGTERM, then SIGKILL) on drop.
struct CloudProcess {
    child: Option<Child>,
    ready: Value,
    // Held open so that the cloud never writes to a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl CloudProcess {
    fn spawn(layout: &Layout, args: &QuickstartArgs) -> anyhow::Result<CloudProcess> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("finding the lichen binary")?;
        let log_path = layout.cloud_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .args(["cloud", "run", "--json", "--hostname", "localhost"])
            .arg("--data")
            .arg(layout.cloud_data())
            .arg("--api-listen")
            .arg(args.api_listen.to_string())
            .arg("--mqtt-listen")
            .arg(args.mqtt_listen.to_string())
            .env(
                "LICHEN_LOG",
                std::env::var("LICHEN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Not in the terminal's process group: Ctrl-C comes to the quickstart, which
            // stops the core before the cloud.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().context("starting `lichen cloud run`")?;
        let stdout = child.stdout.take().context("the cloud's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // The ready line is read on a thread so that a cloud that hangs cannot hang us.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // One short JSON line; bounded so that a confused child cannot grow it.
            let read = reader.by_ref().take(MAX_READY_LINE).read_line(&mut line);
            let _ = tx.send((read.map(|_| line), reader));
        });
        let answer = rx.recv_timeout(CLOUD_START_TIMEOUT);
        let ready = match &answer {
            Ok((Ok(line), _)) if !line.trim().is_empty() => serde_json::from_str::<Value>(line)
                .with_context(|| format!("the cloud's ready line {line:?}")),
            Ok(_) => Err(anyhow::anyhow!(
                "the cloud did not start:\n{}\n(whole log: {})",
                tail(&log_path, 10),
                log_path.display()
            )),
            Err(_) => Err(anyhow::anyhow!(
                "the cloud did not start within {} s; see {}",
                CLOUD_START_TIMEOUT.as_secs(),
                log_path.display()
            )),
        };
        match (ready, answer) {
            (Ok(ready), Ok((_, reader))) => Ok(CloudProcess {
                child: Some(child),
                ready,
                _stdout: Some(reader),
            }),
            (ready, _) => {
                let _ = stop_child(&mut child);
                Err(ready
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("the cloud did not start")))
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL after [`CLOUD_STOP_TIMEOUT`]; an error names how it ended.
    fn stop(&mut self) -> anyhow::Result<()> {
        match self.child.take() {
            Some(mut child) => stop_child(&mut child),
            None => Ok(()),
        }
    }
}

impl Drop for CloudProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if child.try_wait()?.is_none() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + CLOUD_STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("the cloud exited with {status}"))
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the cloud did not stop within {} s of SIGTERM and was killed",
                CLOUD_STOP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a log, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An API answer, with 404 as `None`.
async fn get_optional(client: &CloudClient, path: &str) -> anyhow::Result<Option<Value>> {
    match client.call::<Value>("GET", path, None).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates what the API refuses with 409 when it exists already (a second run).
async fn create_unless_exists(
    client: &CloudClient,
    path: &str,
    body: &Value,
) -> anyhow::Result<()> {
    match client.call::<Value>("POST", path, Some(body)).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Steps 1–3: the group, the thing with its bundle, the examples in the component store.
/// Returns the core's settings, read from the bundle as `lichen core run --config` reads them.
async fn prepare_cloud(
    client: &CloudClient,
    layout: &Layout,
    steps: &indicatif::ProgressBar,
) -> anyhow::Result<Settings> {
    steps.set_message(format!("provisioning {THING} in group {GROUP}"));
    create_unless_exists(
        client,
        "/v1/thing-groups",
        &json!({"name": GROUP, "description": "lichen quickstart"}),
    )
    .await?;
    provision(client, &layout.bundle()).await?;
    steps.inc(1);

    steps.set_message("publishing the example components");
    let (recipes, artifacts) = write_examples(&layout.examples())?;
    for (file, recipe_text) in EXAMPLES {
        steps.set_message(format!("publishing {file}"));
        publish(client, recipe_text, &recipes.join(file), &artifacts).await?;
    }
    steps.inc(1);

    let config = layout.bundle().join(bundle::CONFIG_FILE);
    let mut settings = Settings::load(&config)?;
    // The demo runs in the user's own directory, which the default component user (as
    // root: ggc_user or nobody) may not be able to reach: its components run as whoever
    // ran it.
    settings.posix_user = current_uid().map(|u| u.to_string()).unwrap_or_default();
    Ok(settings)
}

/// The demo thing with a certificate for a key made here, and its bundle. A second run
/// keeps the identity it finds (key and certificate in the bundle, thing in the cloud) and
/// rewrites only the CA and config.yaml, whose endpoints may have moved.
async fn provision(client: &CloudClient, dir: &Path) -> anyhow::Result<()> {
    use bundle::{THING_CERT_FILE, THING_KEY_FILE};
    use lichen_sys::atomic::{PRIVATE, PUBLIC, write_atomic};
    let thing_path = format!("/v1/things/{}", encode(THING));
    let have_identity = dir.join(THING_KEY_FILE).exists() && dir.join(THING_CERT_FILE).exists();
    let existing = get_optional(client, &thing_path).await?;
    match (existing, have_identity) {
        (Some(_), true) => {
            let member = format!(
                "/v1/thing-groups/{}/members/{}",
                encode(GROUP),
                encode(THING)
            );
            client.call::<Value>("PUT", &member, None).await?;
        }
        (existing, _) => {
            if existing.is_some() {
                // The cloud knows the thing but its key is gone: a new identity.
                client.call::<Value>("DELETE", &thing_path, None).await?;
            }
            lichen_cloud::server::private_dir(dir)?;
            let keys = bundle::new_key_and_csr(THING)?;
            client
                .call::<Value>(
                    "POST",
                    "/v1/things",
                    Some(&json!({"name": THING, "groups": [GROUP]})),
                )
                .await?;
            let cert: Value = client
                .call(
                    "POST",
                    "/v1/certificates",
                    Some(&json!({"csr": keys.csr_pem, "thing": THING})),
                )
                .await
                .with_context(|| format!("issuing the certificate of {THING}"))?;
            // The key first: a crash never leaves a certificate without its key.
            write_atomic(&dir.join(THING_KEY_FILE), keys.key_pem.as_bytes(), PRIVATE)?;
            write_atomic(
                &dir.join(THING_CERT_FILE),
                text(&cert, "pem").as_bytes(),
                PUBLIC,
            )?;
        }
    }
    let endpoints: Value = client.call("GET", "/v1/endpoints", None).await?;
    let config = bundle::thing_config_yaml(
        THING,
        text(&endpoints, "iotDataEndpoint"),
        text(&endpoints, "apiEndpoint"),
    );
    write_atomic(
        &dir.join(bundle::CA_FILE),
        text(&endpoints, "rootCaPem").as_bytes(),
        PUBLIC,
    )?;
    write_atomic(&dir.join(bundle::CONFIG_FILE), config.as_bytes(), PUBLIC)?;
    Ok(())
}

/// Publishes one example (recipe + its artifacts found under `artifacts`); a version the
/// store already holds is left as it is (versions are immutable).
async fn publish(
    client: &CloudClient,
    recipe_text: &str,
    recipe_path: &Path,
    artifacts: &Path,
) -> anyhow::Result<()> {
    let recipe = PublishedRecipe::parse(recipe_text, &recipe_path.display().to_string())?;
    let found = find_artifacts(&recipe, Some(artifacts))?;
    let header = upload_header(recipe_text, &found);
    let length = header.encode_prefix().len() as u64 + found.iter().map(|a| a.size).sum::<u64>();
    let progress: Progress = Arc::new(|_| {});
    let body = upload_reader(&header, &found, progress).await?;
    let answer = client
        .send_stream(
            "POST",
            "/v1/components",
            &[("content-type", UPLOAD_CONTENT_TYPE)],
            body,
            length,
        )
        .await?;
    match answer.status {
        200..=299 | 409 => Ok(()),
        status => bail!(
            "publishing {}: {status} {}",
            recipe.id,
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(500)
                .collect::<String>()
        ),
    }
}

/// Steps 4–6: waits for the core to be online, deploys the examples to the group, and
/// follows the device's status (and the core's own progress) until it is final. Returns
/// the deployment id once the device reports SUCCEEDED.
async fn deploy_and_wait(
    client: &CloudClient,
    core: &lichen_core::CoreHandle,
    steps: &indicatif::ProgressBar,
    timeout_secs: u64,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let thing_path = format!("/v1/things/{}", encode(THING));
    steps.set_message(format!("waiting for {THING} to connect"));
    loop {
        let thing: Value = client.call("GET", &thing_path, None).await?;
        if thing["online"] == true {
            steps.inc(1);
            break;
        }
        if Instant::now() >= deadline {
            bail!("{THING} did not connect to the cloud within {timeout_secs} s");
        }
        tokio::time::sleep(POLL).await;
    }

    let mut components = serde_json::Map::new();
    for (file, _) in EXAMPLES {
        if let Some((name, version)) = file.trim_end_matches(".yaml").rsplit_once('-') {
            components.insert(name.to_string(), json!({"componentVersion": version}));
        }
    }
    let created: Value = client
        .call(
            "POST",
            "/v1/deployments",
            Some(&json!({
                "target": format!("group:{GROUP}"),
                "deploymentName": "quickstart",
                "components": components,
            })),
        )
        .await
        .context("creating the deployment")?;
    let id = text(&created, "deploymentId").to_string();
    if id.is_empty() {
        bail!("the cloud's answer to the deployment names no deploymentId: {created}");
    }
    steps.inc(1);
    let status_path = format!("/v1/deployments/{}/status", encode(&id));
    loop {
        let status: Value = client.call("GET", &status_path, None).await?;
        let device = status["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| text(d, "thing") == THING)
            .cloned()
            .unwrap_or(Value::Null);
        let state = text(&device, "status");
        // The fleet agent runs the job as a core deployment of the same id.
        let local = core
            .deployment(&id)
            .ok()
            .and_then(|r| r.progress)
            .unwrap_or_default();
        steps.set_message(format!(
            "deployment {id} on {THING}: {} {local}",
            if state.is_empty() { "QUEUED" } else { state }
        ));
        match state {
            "SUCCEEDED" => {
                steps.inc(1);
                return Ok(id);
            }
            "" | "QUEUED" | "IN_PROGRESS" => {}
            other => {
                let details = &device["statusDetails"];
                bail!(
                    "deployment {id} ended {other} on {THING}: {} {}",
                    text(details, "detailed-deployment-status"),
                    text(details, "deployment-failure-cause")
                );
            }
        }
        if Instant::now() >= deadline {
            bail!("deployment {id} did not finish on {THING} within {timeout_secs} s");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_summary(
    layout: &Layout,
    core: &RootLayout,
    cloud: &CloudProcess,
    handle: &lichen_core::CoreHandle,
    id: &str,
) {
    let data = layout.cloud_data();
    let data = data.display();
    let root = core.root().display();
    println!(
        "lichen quickstart: a cloud and a core are running in {}",
        layout.dir.display()
    );
    println!("deployment {id} SUCCEEDED on {THING} (thing group {GROUP})");
    println!();
    crate::output::component_table(&handle.list_components());
    println!();
    println!(
        "Cloud API:   {}  (CA {}, pid {})",
        text(&cloud.ready, "url"),
        text(&cloud.ready, "caPath"),
        cloud.pid().unwrap_or(0)
    );
    println!("Admin token: {data}/admin.token (0600)");
    println!(
        "Devices:     {} (MQTT over mTLS)",
        text(&cloud.ready, "iotDataEndpoint")
    );
    println!("Logs:        cloud {}", layout.cloud_log().display());
    println!(
        "             core  {}, components {}/<component>.log",
        core.core_log().display(),
        core.logs_dir().display()
    );
    println!("Try:         lichen cloud --data {data} device list");
    println!("             lichen cloud --data {data} device status {THING}");
    println!("             lichen cloud --data {data} deployment status {id}");
    println!("             lichen cloud --data {data} component list");
    println!("             lichen --root {root} component list");
    println!("             lichen --root {root} logs com.example.HelloWorld --follow");
    println!("Stop:        Ctrl-C");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
