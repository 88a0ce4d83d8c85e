//! Recipe variables (`{configuration:/path}`, `{artifacts:path}`, `{iot:thingName}`, ...).
//!
//! The values live in the runtime (paths, configuration store, thing name), so interpolation
//! asks a [`VariableSource`]. Unknown variables and missing values are left as written: the
//! nucleus does the same, and scripts sometimes contain literal braces.

use serde_json::Value;

/// Where interpolation gets variable values from. Every method returns `None` when the value
/// is not known, which leaves the variable untouched.
pub trait VariableSource {
    /// The device's AWS IoT thing name (`{iot:thingName}`).
    fn thing_name(&self) -> Option<String>;
    /// The core's root directory (`{kernel:rootPath}`).
    fn root_path(&self) -> Option<String>;
    /// The artifact directory of `component` (`{artifacts:path}`).
    fn artifacts_path(&self, component: &str) -> Option<String>;
    /// The directory with `component`'s unarchived artifacts (`{artifacts:decompressedPath}`).
    fn decompressed_path(&self, component: &str) -> Option<String>;
    /// The working directory of `component` (`{work:path}`).
    fn work_path(&self, component: &str) -> Option<String>;
    /// The configuration value of `component` at `json_pointer` (RFC 6901, starts with `/`).
    fn configuration(&self, component: &str, json_pointer: &str) -> Option<Value>;
}

