//! Text → [`Recipe`]: format detection, loading, and validation of every field.

use std::collections::BTreeMap;

use semver::Version;
use serde_json::{Map, Value};

use crate::error::RecipeError;
use crate::keys::{get, join, scalar_string, type_name};
use crate::lifecycle::Lifecycle;
use crate::model::{
    Access, Artifact, ComponentType, Dependency, DependencyType, Manifest, Permission, Recipe,
    Unarchive, effective_lifecycle, lifecycle_path,
};
use crate::platform::{PlatformRequirement, PlatformValue};
use crate::range::VersionRange;

/// The only recipe format version Greengrass defines.
pub const RECIPE_FORMAT_VERSION: &str = "2020-01-25";

/// Recipes larger than this are rejected before parsing (real recipes are a few KiB).
pub const MAX_RECIPE_BYTES: usize = 4 * 1024 * 1024;

/// Parses and validates a recipe. JSON if the first non-blank character is `{`, YAML
/// otherwise. `source` (usually the file name) prefixes every error.
pub fn parse_recipe(text: &str, source: &str) -> Result<Recipe, RecipeError> {
    let doc = load(text, source)?;
    from_document(doc, source)
}

/// Reads and parses a recipe file; the path is used as the source name in errors.
pub fn parse_recipe_file(path: &std::path::Path) -> Result<Recipe, RecipeError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| RecipeError::Io {
        file: source.clone(),
        error,
    })?;
    parse_recipe(&text, &source)
}

fn syntax(file: &str, message: impl Into<String>) -> RecipeError {
    RecipeError::Syntax {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn load(text: &str, file: &str) -> Result<Value, RecipeError> {
    if text.len() > MAX_RECIPE_BYTES {
        return Err(syntax(
            file,
            format!(
                "recipe is {} bytes, more than the limit of {MAX_RECIPE_BYTES}",
                text.len()
            ),
        ));
    }
    let body = text.trim_start_matches('\u{feff}');
    let value: Value = if body.trim_start().starts_with('{') {
        serde_json::from_str(body).map_err(|e| syntax(file, format!("invalid JSON: {e}")))?
    } else {
        let value: Value =
            serde_saphyr::from_str(body).map_err(|e| syntax(file, format!("invalid YAML: {e}")))?;
        // Aliases can make the document much larger than its text; the normalized JSON that
        // the store keeps must stay within the same limit to parse again.
        let expanded = serde_json::to_string(&value).map_or(usize::MAX, |s| s.len());
        if expanded > MAX_RECIPE_BYTES {
            return Err(syntax(
                file,
                format!(
                    "recipe expands to {expanded} bytes, more than the limit of {MAX_RECIPE_BYTES}"
                ),
            ));
        }
        value
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err(syntax(file, "the recipe is empty")),
        other => Err(syntax(
            file,
            format!(
                "a recipe must be a mapping of fields, found {}",
                type_name(&other)
            ),
        )),
    }
}

/// Validates an already loaded recipe document (e.g. a stored normalized JSON value).
pub fn recipe_from_value(doc: Value, source: &str) -> Result<Recipe, RecipeError> {
    match doc {
        Value::Object(_) => from_document(doc, source),
        other => Err(syntax(
            source,
            format!(
                "a recipe must be a mapping of fields, found {}",
                type_name(&other)
            ),
        )),
    }
}

fn from_document(doc: Value, file: &str) -> Result<Recipe, RecipeError> {
    let Value::Object(map) = &doc else {
        return Err(syntax(file, "a recipe must be a mapping of fields"));
    };
    let name = parse_name(map, file)?;
    let version = parse_version(map, file)?;
    let format_version = parse_format_version(map, file)?;
    let description = optional_string(map, "ComponentDescription", file, "")?;
    let publisher = optional_string(map, "ComponentPublisher", file, "")?;
    let component_type = match optional_string(map, "ComponentType", file, "")? {
        None => ComponentType::Generic,
        Some(t) => ComponentType::parse(&t).ok_or_else(|| {
            RecipeError::invalid(
                file,
                "ComponentType",
                format!(
                    "unknown component type \"{t}\" (expected aws.greengrass.generic, \
                     aws.greengrass.lambda, aws.greengrass.plugin, aws.greengrass.nucleus or lichen.wasm)"
                ),
            )
        })?,
    };
    let default_configuration = parse_configuration(map, file)?;
    let dependencies = parse_dependencies(map, file)?;
    let manifests = match get(map, "Manifests", file, "")? {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, m)| parse_manifest(m, file, i))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(RecipeError::invalid(
                file,
                "Manifests",
                format!("expected a list, found {}", type_name(other)),
            ));
        }
    };
    let global_lifecycle = match get(map, "Lifecycle", file, "")? {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(RecipeError::invalid(
                file,
                "Lifecycle",
                format!("expected an object, found {}", type_name(other)),
            ));
        }
    };
    // Type every manifest's effective lifecycle now, so a bad Timeout or a Run+Startup pair
    // fails at parse time with the field path, not at deployment time.
    let keywords =
        crate::lifecycle::selection_keywords(manifests.iter().map(|m| m.selections.as_slice()));
    // Platform-keyed steps are checked in each platform's reading.
    let check = |value: &Value, path: &str| -> Result<(), RecipeError> {
        for os in ["linux", "darwin", "windows"] {
            let resolved = crate::lifecycle::resolve_platform_steps(value, os);
            Lifecycle::from_value(&resolved, file, path)?;
        }
        Ok(())
    };
    for (i, m) in manifests.iter().enumerate() {
        let value = effective_lifecycle(m, global_lifecycle.as_ref(), &keywords);
        check(&value, &lifecycle_path(m, i))?;
    }
    if let (true, Some(g)) = (manifests.is_empty(), &global_lifecycle) {
        let value = crate::lifecycle::select_global_lifecycle(g, &keywords, &[]);
        check(&value, "Lifecycle")?;
    }
    Ok(Recipe {
        format_version,
        name,
        version,
        description,
        publisher,
        component_type,
        default_configuration,
        dependencies,
        manifests,
        global_lifecycle,
        document: doc,
    })
}

