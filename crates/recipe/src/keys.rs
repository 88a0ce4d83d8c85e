//! Case-insensitive access to recipe objects.
//!
//! Recipes in the wild mix `Setenv`/`setenv`, `URI`/`Uri`, `Install`/`install`; the Java
//! nucleus accepts all of them, so every structural recipe key is looked up ignoring ASCII
//! case. Two spellings of the same key in one object are ambiguous and rejected.

use serde_json::{Map, Value};

use crate::error::RecipeError;

/// Appends `key` to a dotted field path.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Looks up `key` ignoring ASCII case. `null` counts as absent (YAML `Install:` with no value).
pub(crate) fn get<'v>(
    map: &'v Map<String, Value>,
    key: &str,
    file: &str,
    path: &str,
) -> Result<Option<&'v Value>, RecipeError> {
    let mut found: Option<(&String, &Value)> = None;
    for (k, v) in map {
        if k.eq_ignore_ascii_case(key) {
            if let Some((first, _)) = found {
                return Err(RecipeError::invalid(
                    file,
                    join(path, key),
                    format!(
                        "defined twice (as \"{first}\" and \"{k}\"); keys are case-insensitive"
                    ),
                ));
            }
            found = Some((k, v));
        }
    }
    Ok(found.map(|(_, v)| v).filter(|v| !v.is_null()))
}

/// The value as a string if it is a scalar (numbers and booleans are rendered).
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Human name of a JSON value's type, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Whether `s` contains something that looks like a recipe variable (`{...:...}`). Such
/// values can only be typed after interpolation.
pub(crate) fn has_variable(s: &str) -> bool {
    match s.find('{') {
        Some(open) => s[open..]
            .find('}')
            .is_some_and(|close| s[open..open + close].contains(':')),
        None => false,
    }
}
