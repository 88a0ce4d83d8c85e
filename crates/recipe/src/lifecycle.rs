//! Lifecycle sections: typing them into [`Lifecycle`]/[`Step`], and picking the parts of a
//! global lifecycle that a manifest's `Selections` ask for.
//!
//! Typed fields (`Timeout`, `RequiresPrivilege`, `Skipif`) may hold a recipe variable in real
//! recipes (`"timeout": "{configuration:/startupTimeoutSeconds}"`). Such a value can only be
//! typed after interpolation: without an interpolator it is deferred (left at its default),
//! with one (see [`crate::Recipe::select_with`]) it is interpolated first and then typed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::RecipeError;
use crate::keys::{get, has_variable, join, scalar_string, type_name};

/// The typed lifecycle of the selected manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// `Lifecycle.Setenv`: environment for every step (already merged into each [`Step`]).
    pub setenv: BTreeMap<String, String>,
    /// Runs before Install on first deployment or version change; may ask for a restart.
    pub bootstrap: Option<Step>,
    /// Runs on every start of the core before the component starts.
    pub install: Option<Step>,
    /// A background process that must exit 0 or report RUNNING (exclusive with `run`).
    pub startup: Option<Step>,
    /// The component's main process (exclusive with `startup`).
    pub run: Option<Step>,
    /// Runs when the component stops.
    pub shutdown: Option<Step>,
    /// Runs when the component enters ERRORED.
    pub recover: Option<Step>,
    /// `ErrorResetTime`: after this long without errors the error count starts again.
    pub error_reset_time: Option<Duration>,
}

/// One lifecycle step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The shell script to run.
    pub script: String,
    /// Run as root instead of the component user.
    pub requires_privilege: bool,
    /// Skip the step if this check holds.
    pub skipif: Option<SkipIf>,
    /// Kill the step after this long; `None` means the runtime default for the step.
    pub timeout: Option<Duration>,
    /// Environment for this step: `Lifecycle.Setenv` overlaid with the step's own `Setenv`.
    pub setenv: BTreeMap<String, String>,
}

/// The `Skipif` check of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipIf {
    /// `onpath <exe>`: skip if the executable is on `PATH`.
    OnPath(String),
    /// `exists <file>`: skip if the file exists.
    Exists(String),
}

/// Default `Timeout` of `Install` when the recipe sets none (DG).
pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `Timeout` of `Startup`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `Timeout` of `Shutdown`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `Timeout` of `Recover`.
pub const DEFAULT_RECOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `Timeout` of `Bootstrap`.
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

/// The DG default timeout of a step by its recipe name (case-insensitive); `None` for `Run`,
/// which runs until it exits, and for unknown steps.
pub fn default_timeout(step: &str) -> Option<Duration> {
    let is = |n: &str| step.eq_ignore_ascii_case(n);
    if is("install") {
        Some(DEFAULT_INSTALL_TIMEOUT)
    } else if is("startup") {
        Some(DEFAULT_STARTUP_TIMEOUT)
    } else if is("shutdown") {
        Some(DEFAULT_SHUTDOWN_TIMEOUT)
    } else if is("recover") {
        Some(DEFAULT_RECOVER_TIMEOUT)
    } else if is("bootstrap") {
        Some(DEFAULT_BOOTSTRAP_TIMEOUT)
    } else {
        None
    }
}

/// Something that renders recipe variables in a string before it is typed.
pub type Interpolator<'a> = &'a dyn Fn(&str) -> String;

impl Lifecycle {
    /// Types a lifecycle object (a manifest `Lifecycle`, or a global one after
    /// [`select_global_lifecycle`]). `path` is the field path used in errors.
    pub fn from_value(value: &Value, file: &str, path: &str) -> Result<Lifecycle, RecipeError> {
        Self::from_value_with(value, file, path, None)
    }