fn optional_string(
    map: &Map<String, Value>,
    key: &str,
    file: &str,
    path: &str,
) -> Result<Option<String>, RecipeError> {
    match get(map, key, file, path)? {
        None => Ok(None),
        Some(v) => scalar_string(v).map(Some).ok_or_else(|| {
            RecipeError::invalid(
                file,
                join(path, key),
                format!("expected a string, found {}", type_name(v)),
            )
        }),
    }
}

fn required_string(
    map: &Map<String, Value>,
    key: &str,
    file: &str,
    path: &str,
) -> Result<String, RecipeError> {
    optional_string(map, key, file, path)?
        .ok_or_else(|| RecipeError::invalid(file, join(path, key), "missing"))
}

/// Placeholders that Greengrass Development Kit (GDK) substitutes at build time.
const GDK_PLACEHOLDERS: [&str; 6] = [
    "COMPONENT_NAME",
    "COMPONENT_VERSION",
    "COMPONENT_AUTHOR",
    "COMPONENT_PUBLISHER",
    "BUCKET_NAME",
    "NEXT_PATCH",
];

/// Whether `s` looks like an unsubstituted template placeholder: `{X}`, `{{X}}`, `${X}`,
/// `$X$`, `%X%`, `<X>` or one of GDK's bare words.
fn looks_like_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.contains(['{', '}', '$'])
        || (t.len() > 2 && t.starts_with('%') && t.ends_with('%'))
        || (t.len() > 2 && t.starts_with('<') && t.ends_with('>'))
        || GDK_PLACEHOLDERS.contains(&t)
}

fn placeholder(file: &str, field: &str, value: &str) -> RecipeError {
    RecipeError::Placeholder {
        file: file.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
    }
}

