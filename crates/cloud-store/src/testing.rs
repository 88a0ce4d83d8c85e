//! A throwaway PostgreSQL cluster for tests (feature `test-support`), reusable by every crate
//! that tests against the PostgreSQL backend.
//!
//! [`PgCluster::shared`] starts one cluster per test binary (the first call pays `initdb`, a
//! second or so) and [`PgCluster::create_database`] gives each test its own empty database.
//! The cluster lives in a private temporary directory and listens only on a Unix socket
//! there (`listen_addresses = ''`), with trust authentication: nothing outside the directory
//! can reach it. PostgreSQL refuses to run as root, so when the tests run as root the cluster
//! runs as `nobody` (std's `Command::uid` also drops supplementary groups); as a normal user it
//! runs as that user.
//!
//! When `initdb`/`pg_ctl` are not installed, `start` returns Ok(None) and the caller skips —
//! unless `LICHEN_TEST_REQUIRE_ALL=1` (set by `scripts/test`), where that is an error.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::NoTls;

/// Why a cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
#[error("test PostgreSQL cluster: {0}")]
pub struct ClusterError(pub String);

type Result<T> = std::result::Result<T, ClusterError>;

/// The role the tests connect as (created by `initdb -U`).
pub const SUPERUSER: &str = "lichen";
const PORT: u16 = 5432;

#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    stopped: AtomicBool,
}

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL's server is installed.
pub fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    // Debian installs the server outside PATH, one directory per major version: newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|b| std::cmp::Reverse(b.0));
    if let Some((_, dir)) = versions.into_iter().find(|(_, dir)| has_server(dir)) {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| has_server(dir)))
}

fn require_all() -> bool {
    std::env::var("LICHEN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The uid/gid to run PostgreSQL as: None unless this process is root.
fn unprivileged_user() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("nobody")
        .map_err(|e| ClusterError(format!("looking up user nobody: {e}")))?
        .ok_or_else(|| ClusterError("running as root and there is no user nobody".into()))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

impl PgCluster {
    /// Starts a new cluster (see the module docs); Ok(None) when PostgreSQL is not installed.
    /// fsync is off: the data is throwaway and the tests run faster.
    pub fn start() -> Result<Option<PgCluster>> {
        PgCluster::start_with(false)
    }

    /// With `durable`, the server keeps PostgreSQL's default fsync and synchronous commit
    /// (for benchmarks that should count the cost of a durable commit).
    pub fn start_with(durable: bool) -> Result<Option<PgCluster>> {
        let Some(bin) = find_bindir() else {
            if require_all() {
                return Err(ClusterError(
                    "initdb/pg_ctl not found and LICHEN_TEST_REQUIRE_ALL=1: run \
                     scripts/setup-test-deps"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let run_as = unprivileged_user()?;
        // Short and under /tmp: the socket path must fit in sun_path (108 bytes).
        let dir = PathBuf::from(format!(
            "/tmp/lichen-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| ClusterError(format!("creating {}: {e}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ClusterError(format!("chmod {}: {e}", dir.display())))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| ClusterError(format!("chown {}: {e}", dir.display())))?;
        }
        let cluster = PgCluster {
            dir,
            bin,
            run_as,
            stopped: AtomicBool::new(false),
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_dir(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        let speed = if durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c max_connections=200{speed}",
            cluster.dir.display()
        );
        let log = cluster.dir.join("postgres.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(Some(cluster))
    }

    /// One cluster for the whole test binary, stopped when the process exits.
    pub fn shared() -> Result<Option<&'static PgCluster>> {
        static SHARED: OnceLock<std::result::Result<Option<PgCluster>, String>> = OnceLock::new();
        static REGISTERED: AtomicBool = AtomicBool::new(false);
        extern "C" fn stop_shared() {
            if let Some(Ok(Some(cluster))) = SHARED.get() {
                cluster.stop();
            }
        }
        let started = SHARED.get_or_init(|| {
            let result = PgCluster::start().map_err(|e| e.0);
            if matches!(result, Ok(Some(_))) && !REGISTERED.swap(true, Ordering::SeqCst) {
                // SAFETY: `atexit` only stores the function pointer; `stop_shared` touches
                // nothing but the static above.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            result
        });
        match started {
            Ok(cluster) => Ok(cluster.as_ref()),
            Err(e) => Err(ClusterError(e.clone())),
        }
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let mut command = Command::new(self.bin.join(tool));
        command
            .args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let out = command
            .output()
            .map_err(|e| ClusterError(format!("running {tool}: {e}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            return Err(ClusterError(format!(
                "{tool} failed ({}): {}{}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The Unix socket directory the server listens in.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The connection URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            self.dir.display()
        )
    }

    /// Creates an empty database `t_<random>` and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        let name = format!("t_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .map_err(|e| ClusterError(format!("connecting: {e}")))?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| ClusterError(format!("CREATE DATABASE {name}: {e}")))?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(&name))
    }

    /// Stops the server (immediately: the data is throwaway) and removes the directory.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        ) {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
