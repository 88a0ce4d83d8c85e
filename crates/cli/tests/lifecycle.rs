//! Lifecycle, configuration and dependency behaviour of the real core binary.

mod common;

use std::time::Duration;

use common::*;

const STEPS: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Steps
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration:
    greeting: hello
    nested: { port: 8080 }
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Setenv:
        FROM_LIFECYCLE: lifecycle-level
        OVERRIDDEN: lifecycle-level
      Install:
        Script: echo installed > install.txt
      Startup:
        Script: |
          echo "$GREETING $FROM_LIFECYCLE $OVERRIDDEN port={configuration:/nested/port} thing={iot:thingName}" > startup.txt
          echo "$SVCUID" > svcuid.txt
          echo "$AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT" > socket.txt
          pwd > cwd.txt
          (sleep 300) &
          echo $! > daemon.pid
        Setenv:
          GREETING: "{configuration:/greeting}"
          OVERRIDDEN: step-level
      Shutdown:
        Script: echo stopped >> shutdown.txt; kill $(cat daemon.pid)
"#;

const SKIPPED: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Skipped
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Install:
        Skipif: onpath sh
        Script: echo should-not-run > install.txt
      Run:
        Skipif: exists /definitely/not/here
        Script: echo ran > run.txt
"#;

#[test]
fn steps_configuration_setenv_and_skipif() {
    let mut core = TestCore::start();
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[("steps.yaml", STEPS), ("skipped.yaml", SKIPPED)],
    );
    let d = core.deploy(
        &recipes,
        None,
        &[
            "--merge",
            "com.test.Steps=1.0.0",
            "-m",
            "com.test.Skipped=1.0.0",
            "--update-config",
            r#"{"com.test.Steps":{"MERGE":{"greeting":"bonjour"}}}"#,
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());

    let work = core.work("com.test.Steps");
    assert_eq!(read(&work.join("install.txt")).trim(), "installed");
    assert_eq!(
        read(&work.join("startup.txt")).trim(),
        "bonjour lifecycle-level step-level port=8080 thing=test-thing"
    );
    assert_eq!(
        read(&work.join("cwd.txt")).trim(),
        work.canonicalize().unwrap().to_str().unwrap()
    );
    let svcuid = read(&work.join("svcuid.txt"));
    assert_eq!(
        svcuid.trim().len(),
        32,
        "SVCUID is a 128-bit token: {svcuid}"
    );
    assert!(
        read(&work.join("socket.txt"))
            .trim()
            .ends_with("ipc.socket")
    );
    let details = core.component("com.test.Steps");
    assert_eq!(details["state"], "RUNNING");
    assert_eq!(details["configuration"]["greeting"], "bonjour");
    assert_eq!(details["configuration"]["nested"]["port"], 8080);

    // Skipif: install skipped because sh is on PATH; run not skipped.
    let skipped = core.work("com.test.Skipped");
    assert!(!skipped.join("install.txt").exists());
    eventually("Skipped finishes", Duration::from_secs(10), || {
        read(&skipped.join("run.txt")).trim() == "ran"
    });
    core.wait_state("com.test.Skipped", "FINISHED", Duration::from_secs(10));

    // SIGTERM: the Shutdown step runs and the background daemon is gone.
    let daemon: i32 = read(&work.join("daemon.pid")).trim().parse().unwrap();
    assert!(pid_alive(daemon));
    core.stop();
    assert_eq!(read(&work.join("shutdown.txt")).trim(), "stopped");
    eventually("daemon ended", Duration::from_secs(5), || {
        !pid_alive(daemon)
    });
}

fn dep_recipe(name: &str, deps: &str, script: &str) -> String {
    format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: {name}
ComponentVersion: "1.0.0"
ComponentDependencies:
{deps}
Manifests:
  - Platform: {{ os: linux }}
    Lifecycle:
      {script}
"#
    )
}