    /// Like [`Lifecycle::from_value`], interpolating every string first when `interp` is given.
    pub fn from_value_with(
        value: &Value,
        file: &str,
        path: &str,
        interp: Option<Interpolator<'_>>,
    ) -> Result<Lifecycle, RecipeError> {
        let owned;
        let value = match interp {
            Some(f) => {
                owned = interpolate_strings(value, f);
                &owned
            }
            None => value,
        };
        let map = match value {
            Value::Null => return Ok(Lifecycle::default()),
            Value::Object(m) => m,
            other => {
                return Err(RecipeError::invalid(
                    file,
                    path,
                    format!(
                        "expected an object of lifecycle steps, found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        let mut lc = Lifecycle::default();
        if let Some(env) = get(map, "Setenv", file, path)? {
            lc.setenv = parse_setenv(env, file, &join(path, "Setenv"))?;
        }
        let step = |name: &str| -> Result<Option<Step>, RecipeError> {
            match get(map, name, file, path)? {
                Some(v) => parse_step(v, file, &join(path, name), &lc.setenv),
                None => Ok(None),
            }
        };
        let bootstrap = step("Bootstrap")?;
        let install = step("Install")?;
        let startup = step("Startup")?;
        let run = step("Run")?;
        let shutdown = step("Shutdown")?;
        let recover = step("Recover")?;
        if startup.is_some() && run.is_some() {
            return Err(RecipeError::invalid(
                file,
                join(path, "Run"),
                "only one of Run or Startup may be defined",
            ));
        }
        lc.bootstrap = bootstrap;
        lc.install = install;
        lc.startup = startup;
        lc.run = run;
        lc.shutdown = shutdown;
        lc.recover = recover;
        if let Some(v) = get(map, "ErrorResetTime", file, path)? {
            lc.error_reset_time = parse_seconds(v, file, &join(path, "ErrorResetTime"))?;
        }
        Ok(lc)
    }

    /// The defined steps with their recipe names, in the order the core runs them.
    pub fn steps(&self) -> impl Iterator<Item = (&'static str, &Step)> {
        [
            ("Bootstrap", &self.bootstrap),
            ("Install", &self.install),
            ("Startup", &self.startup),
            ("Run", &self.run),
            ("Shutdown", &self.shutdown),
            ("Recover", &self.recover),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.as_ref().map(|s| (n, s)))
    }
}

/// Platform keys a step (or its `Script`) may be keyed by, as the Java nucleus accepts:
/// `run: {posix: "...", windows: "..."}`.
pub const PLATFORM_STEP_KEYS: [&str; 6] = ["linux", "darwin", "windows", "posix", "unix", "all"];

const STEP_NAMES: [&str; 6] = [
    "bootstrap",
    "install",
    "startup",
    "run",
    "shutdown",
    "recover",
];

/// Keys of `os`, most specific first: linux/darwin > posix (unix) > all.
fn platform_preference(os: &str) -> Vec<&str> {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "windows" => vec!["windows", "all"],
        "linux" => vec!["linux", "posix", "unix", "all"],
        "darwin" => vec!["darwin", "posix", "unix", "all"],
        // Other unixes: only the generic keys.
        _ => vec!["posix", "unix", "all"],
    }
}

/// An object whose keys are all platform keys (and that is not a step object).
fn as_platform_map(v: &Value) -> Option<&serde_json::Map<String, Value>> {
    let Value::Object(m) = v else {
        return None;
    };
    let all_platform = !m.is_empty()
        && m.keys()
            .all(|k| PLATFORM_STEP_KEYS.iter().any(|p| k.eq_ignore_ascii_case(p)));
    all_platform.then_some(m)
}

fn pick<'a>(m: &'a serde_json::Map<String, Value>, os: &str) -> Option<&'a Value> {
    platform_preference(os).into_iter().find_map(|want| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(want))
            .map(|(_, v)| v)
    })
}