/// Replaces the recipe variables in `text` for `component`.
///
/// Dependency-prefixed variables (`{dep:configuration:/x}`, `{dep:artifacts:path}`, ...)
/// are only resolved for names in `dependencies` (the direct dependencies, as the DG
/// requires). A configuration string renders raw, any other JSON value as serialized JSON
/// (`null` as `null`). Replacement is a single pass: substituted values are not scanned again.
pub fn interpolate(
    text: &str,
    component: &str,
    dependencies: &[&str],
    source: &dyn VariableSource,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        // The variable ends at the next `}`, unless another `{` or a line break comes first.
        let end = after.find(['{', '}', '\n']);
        match end {
            Some(close) if after.as_bytes()[close] == b'}' => {
                let inner = &after[..close];
                match resolve(inner, component, dependencies, source) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push('{');
                        out.push_str(inner);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Applies [`interpolate`] to every string inside a JSON value (object keys excluded), e.g.
/// to a `DefaultConfiguration` when `interpolateComponentConfiguration` is enabled.
pub fn interpolate_json(
    value: &Value,
    component: &str,
    dependencies: &[&str],
    source: &dyn VariableSource,
) -> Value {
    crate::lifecycle::interpolate_strings(value, &|s| {
        interpolate(s, component, dependencies, source)
    })
}

const NAMESPACES: [&str; 5] = ["configuration", "artifacts", "work", "kernel", "iot"];

fn resolve(
    inner: &str,
    component: &str,
    dependencies: &[&str],
    source: &dyn VariableSource,
) -> Option<String> {
    let (head, tail) = inner.split_once(':')?;
    if NAMESPACES.contains(&head) {
        return lookup(component, head, tail, true, source);
    }
    // `dep:namespace:key`; the dependency must be a direct one.
    let (ns, key) = tail.split_once(':')?;
    if !NAMESPACES.contains(&ns) || !dependencies.contains(&head) {
        return None;
    }
    lookup(head, ns, key, false, source)
}

fn lookup(
    component: &str,
    ns: &str,
    key: &str,
    own: bool,
    source: &dyn VariableSource,
) -> Option<String> {
    match (ns, key) {
        ("configuration", ptr) if ptr.starts_with('/') => {
            source.configuration(component, ptr).map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
        }
        ("artifacts", "path") => source.artifacts_path(component),
        ("artifacts", "decompressedPath") => source.decompressed_path(component),
        ("work", "path") => source.work_path(component),
        ("kernel", "rootPath") if own => source.root_path(),
        ("iot", "thingName") if own => source.thing_name(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Src;

    impl VariableSource for Src {
        fn thing_name(&self) -> Option<String> {
            Some("thing-1".into())
        }
        fn root_path(&self) -> Option<String> {
            Some("/var/lib/lichen".into())
        }
        fn artifacts_path(&self, c: &str) -> Option<String> {
            Some(format!("/art/{c}/1.0.0"))
        }
        fn decompressed_path(&self, c: &str) -> Option<String> {
            Some(format!("/unz/{c}/1.0.0"))
        }
        fn work_path(&self, c: &str) -> Option<String> {
            (c != "nowork").then(|| format!("/work/{c}"))
        }
        fn configuration(&self, c: &str, ptr: &str) -> Option<Value> {
            let cfg = match c {
                "me" => {
                    json!({"Message": "hi {artifacts:path}", "port": 8443, "obj": {"a": [1, 2]},
                               "nil": null, "flag": true, "emqx": {"listener.ssl.default.bind": "0.0.0.0:8883"}})
                }
                "dep.A" => json!({"ModelPath": "/models"}),
                _ => return None,
            };
            cfg.pointer(ptr).cloned()
        }
    }

    fn i(text: &str) -> String {
        interpolate(text, "me", &["dep.A", "nowork"], &Src)
    }

    #[test]
    fn own_variables() {
        assert_eq!(i("{configuration:/port}"), "8443");
        assert_eq!(i("run {artifacts:path}/x.py"), "run /art/me/1.0.0/x.py");
        assert_eq!(i("{artifacts:decompressedPath}/m"), "/unz/me/1.0.0/m");
        assert_eq!(i("cd {work:path}"), "cd /work/me");
        assert_eq!(i("{kernel:rootPath}/alts"), "/var/lib/lichen/alts");
        assert_eq!(
            i("$aws/things/{iot:thingName}/jobs"),
            "$aws/things/thing-1/jobs"
        );
        assert_eq!(
            i("{configuration:/emqx/listener.ssl.default.bind}"),
            "0.0.0.0:8883"
        );
    }

    #[test]
    fn values_render_raw_or_as_json() {
        // A substituted value is not interpolated again.
        assert_eq!(i("\"{configuration:/Message}\""), "\"hi {artifacts:path}\"");
        assert_eq!(i("{configuration:/obj}"), r#"{"a":[1,2]}"#);
        assert_eq!(i("{configuration:/nil}"), "null");
        assert_eq!(i("{configuration:/flag}"), "true");
    }

    #[test]
    fn dependency_prefixed_variables() {
        assert_eq!(i("{dep.A:configuration:/ModelPath}"), "/models");
        assert_eq!(
            i("{dep.A:artifacts:path}/labels.txt"),
            "/art/dep.A/1.0.0/labels.txt"
        );
        assert_eq!(i("{dep.A:artifacts:decompressedPath}"), "/unz/dep.A/1.0.0");
        assert_eq!(i("{dep.A:work:path}"), "/work/dep.A");
        // Not a direct dependency: untouched.
        assert_eq!(i("{other.B:artifacts:path}"), "{other.B:artifacts:path}");
        // kernel/iot have no dependency form.
        assert_eq!(i("{dep.A:kernel:rootPath}"), "{dep.A:kernel:rootPath}");
    }

    #[test]
    fn missing_and_unknown_are_untouched() {
        assert_eq!(i("{configuration:/missing}"), "{configuration:/missing}");
        assert_eq!(
            i("{dep.A:configuration:/missing}"),
            "{dep.A:configuration:/missing}"
        );
        assert_eq!(i("{nowork:work:path}"), "{nowork:work:path}");
        assert_eq!(i("{configuration:Message}"), "{configuration:Message}");
        assert_eq!(i("{foo:bar}"), "{foo:bar}");
        assert_eq!(i("{artifacts:other}"), "{artifacts:other}");
        assert_eq!(
            i("${HOME} {} { } {{iot:thingName}}"),
            "${HOME} {} { } {thing-1}"
        );
        assert_eq!(i("awk '{print $1}'"), "awk '{print $1}'");
        assert_eq!(
            i("unclosed {configuration:/port"),
            "unclosed {configuration:/port"
        );
        assert_eq!(
            i("case $X in \\{configuration:*) X=;; esac"),
            "case $X in \\{configuration:*) X=;; esac"
        );
        assert_eq!(
            i("multi {\nline} {iot:thingName}"),
            "multi {\nline} thing-1"
        );
        assert_eq!(i("ünïcödé {iot:thingName}ß"), "ünïcödé thing-1ß");
    }

    #[test]
    fn json_interpolation() {
        let v = json!({"topic": "t/{iot:thingName}", "n": 1, "list": ["{kernel:rootPath}"]});
        assert_eq!(
            interpolate_json(&v, "me", &[], &Src),
            json!({"topic": "t/thing-1", "n": 1, "list": ["/var/lib/lichen"]})
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn text_without_braces_is_unchanged(s in "[^{}]*") {
                prop_assert_eq!(i(&s), s);
            }

            #[test]
            fn never_panics(s in "\\PC*") {
                let _ = i(&s);
            }
        }
    }
}