#[test]
fn hard_and_soft_dependencies_order_and_restart() {
    let core = TestCore::start();
    let log = core.dir.path().join("order.log");
    let log = log.display();
    // Base takes a while to start; both dependents must wait for it.
    let base = dep_recipe(
        "com.test.Base",
        "  {}",
        &format!("Startup: \"sleep 1; echo base >> {log}\""),
    )
    .replace("ComponentDependencies:\n  {}\n", "");
    let hard = dep_recipe(
        "com.test.Hard",
        "  com.test.Base:\n    VersionRequirement: ^1.0.0\n    DependencyType: HARD",
        &format!("Run: \"echo hard >> {log}; exec sleep 300\""),
    );
    let soft = dep_recipe(
        "com.test.Soft",
        "  com.test.Base:\n    VersionRequirement: '>=1.0.0'\n    DependencyType: SOFT",
        &format!("Run: \"echo soft >> {log}; exec sleep 300\""),
    );
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[
            ("base.yaml", &base),
            ("hard.yaml", &hard),
            ("soft.yaml", &soft),
        ],
    );
    // Only the dependents are roots: Base comes in as a dependency.
    let d = core.deploy(
        &recipes,
        None,
        &["-m", "com.test.Hard=1.0.0", "-m", "com.test.Soft=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let order = read(std::path::Path::new(&log.to_string()));
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines[0], "base", "dependencies start first: {order}");
    assert!(
        lines.contains(&"hard") && lines.contains(&"soft"),
        "{order}"
    );
    let base_info = core.component("com.test.Base");
    assert_eq!(base_info["root"], false);

    let hard_pid = core.component("com.test.Hard")["pid"].as_i64().unwrap();
    let soft_pid = core.component("com.test.Soft")["pid"].as_i64().unwrap();
    let out = core.cli(&["component", "restart", "com.test.Base"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    core.wait_state("com.test.Hard", "RUNNING", Duration::from_secs(20));
    eventually("HARD dependent restarted", Duration::from_secs(20), || {
        core.component("com.test.Hard")["pid"]
            .as_i64()
            .is_some_and(|p| p != hard_pid)
    });
    assert_eq!(
        core.component("com.test.Soft")["pid"].as_i64().unwrap(),
        soft_pid,
        "SOFT dependent keeps running"
    );
}

#[test]
fn failing_component_goes_broken_after_three_errors() {
    let core = TestCore::start();
    let counter = core.dir.path().join("attempts");
    let recipe = format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Crashy
ComponentVersion: "1.0.0"
Manifests:
  - Platform: {{ os: linux }}
    Lifecycle:
      Run: "echo x >> {}; exit 3"
      Recover: "echo recovering"
"#,
        counter.display()
    );
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("crashy.yaml", &recipe)]);
    // The deployment fails on the first error (stability window); with do-nothing the
    // component keeps retrying until the BROKEN rule stops it.
    let d = core.deploy(
        &recipes,
        None,
        &[
            "-m",
            "com.test.Crashy=1.0.0",
            "--failure-policy",
            "do-nothing",
        ],
    );
    assert_eq!(d["status"], "FAILED", "{d}");
    assert_eq!(d["detailedStatus"], "FAILED_ROLLBACK_NOT_REQUESTED", "{d}");
    let info = core.wait_state("com.test.Crashy", "BROKEN", Duration::from_secs(20));
    assert_eq!(read(&counter).lines().count(), 3, "exactly three attempts");
    let reason = info["statusReason"].as_str().unwrap();
    assert!(
        reason.contains("3 errors") && reason.contains("exit status: 3"),
        "{reason}"
    );
    let log = read(&core.root.join("logs/com.test.Crashy.log"));
    assert!(log.contains("recovering"), "Recover step ran: {log}");
}

