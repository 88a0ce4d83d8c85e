//! Errors of the recipe crate.
//!
//! Every error that comes from a recipe document names the file (the `source` given to
//! [`crate::parse_recipe`]) and, where there is one, the field path inside the recipe, so an
//! operator can fix the recipe without reading lichen's code.

use std::fmt;

/// Why a recipe (or a version range on its own) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The text is not well-formed JSON or YAML, or its top level is not a mapping.
    #[error("{file}: {message}")]
    Syntax {
        /// The file (source name) being parsed.
        file: String,
        /// What the JSON/YAML parser reported.
        message: String,
    },
    /// A field is missing or has a value the recipe format does not allow.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file (source name) being parsed.
        file: String,
        /// Path of the field inside the recipe, e.g. `Manifests[0].Lifecycle.Install.Timeout`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A field still holds a build-tool placeholder (GDK's `COMPONENT_NAME`, `{{AppName}}`, ...):
    /// the recipe was never built.
    #[error(
        "{file}: {field}: \"{value}\" is an unsubstituted build placeholder; build the recipe \
         (for example with `gdk component build`) before deploying it"
    )]
    Placeholder {
        /// The file (source name) being parsed.
        file: String,
        /// The field holding the placeholder.
        field: String,
        /// The placeholder text.
        value: String,
    },
    /// No manifest of the recipe accepts the given platform.
    #[error(
        "component {component} {version} has no manifest for platform {platform} ({available})"
    )]
    NoMatchingPlatform {
        /// The component name.
        component: String,
        /// The component version.
        version: String,
        /// The platform, rendered as `key=value, ...`.
        platform: String,
        /// The platforms the recipe's manifests accept, for the message.
        available: String,
    },
    /// A version range that does not follow the npm grammar.
    #[error("invalid version range \"{range}\": {reason}")]
    InvalidRange {
        /// The range text as given.
        range: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The recipe file could not be read.
    #[error("{file}: cannot read recipe: {error}")]
    Io {
        /// The path that could not be read.
        file: String,
        /// The underlying I/O error.
        #[source]
        error: std::io::Error,
    },
}

impl RecipeError {
    pub(crate) fn invalid(
        file: &str,
        field: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        RecipeError::Invalid {
            file: file.to_owned(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}