/// Resolves platform-keyed steps of a lifecycle object for `os` (`linux`, `darwin`,
/// `windows`, ...): a step written as `{posix: ..., windows: ...}`, or whose `Script` is
/// such a map, becomes the most specific entry for `os` (linux/darwin > posix > all). A map
/// with no entry for `os` means the step is absent. Anything else is left as it is.
pub fn resolve_platform_steps(value: &Value, os: &str) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, step) in map {
        if !STEP_NAMES.iter().any(|n| key.eq_ignore_ascii_case(n)) {
            out.insert(key.clone(), step.clone());
            continue;
        }
        if let Some(platforms) = as_platform_map(step) {
            if let Some(chosen) = pick(platforms, os) {
                out.insert(key.clone(), chosen.clone());
            }
            continue;
        }
        if let Value::Object(fields) = step
            && let Some((script_key, script)) = fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("script"))
            && let Some(platforms) = as_platform_map(script)
        {
            if let Some(chosen) = pick(platforms, os) {
                let mut fields = fields.clone();
                fields.insert(script_key.clone(), chosen.clone());
                out.insert(key.clone(), Value::Object(fields));
            }
            continue;
        }
        out.insert(key.clone(), step.clone());
    }
    Value::Object(out)
}

/// Returns a copy of `value` with `f` applied to every string (not to object keys).
pub fn interpolate_strings(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(a) => Value::Array(a.iter().map(|v| interpolate_strings(v, f)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), interpolate_strings(v, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn parse_setenv(
    v: &Value,
    file: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, RecipeError> {
    let Value::Object(m) = v else {
        return Err(RecipeError::invalid(
            file,
            path,
            format!(
                "expected an object of environment variables, found {}",
                type_name(v)
            ),
        ));
    };
    let mut out = BTreeMap::new();
    for (k, val) in m {
        let s = match val {
            Value::Null => String::new(),
            other => scalar_string(other).ok_or_else(|| {
                RecipeError::invalid(
                    file,
                    join(path, k),
                    format!("expected a string, found {}", type_name(other)),
                )
            })?,
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

fn parse_step(
    v: &Value,
    file: &str,
    path: &str,
    lifecycle_env: &BTreeMap<String, String>,
) -> Result<Option<Step>, RecipeError> {
    let mut step = Step {
        setenv: lifecycle_env.clone(),
        ..Step::default()
    };
    let map = match v {
        Value::Object(m) => m,
        other => match scalar_string(other) {
            Some(script) => {
                step.script = script;
                return Ok(Some(step));
            }
            None => {
                return Err(RecipeError::invalid(
                    file,
                    path,
                    format!(
                        "expected a script or a step object, found {}",
                        type_name(other)
                    ),
                ));
            }
        },
    };
    let script_path = join(path, "Script");
    step.script = match get(map, "Script", file, path)? {
        Some(s) => scalar_string(s).ok_or_else(|| {
            RecipeError::invalid(
                file,
                &script_path,
                format!("expected a string, found {}", type_name(s)),
            )
        })?,
        None => return Err(RecipeError::invalid(file, script_path, "missing")),
    };
    if let Some(p) = get(map, "RequiresPrivilege", file, path)? {
        step.requires_privilege = parse_bool(p, file, &join(path, "RequiresPrivilege"))?;
    }
    if let Some(s) = get(map, "Skipif", file, path)? {
        step.skipif = parse_skipif(s, file, &join(path, "Skipif"))?;
    }
    if let Some(t) = get(map, "Timeout", file, path)? {
        step.timeout = parse_seconds(t, file, &join(path, "Timeout"))?;
    }
    if let Some(env) = get(map, "Setenv", file, path)? {
        step.setenv
            .extend(parse_setenv(env, file, &join(path, "Setenv"))?);
    }
    Ok(Some(step))
}

fn parse_bool(v: &Value, file: &str, path: &str) -> Result<bool, RecipeError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        Value::String(s) if has_variable(s) => Ok(false),
        other => Err(RecipeError::invalid(
            file,
            path,
            format!("expected true or false, found {}", render(other)),
        )),
    }
}

/// Parses a duration in seconds (number or numeric string). A variable is deferred (`None`).
pub(crate) fn parse_seconds(
    v: &Value,
    file: &str,
    path: &str,
) -> Result<Option<Duration>, RecipeError> {
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if has_variable(s) => return Ok(None),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let Some(secs) = secs.filter(|s| s.is_finite()) else {
        return Err(RecipeError::invalid(
            file,
            path,
            format!("expected a number of seconds, found {}", render(v)),
        ));
    };
    if secs < 0.0 {
        return Err(RecipeError::invalid(
            file,
            path,
            format!("must not be negative, found {secs}"),
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| RecipeError::invalid(file, path, format!("{secs} seconds is too long")))
}

fn parse_skipif(v: &Value, file: &str, path: &str) -> Result<Option<SkipIf>, RecipeError> {
    let bad = || {
        RecipeError::invalid(
            file,
            path,
            format!(
                "expected \"onpath <executable>\" or \"exists <file>\", found {}",
                render(v)
            ),
        )
    };
    let Value::String(s) = v else {
        return Err(bad());
    };
    let s = s.trim();
    let (keyword, rest) = match s.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (s, ""),
    };
    if rest.is_empty() {
        return if has_variable(s) {
            Ok(None)
        } else {
            Err(bad())
        };
    }
    if keyword.eq_ignore_ascii_case("onpath") {
        Ok(Some(SkipIf::OnPath(rest.to_owned())))
    } else if keyword.eq_ignore_ascii_case("exists") {
        Ok(Some(SkipIf::Exists(rest.to_owned())))
    } else if has_variable(s) {
        Ok(None)
    } else {
        Err(bad())
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(_) | Value::Array(_) => type_name(v).to_owned(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Global lifecycle selection.
// ---------------------------------------------------------------------------------------

/// The selection keys a recipe declares: every manifest's `Selections`, plus `all`.
pub fn selection_keywords<'a>(selections: impl IntoIterator<Item = &'a [String]>) -> Vec<String> {
    let mut out: Vec<String> = vec!["all".to_owned()];
    for list in selections {
        for s in list {
            if !out.iter().any(|k| k.eq_ignore_ascii_case(s)) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// Picks the parts of a global lifecycle that a manifest's `selections` ask for, the way the
/// Java nucleus does:
///
/// * `keywords` are the selection keys of the whole recipe (see [`selection_keywords`]); a
///   key of the global lifecycle is a selection key only if it is one of them;
/// * at any level, an object with at least one selection key is replaced by the branch of the
///   first of `selections` (in the manifest's priority order) it contains, or else by its
///   `all` branch, or else dropped; other keys beside selection keys are ignored;
/// * objects without selection keys are kept, each value filtered the same way; other values
///   are kept as they are.
///
/// Keys compare ignoring ASCII case. Returns the resulting plain lifecycle object (possibly
/// empty).
pub fn select_global_lifecycle(
    global: &Value,
    keywords: &[String],
    selections: &[String],
) -> Value {
    match filter(global, keywords, selections) {
        Some(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

fn lookup<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_null())
        .map(|(_, v)| v)
}

fn filter(v: &Value, keywords: &[String], selections: &[String]) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(map) => {
            let keyed = map
                .keys()
                .any(|k| keywords.iter().any(|kw| kw.eq_ignore_ascii_case(k)));
            if keyed {
                let chosen = selections
                    .iter()
                    .find_map(|s| lookup(map, s))
                    .or_else(|| lookup(map, "all"))?;
                filter(chosen, keywords, selections)
            } else {
                Some(Value::Object(
                    map.iter()
                        .filter_map(|(k, child)| {
                            filter(child, keywords, selections).map(|c| (k.clone(), c))
                        })
                        .collect(),
                ))
            }
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lc(v: Value) -> Lifecycle {
        match Lifecycle::from_value(&v, "t.json", "Lifecycle") {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    fn lc_err(v: Value) -> String {
        match Lifecycle::from_value(&v, "t.json", "Lifecycle") {
            Ok(l) => panic!("expected an error, got {l:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn script(s: &Option<Step>) -> Option<&str> {
        s.as_ref().map(|s| s.script.as_str())
    }

    #[test]
    fn string_and_object_steps() {
        let l = lc(json!({
            "install": "echo i",
            "Run": {"Script": "echo r", "RequiresPrivilege": "true", "Timeout": "30",
                    "Skipif": "onpath python3"},
            "SHUTDOWN": {"script": "echo s", "timeout": 1.5, "requiresPrivilege": false},
            "Recover": {"Script": "echo rec", "Skipif": "Exists /tmp/x y"},
            "bootstrap": {"Script": "exit 100", "RequiresPrivilege": true},
            "ErrorResetTime": 3600
        }));
        assert_eq!(script(&l.install), Some("echo i"));
        let run = l.run.as_ref().expect("run");
        assert!(run.requires_privilege);
        assert_eq!(run.timeout, Some(Duration::from_secs(30)));
        assert_eq!(run.skipif, Some(SkipIf::OnPath("python3".into())));
        let sd = l.shutdown.as_ref().expect("shutdown");
        assert_eq!(sd.timeout, Some(Duration::from_millis(1500)));
        assert!(!sd.requires_privilege);
        assert_eq!(
            l.recover.as_ref().and_then(|s| s.skipif.clone()),
            Some(SkipIf::Exists("/tmp/x y".into()))
        );
        assert!(l.bootstrap.as_ref().is_some_and(|s| s.requires_privilege));
        assert_eq!(l.error_reset_time, Some(Duration::from_secs(3600)));
        assert_eq!(
            l.steps().map(|(n, _)| n).collect::<Vec<_>>(),
            ["Bootstrap", "Install", "Run", "Shutdown", "Recover"]
        );
    }

    #[test]
    fn default_timeouts_follow_the_dg() {
        assert_eq!(default_timeout("Install"), Some(Duration::from_secs(120)));
        assert_eq!(default_timeout("startup"), Some(Duration::from_secs(120)));
        assert_eq!(default_timeout("SHUTDOWN"), Some(Duration::from_secs(15)));
        assert_eq!(default_timeout("Recover"), Some(Duration::from_secs(60)));
        assert_eq!(default_timeout("Bootstrap"), Some(Duration::from_secs(120)));
        assert_eq!(default_timeout("Run"), None);
    }

    #[test]
    fn setenv_merges_step_wins() {
        let l = lc(json!({
            "setEnv": {"A": "lifecycle", "B": "lifecycle", "N": 5},
            "Run": {"Script": "x", "Setenv": {"B": "step", "C": true}},
            "Install": "y"
        }));
        let run = l.run.expect("run");
        assert_eq!(run.setenv.get("A").map(String::as_str), Some("lifecycle"));
        assert_eq!(run.setenv.get("B").map(String::as_str), Some("step"));
        assert_eq!(run.setenv.get("C").map(String::as_str), Some("true"));
        assert_eq!(run.setenv.get("N").map(String::as_str), Some("5"));
        assert_eq!(
            l.install
                .expect("install")
                .setenv
                .get("B")
                .map(String::as_str),
            Some("lifecycle")
        );
        assert_eq!(l.setenv.len(), 3);
    }

    #[test]
    fn run_and_startup_are_exclusive() {
        let e = lc_err(json!({"Run": "a", "startup": "b"}));
        assert!(
            e.contains("Lifecycle.Run") && e.contains("only one of Run or Startup"),
            "{e}"
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let e = lc_err(json!({"Install": {"Script": "x", "Timeout": -1}}));
        assert!(
            e.contains("t.json: Lifecycle.Install.Timeout: must not be negative"),
            "{e}"
        );
        let e = lc_err(json!({"Install": {"Script": "x", "Timeout": "soon"}}));
        assert!(e.contains("Lifecycle.Install.Timeout"), "{e}");
        let e = lc_err(json!({"Install": {"Script": "x", "RequiresPrivilege": "maybe"}}));
        assert!(e.contains("Lifecycle.Install.RequiresPrivilege"), "{e}");
        let e = lc_err(json!({"Install": {"Script": "x", "Skipif": "whenever x"}}));
        assert!(e.contains("Lifecycle.Install.Skipif"), "{e}");
        let e = lc_err(json!({"Install": {"Timeout": 3}}));
        assert!(e.contains("Lifecycle.Install.Script: missing"), "{e}");
        let e = lc_err(json!({"Install": ["a"]}));
        assert!(e.contains("Lifecycle.Install"), "{e}");
        let e = lc_err(json!({"Setenv": {"A": {"b": 1}}}));
        assert!(e.contains("Lifecycle.Setenv.A"), "{e}");
        let e = lc_err(json!({"Run": "a", "run": "b"}));
        assert!(e.contains("defined twice"), "{e}");
        let e = lc_err(json!("echo"));
        assert!(e.contains("expected an object"), "{e}");
        let e = lc_err(json!({"Install": {"Script": "x", "Timeout": 1e300}}));
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn variables_in_typed_fields_are_deferred_or_interpolated() {
        let v = json!({"startup": {
            "script": "s", "timeout": "{configuration:/t}",
            "requiresPrivilege": "{configuration:/p}", "skipif": "{configuration:/skip}"
        }});
        let deferred = lc(v.clone()).startup.expect("startup");
        assert_eq!(deferred.timeout, None);
        assert!(!deferred.requires_privilege);
        assert_eq!(deferred.skipif, None);
        let f = |s: &str| {
            s.replace("{configuration:/t}", "90")
                .replace("{configuration:/p}", "true")
                .replace("{configuration:/skip}", "onpath docker")
        };
        let typed = Lifecycle::from_value_with(&v, "t", "L", Some(&f)).expect("typed");
        let st = typed.startup.expect("startup");
        assert_eq!(st.timeout, Some(Duration::from_secs(90)));
        assert!(st.requires_privilege);
        assert_eq!(st.skipif, Some(SkipIf::OnPath("docker".into())));
    }

    /// Selects with `keys`; the recipe declares `keys` plus `declared` as selection keys.
    fn sel_in(global: &Value, declared: &[&str], keys: &[&str]) -> Value {
        let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
        let keywords = selection_keywords([declared.as_slice(), keys.as_slice()]);
        select_global_lifecycle(global, &keywords, &keys)
    }

    #[test]
    fn selection_keywords_always_include_all() {
        let a = vec!["linux".to_string(), "ALL".to_string()];
        let b = vec!["Linux".to_string(), "x".to_string()];
        assert_eq!(
            selection_keywords([a.as_slice(), b.as_slice()]),
            ["all", "linux", "x"]
        );
    }

    #[test]
    fn global_top_level_selection_keys() {
        let g = json!({
            "key1": {"Install": {"Skipif": "onpath x", "Script": "command1"}},
            "key2": {"Install": {"Script": "command2"}},
            "all": {"Install": {"Script": "command3"}}
        });
        let d = ["key1", "key2"];
        let c1 = json!({"Install": {"Skipif": "onpath x", "Script": "command1"}});
        assert_eq!(sel_in(&g, &d, &["key1"]), c1);
        assert_eq!(
            sel_in(&g, &d, &["key2"]),
            json!({"Install": {"Script": "command2"}})
        );
        assert_eq!(
            sel_in(&g, &d, &[]),
            json!({"Install": {"Script": "command3"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["all"]),
            json!({"Install": {"Script": "command3"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["KEY2"]),
            json!({"Install": {"Script": "command2"}})
        );
        // A selection the lifecycle does not have falls back to `all`.
        assert_eq!(
            sel_in(&g, &d, &["nope"]),
            json!({"Install": {"Script": "command3"}})
        );
        // The first selection (manifest priority order) wins; branches are not merged.
        assert_eq!(
            sel_in(&g, &d, &["key2", "key1"]),
            json!({"Install": {"Script": "command2"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["all", "key2"]),
            json!({"Install": {"Script": "command3"}})
        );
        // Without an `all` branch, an unmatched selection removes the section.
        let no_all = json!({"key1": {"Run": "r"}});
        assert_eq!(sel_in(&no_all, &["key1"], &["key9"]), json!({}));
    }

    #[test]
    fn global_bottom_level_selection_keys() {
        let g = json!({"Install": {"Script": {"key1": "command1", "key2": "command2", "all": "command3"}}});
        let d = ["key1", "key2"];
        assert_eq!(
            sel_in(&g, &d, &["key1"]),
            json!({"Install": {"Script": "command1"}})
        );
        assert_eq!(
            sel_in(&g, &d, &[]),
            json!({"Install": {"Script": "command3"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["other"]),
            json!({"Install": {"Script": "command3"}})
        );
        let no_all = json!({"Install": {"Script": {"key1": "c1"}, "Timeout": 5}});
        assert_eq!(
            sel_in(&no_all, &d, &["key2"]),
            json!({"Install": {"Timeout": 5}})
        );
    }

    #[test]
    fn global_multi_level_selection_keys() {
        let g = json!({
            "key1": {"Install": {"Skipif": "onpath x", "Script": "command1"}},
            "key2": {"Install": {"Script": "command2"}},
            "all": {"Install": {"Script": {"key3": "command3", "key4": "command4", "all": "command5"}}}
        });
        let d = ["key1", "key2", "key3", "key4"];
        assert_eq!(
            sel_in(&g, &d, &["all"]),
            json!({"Install": {"Script": "command5"}})
        );
        assert_eq!(
            sel_in(&g, &d, &[]),
            json!({"Install": {"Script": "command5"}})
        );
        // key3 is not at the top, so the top falls back to `all`, where key3 is found.
        assert_eq!(
            sel_in(&g, &d, &["key3"]),
            json!({"Install": {"Script": "command3"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["key4", "all"]),
            json!({"Install": {"Script": "command4"}})
        );
        assert_eq!(
            sel_in(&g, &d, &["key1", "key3"]),
            json!({"Install": {"Skipif": "onpath x", "Script": "command1"}})
        );
    }

    #[test]
    fn global_keys_beside_selection_keys_are_ignored() {
        let g = json!({
            "Setenv": {"A": "1"},
            "Run": "run-plain",
            "special": {"Install": "inst"}
        });
        assert_eq!(
            sel_in(&g, &["special"], &["special"]),
            json!({"Install": "inst"})
        );
        // No `all` branch at a keyed level: nothing is selected.
        assert_eq!(sel_in(&g, &["special"], &[]), json!({}));
        // Keys that no manifest declares are ordinary keys.
        assert_eq!(sel_in(&g, &[], &[]), g);
        // A lifecycle without selection keys is used whole, whatever the selections.
        let plain =
            json!({"Install": {"Script": "i", "Timeout": 5}, "Run": "r", "Setenv": {"A": null}});
        let expect = json!({"Install": {"Script": "i", "Timeout": 5}, "Run": "r", "Setenv": {}});
        assert_eq!(sel_in(&plain, &["x"], &["x"]), expect);
        assert_eq!(sel_in(&json!("str"), &[], &[]), json!({}));
        // Selections inside Setenv.
        let env = json!({"Setenv": {"A": "1", "x": {"B": "2"}}, "Run": "r"});
        assert_eq!(
            sel_in(&env, &["x"], &["x"]),
            json!({"Setenv": {"B": "2"}, "Run": "r"})
        );
    }

    #[test]
    fn interpolate_strings_leaves_keys() {
        let v = json!({"{a}": ["{a}", 1, {"k": "{a}"}]});
        let out = interpolate_strings(&v, &|s: &str| s.replace("{a}", "A"));
        assert_eq!(out, json!({"{a}": ["A", 1, {"k": "A"}]}));
    }
}