#[test]
fn second_core_on_same_root_is_refused() {
    let core = TestCore::start();
    let out = std::process::Command::new(BIN)
        .args(["core", "run", "--root"])
        .arg(&core.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another core is already running"), "{err}");
}

#[test]
fn components_run_as_the_posix_user_and_limits_are_reported() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let core = TestCore::start_with("thingName: t\nposixUser: nobody\n");
    // The component user must be able to reach its work dir under the root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(core.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.User
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Install:
        RequiresPrivilege: true
        Script: id -u > install-uid.txt
      Run: "id -u > run-uid.txt; exec sleep 300"
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("u.yaml", recipe)]);
    let d = core.deploy(
        &recipes,
        None,
        &[
            "-m",
            "com.test.User=1.0.0",
            "--system-limits",
            r#"{"com.test.User":{"memory":65536,"cpus":0.5}}"#,
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.User");
    eventually("run step wrote its uid", Duration::from_secs(10), || {
        work.join("run-uid.txt").exists()
    });
    assert_eq!(
        read(&work.join("install-uid.txt")).trim(),
        "0",
        "RequiresPrivilege runs as root"
    );
    assert_eq!(
        read(&work.join("run-uid.txt")).trim(),
        "65534",
        "Run runs as posixUser nobody"
    );
    let limits = core.component("com.test.User")["resourceLimits"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Either applied through cgroup v2, or a clear reason why not.
    assert!(
        limits.starts_with("applied: memory 65536 KB") || limits.starts_with("not applied: "),
        "{limits}"
    );
    if limits.starts_with("not applied") {
        assert!(
            core.stderr().contains("resource limits"),
            "the core log says so too"
        );
    }
}

#[test]
fn as_root_without_posix_user_components_run_as_the_default_user_never_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let expected = ["ggc_user", "nobody"]
        .iter()
        .find_map(|u| nix::unistd::User::from_name(u).ok().flatten())
        .expect("this machine has ggc_user or nobody");
    // posixUser given but empty: the core's default applies.
    let core = TestCore::start_with("thingName: t\nposixUser: \"\"\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(core.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.DefaultUser
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Install:
        RequiresPrivilege: true
        Script: id -u > install-uid.txt
      Run: "id -u > run-uid.txt; exec sleep 300"
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("u.yaml", recipe)]);
    let d = core.deploy(&recipes, None, &["-m", "com.test.DefaultUser=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.DefaultUser");
    eventually("run step wrote its uid", Duration::from_secs(10), || {
        work.join("run-uid.txt").exists()
    });
    assert_eq!(
        read(&work.join("install-uid.txt")).trim(),
        "0",
        "RequiresPrivilege runs as root"
    );
    assert_eq!(
        read(&work.join("run-uid.txt")).trim(),
        expected.uid.as_raw().to_string(),
        "Run runs as {} when no posixUser is set",
        expected.name
    );
    assert!(
        core.stderr().contains("components run as the default user"),
        "the choice is logged: {}",
        core.stderr()
    );
}

#[test]
fn startup_timeout_from_the_recipe_is_enforced() {
    let core = TestCore::start();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Slow
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Startup:
        Script: exec sleep 30
        Timeout: 1
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("s.yaml", recipe)]);
    let started = std::time::Instant::now();
    let d = core.deploy(
        &recipes,
        None,
        &[
            "-m",
            "com.test.Slow=1.0.0",
            "--failure-policy",
            "do-nothing",
        ],
    );
    assert_eq!(d["status"], "FAILED", "{d}");
    assert_eq!(d["detailedStatus"], "FAILED_ROLLBACK_NOT_REQUESTED");
    let cause = d["failureCause"].as_str().unwrap();
    assert!(cause.contains("startup timed out after 1s"), "{cause}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "three 1 s timeouts, not the 120 s default"
    );
    assert_eq!(core.state("com.test.Slow"), "BROKEN");
}

#[test]
fn bootstrap_runs_on_deploy_and_install_on_every_launch() {
    let mut core = TestCore::start();
    let log = core.dir.path().join("steps.log");
    let recipe = format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Boot
ComponentVersion: "1.0.0"
Manifests:
  - Platform: {{ os: linux }}
    Lifecycle:
      Bootstrap:
        Script: echo bootstrap >> {log}; exit 100
      Install: echo install >> {log}
      Run: echo run >> {log}; exec sleep 300
"#,
        log = log.display()
    );
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("b.yaml", &recipe)]);
    let d = core.deploy(&recipes, None, &["-m", "com.test.Boot=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    eventually("run", Duration::from_secs(10), || {
        read(&log).contains("run")
    });
    assert_eq!(
        read(&log),
        "bootstrap\ninstall\nrun\n",
        "exit 100 from Bootstrap is not a failure"
    );
    core.stop();
    core.spawn();
    eventually("second run", Duration::from_secs(10), || {
        read(&log).matches("run").count() == 2
    });
    assert_eq!(
        read(&log),
        "bootstrap\ninstall\nrun\ninstall\nrun\n",
        "a core restart reruns Install, not Bootstrap"
    );
}