/// Bidirectional-control characters: invisible, they reorder how a name is displayed, so
/// a name could pose as another in logs, terminals and listings.
const BIDI_CONTROLS: &[char] = &[
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// The first bidirectional-control character in `s` (U+202A–U+202E, U+2066–U+2069,
/// U+200E, U+200F, U+061C), which no component name may contain.
pub fn find_bidi_control(s: &str) -> Option<char> {
    s.chars().find(|c| BIDI_CONTROLS.contains(c))
}

/// Checks a component name that will become a directory name in the store: no path
/// separators, no `.`/`..`, no whitespace, control or bidirectional-control characters.
/// The name is quoted with escapes in the message, so it cannot forge log lines.
pub(crate) fn check_component_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 255 {
        return Err("must be at most 255 bytes".to_owned());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid component name"));
    }
    if let Some(c) = find_bidi_control(name) {
        return Err(format!(
            "{name:?} contains the bidirectional-control character {c:?}, which a component \
             name may not contain"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\'))
    {
        return Err(format!(
            "{name:?} contains the character {c:?}, which a component name may not contain"
        ));
    }
    Ok(())
}

fn parse_name(map: &Map<String, Value>, file: &str) -> Result<String, RecipeError> {
    let name = required_string(map, "ComponentName", file, "")?;
    if looks_like_placeholder(&name) {
        return Err(placeholder(file, "ComponentName", &name));
    }
    check_component_name(&name).map_err(|m| RecipeError::invalid(file, "ComponentName", m))?;
    Ok(name)
}

/// Whether any string in the document mentions a GDK placeholder (e.g. in an artifact URI
/// `s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/x.zip`): the recipe was never built.
fn mentions_gdk_placeholder(v: &Value) -> bool {
    match v {
        Value::String(s) => GDK_PLACEHOLDERS.iter().any(|p| s.contains(p)),
        Value::Array(a) => a.iter().any(mentions_gdk_placeholder),
        Value::Object(m) => m.values().any(mentions_gdk_placeholder),
        _ => false,
    }
}

fn parse_version(map: &Map<String, Value>, file: &str) -> Result<Version, RecipeError> {
    let Some(text) = optional_string(map, "ComponentVersion", file, "")? else {
        let hint = if map.values().any(mentions_gdk_placeholder) {
            "; the recipe contains GDK build placeholders (BUCKET_NAME, COMPONENT_VERSION, ...), \
             so it looks unbuilt: `gdk component build` fills in the version"
        } else {
            ""
        };
        return Err(RecipeError::invalid(
            file,
            "ComponentVersion",
            format!("missing{hint}"),
        ));
    };
    match Version::parse(text.trim()) {
        Ok(v) => Ok(v),
        Err(e) => {
            let t = text.trim();
            let shouty = !t.is_empty()
                && t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if looks_like_placeholder(t) || shouty {
                Err(placeholder(file, "ComponentVersion", &text))
            } else {
                Err(RecipeError::invalid(
                    file,
                    "ComponentVersion",
                    format!("\"{text}\" is not a semantic version (major.minor.patch): {e}"),
                ))
            }
        }
    }
}

fn parse_format_version(map: &Map<String, Value>, file: &str) -> Result<String, RecipeError> {
    let Some(v) = get(map, "RecipeFormatVersion", file, "")? else {
        let hint = if get(map, "lambdaArn", file, "")?.is_some() {
            "; this looks like a Lambda function component definition (it has lambdaArn), \
             not a component recipe"
        } else {
            ""
        };
        return Err(RecipeError::invalid(
            file,
            "RecipeFormatVersion",
            format!("missing (expected {RECIPE_FORMAT_VERSION}){hint}"),
        ));
    };
    let text = scalar_string(v).unwrap_or_default();
    if text.trim() != RECIPE_FORMAT_VERSION {
        return Err(RecipeError::invalid(
            file,
            "RecipeFormatVersion",
            format!("unsupported format {v}; only {RECIPE_FORMAT_VERSION} exists"),
        ));
    }
    Ok(RECIPE_FORMAT_VERSION.to_owned())
}

/// Deepest a `DefaultConfiguration` may nest (the object itself counts 1): the core's bound
/// on every component configuration tree (`lichen_core::config::tree::MAX_CONFIG_DEPTH`).
pub const MAX_DEFAULT_CONFIGURATION_DEPTH: usize = 64;

/// Whether `v` nests more than `limit` objects/lists deep; iterative.
fn exceeds_depth(v: &Value, limit: usize) -> bool {
    let mut stack = vec![(v, 0usize)];
    while let Some((node, above)) = stack.pop() {
        let here = above + 1;
        match node {
            Value::Object(_) | Value::Array(_) if here > limit => return true,
            Value::Object(m) => stack.extend(m.values().map(|c| (c, here))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, here))),
            _ => {}
        }
    }
    false
}

fn parse_configuration(map: &Map<String, Value>, file: &str) -> Result<Value, RecipeError> {
    let empty = || Value::Object(Map::new());
    let Some(cfg) = get(map, "ComponentConfiguration", file, "")? else {
        return Ok(empty());
    };
    let Value::Object(cfg) = cfg else {
        return Err(RecipeError::invalid(
            file,
            "ComponentConfiguration",
            format!("expected an object, found {}", type_name(cfg)),
        ));
    };
    match get(cfg, "DefaultConfiguration", file, "ComponentConfiguration")? {
        None => Ok(empty()),
        Some(v @ Value::Object(_)) if exceeds_depth(v, MAX_DEFAULT_CONFIGURATION_DEPTH) => {
            Err(RecipeError::invalid(
                file,
                "ComponentConfiguration.DefaultConfiguration",
                format!(
                    "nests more than {MAX_DEFAULT_CONFIGURATION_DEPTH} levels deep (the limit \
                     of a component configuration)"
                ),
            ))
        }
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(other) => Err(RecipeError::invalid(
            file,
            "ComponentConfiguration.DefaultConfiguration",
            format!("expected an object, found {}", type_name(other)),
        )),
    }
}

fn parse_dependencies(
    map: &Map<String, Value>,
    file: &str,
) -> Result<BTreeMap<String, Dependency>, RecipeError> {
    let mut out = BTreeMap::new();
    let Some(deps) = get(map, "ComponentDependencies", file, "")? else {
        return Ok(out);
    };
    let Value::Object(deps) = deps else {
        return Err(RecipeError::invalid(
            file,
            "ComponentDependencies",
            format!(
                "expected an object keyed by component name, found {}",
                type_name(deps)
            ),
        ));
    };
    for (name, spec) in deps {
        let path = join("ComponentDependencies", name);
        check_component_name(name).map_err(|m| RecipeError::invalid(file, &path, m))?;
        let spec = match spec {
            Value::Null => &Map::new(),
            Value::Object(m) => m,
            other => {
                return Err(RecipeError::invalid(
                    file,
                    &path,
                    format!(
                        "expected an object with VersionRequirement, found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        let requirement = match optional_string(spec, "VersionRequirement", file, &path)? {
            None => VersionRange::any(),
            Some(text) => VersionRange::parse(&text).map_err(|e| {
                RecipeError::invalid(file, join(&path, "VersionRequirement"), e.to_string())
            })?,
        };
        let kind = match optional_string(spec, "DependencyType", file, &path)? {
            None => DependencyType::Hard,
            Some(t) if t.trim().eq_ignore_ascii_case("HARD") => DependencyType::Hard,
            Some(t) if t.trim().eq_ignore_ascii_case("SOFT") => DependencyType::Soft,
            Some(t) => {
                return Err(RecipeError::invalid(
                    file,
                    join(&path, "DependencyType"),
                    format!("\"{t}\" is not HARD or SOFT"),
                ));
            }
        };
        out.insert(name.clone(), Dependency { requirement, kind });
    }
    Ok(out)
}

fn parse_manifest(v: &Value, file: &str, index: usize) -> Result<Manifest, RecipeError> {
    let path = format!("Manifests[{index}]");
    let Value::Object(map) = v else {
        return Err(RecipeError::invalid(
            file,
            &path,
            format!("expected an object, found {}", type_name(v)),
        ));
    };
    let name = optional_string(map, "Name", file, &path)?;
    let platform = match get(map, "Platform", file, &path)? {
        None => PlatformRequirement::default(),
        Some(p) => parse_platform(p, file, &join(&path, "Platform"))?,
    };
    let lifecycle = get(map, "Lifecycle", file, &path)?.cloned();
    let selections = match get(map, "Selections", file, &path)? {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                scalar_string(s).ok_or_else(|| {
                    RecipeError::invalid(
                        file,
                        format!("{path}.Selections[{i}]"),
                        format!("expected a string, found {}", type_name(s)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => match scalar_string(other) {
            Some(s) => vec![s],
            None => {
                return Err(RecipeError::invalid(
                    file,
                    join(&path, "Selections"),
                    format!("expected a list of strings, found {}", type_name(other)),
                ));
            }
        },
    };
    let artifacts = match get(map, "Artifacts", file, &path)? {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, a)| parse_artifact(a, file, &format!("{path}.Artifacts[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(RecipeError::invalid(
                file,
                join(&path, "Artifacts"),
                format!("expected a list, found {}", type_name(other)),
            ));
        }
    };
    Ok(Manifest {
        name,
        platform,
        lifecycle,
        selections,
        artifacts,
    })
}

fn parse_platform(v: &Value, file: &str, path: &str) -> Result<PlatformRequirement, RecipeError> {
    let Value::Object(map) = v else {
        return Err(RecipeError::invalid(
            file,
            path,
            format!(
                "expected an object of platform attributes, found {}",
                type_name(v)
            ),
        ));
    };
    let mut req = PlatformRequirement::default();
    for (key, value) in map {
        let field = join(path, key);
        let parsed = platform_value(key, value, file, &field)?;
        let lower = key.to_ascii_lowercase();
        if req.attributes.insert(lower, parsed).is_some() {
            return Err(RecipeError::invalid(
                file,
                &field,
                "defined twice; platform keys are case-insensitive",
            ));
        }
    }
    Ok(req)
}

fn platform_value(
    key: &str,
    value: &Value,
    file: &str,
    field: &str,
) -> Result<PlatformValue, RecipeError> {
    match value {
        Value::Null => Ok(PlatformValue::Absent),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Array(_) => Err(RecipeError::invalid(
                    file,
                    format!("{field}[{i}]"),
                    "nested lists are not supported",
                )),
                other => platform_value(key, other, file, &format!("{field}[{i}]")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(PlatformValue::OneOf),
        other => {
            let text = scalar_string(other).ok_or_else(|| {
                RecipeError::invalid(
                    file,
                    field,
                    format!("expected a string, found {}", type_name(other)),
                )
            })?;
            PlatformValue::parse(key, &text).map_err(|m| RecipeError::invalid(file, field, m))
        }
    }
}

fn parse_artifact(v: &Value, file: &str, path: &str) -> Result<Artifact, RecipeError> {
    let Value::Object(map) = v else {
        return Err(RecipeError::invalid(
            file,
            path,
            format!("expected an object, found {}", type_name(v)),
        ));
    };
    let uri = required_string(map, "URI", file, path)?;
    if uri.trim().is_empty() {
        return Err(RecipeError::invalid(
            file,
            join(path, "URI"),
            "must not be empty",
        ));
    }
    let unarchive = match optional_string(map, "Unarchive", file, path)? {
        None => Unarchive::None,
        Some(u) if u.trim().eq_ignore_ascii_case("NONE") => Unarchive::None,
        Some(u) if u.trim().eq_ignore_ascii_case("ZIP") => Unarchive::Zip,
        Some(u) => {
            return Err(RecipeError::invalid(
                file,
                join(path, "Unarchive"),
                format!("\"{u}\" is not NONE or ZIP"),
            ));
        }
    };
    let mut permission = Permission::default();
    if let Some(p) = get(map, "Permission", file, path)? {
        let ppath = join(path, "Permission");
        let Value::Object(pm) = p else {
            return Err(RecipeError::invalid(
                file,
                ppath,
                format!(
                    "expected an object with Read and Execute, found {}",
                    type_name(p)
                ),
            ));
        };
        if let Some(r) = optional_string(pm, "Read", file, &ppath)? {
            permission.read = parse_access(&r, file, &join(&ppath, "Read"))?;
        }
        if let Some(x) = optional_string(pm, "Execute", file, &ppath)? {
            permission.execute = parse_access(&x, file, &join(&ppath, "Execute"))?;
        }
    }
    Ok(Artifact {
        uri,
        digest: optional_string(map, "Digest", file, path)?,
        algorithm: optional_string(map, "Algorithm", file, path)?,
        unarchive,
        permission,
    })
}

fn parse_access(s: &str, file: &str, path: &str) -> Result<Access, RecipeError> {
    match s.trim().to_ascii_uppercase().as_str() {
        "NONE" => Ok(Access::None),
        "OWNER" => Ok(Access::Owner),
        "ALL" => Ok(Access::All),
        _ => Err(RecipeError::invalid(
            file,
            path,
            format!("\"{s}\" is not NONE, OWNER or ALL"),
        )),
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "platform_steps_tests.rs"]
mod platform_steps_tests;