#[test]
fn configuration_changes_restart_only_components_whose_scripts_see_them() {
    let core = TestCore::start();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Conf
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration: { shown: a, hidden: x }
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: "echo {configuration:/shown} >> seen.txt; exec sleep 300"
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("c.yaml", recipe)]);
    assert_eq!(
        core.deploy(&recipes, None, &["-m", "com.test.Conf=1.0.0"])["status"],
        "SUCCEEDED"
    );
    let pid = core.component("com.test.Conf")["pid"].as_i64().unwrap();

    // A key the scripts never read: the component keeps running, configuration updated.
    let d = core.deploy(
        &recipes,
        None,
        &["-c", r#"{"com.test.Conf":{"MERGE":{"hidden":"y"}}}"#],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let info = core.component("com.test.Conf");
    assert_eq!(info["pid"].as_i64().unwrap(), pid, "not restarted");
    assert_eq!(info["configuration"]["hidden"], "y");

    // A key interpolated into Run: restarted with the new value.
    let d = core.deploy(
        &recipes,
        None,
        &["-c", r#"{"com.test.Conf":{"MERGE":{"shown":"b"}}}"#],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    eventually("restarted", Duration::from_secs(10), || {
        core.component("com.test.Conf")["pid"]
            .as_i64()
            .is_some_and(|p| p != pid)
    });
    let work = core.work("com.test.Conf");
    eventually("new value seen", Duration::from_secs(10), || {
        read(&work.join("seen.txt")) == "a\nb\n"
    });
}

fn ca_probe_recipe() -> String {
    r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.CaProbe
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: 'echo "ca=${GG_ROOT_CA_PATH-unset}" > ca.txt; if [ -n "$GG_ROOT_CA_PATH" ]; then cat "$GG_ROOT_CA_PATH" >> ca.txt; fi'
"#
    .to_string()
}

#[test]
fn root_ca_is_copied_and_exposed_only_once_configured() {
    // Not configured: the variable is unset (it used to name a file nothing created).
    let core = TestCore::start();
    let recipes = recipe_dir(core.dir.path(), "r", &[("ca.yaml", &ca_probe_recipe())]);
    let d = core.deploy(&recipes, None, &["-m", "com.test.CaProbe=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let out = read(&core.work("com.test.CaProbe").join("ca.txt"));
    assert_eq!(out.trim(), "ca=unset");

    // Configured: copied to <root>/rootCA.pem and named by the variable.
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("AmazonRootCA1.pem");
    std::fs::write(&ca, pem).unwrap();
    let core = TestCore::start_with(&format!("thingName: t\nrootCaPath: {}\n", ca.display()));
    let recipes = recipe_dir(core.dir.path(), "r", &[("ca.yaml", &ca_probe_recipe())]);
    let d = core.deploy(&recipes, None, &["-m", "com.test.CaProbe=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let copy = core.root.join("rootCA.pem");
    assert_eq!(read(&copy), pem);
    let out = read(&core.work("com.test.CaProbe").join("ca.txt"));
    assert_eq!(out, format!("ca={}\n{pem}", copy.display()));

    // A missing file stops the core with the key and the file named.
    let missing = dir.path().join("nope.pem");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("c.yaml");
    std::fs::write(&config, format!("rootCaPath: {}\n", missing.display())).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["core", "run", "--root"])
        .arg(tmp.path().join("root"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rootCaPath") && err.contains("nope.pem"),
        "{err}"
    );
}
