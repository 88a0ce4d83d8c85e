//! Errors of the component store. Each names the component, file, URI or directory concerned.

use std::path::PathBuf;

use crate::error::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A recipe could not be parsed; the recipe crate's error names the file and the field.
    #[error(transparent)]
    Recipe(#[from] lichen_recipe::RecipeError),
    /// The recipe directory given to a local deployment is missing or unreadable.
    #[error("recipe directory {dir}: {source}")]
    RecipeDirectory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A core-wide error (from the crash-safe writers) surfacing inside the store.
    #[error(transparent)]
    Core(Box<CoreError>),
    /// Two files of one recipe directory define the same component version.
    #[error("{name} {version} is defined twice: in {} and in {}", first.display(), second.display())]
    DuplicateRecipe {
        name: String,
        version: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// No stored recipe for this component version.
    #[error("component {name} version {version} is not in the component store")]
    RecipeNotFound { name: String, version: String },
    /// A component name that cannot be used as a store path segment.
    #[error("component name \"{name}\" cannot be stored: {reason}")]
    InvalidName { name: String, reason: String },
    /// An artifact lichen cannot provide (e.g. a docker image).
    #[error("component {component}: {reason}: {uri}")]
    UnsupportedArtifact {
        component: String,
        uri: String,
        reason: String,
    },
    /// The artifact file was not in the artifact directory nor already in the store.
    #[error(
        "component {component}: artifact {uri} not found: looked in {} and in the component store",
        looked_in.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "no artifact directory (none given)".into())
    )]
    MissingArtifact {
        component: String,
        uri: String,
        /// `<artifact_dir>/<component>/<version>/`, when an artifact directory was given.
        looked_in: Option<PathBuf>,
    },
    /// The recipe's `Digest` is not a SHA-256 digest in base64 or hex.
    #[error(
        "component {component}: artifact {uri}: digest \"{digest}\" is neither base64 nor hex SHA-256"
    )]
    InvalidDigest {
        component: String,
        uri: String,
        digest: String,
    },
    /// The recipe's `Algorithm` is not one lichen can verify.
    #[error(
        "component {component}: artifact {uri}: unsupported digest algorithm \"{algorithm}\" (only SHA-256)"
    )]
    UnsupportedAlgorithm {
        component: String,
        uri: String,
        algorithm: String,
    },
    #[error(
        "component {component}: artifact {file}: digest mismatch: recipe says {expected}, file has {actual}"
    )]
    DigestMismatch {
        component: String,
        file: PathBuf,
        expected: String,
        actual: String,
    },
    /// A ZIP entry that would land outside the extraction directory, or a symlink entry.
    #[error("component {component}: archive {file}: refusing unsafe entry \"{entry}\"")]
    UnsafeArchive {
        component: String,
        file: PathBuf,
        entry: String,
    },
    /// A ZIP artifact that cannot be read.
    #[error("component {component}: archive {file}: {message}")]
    BadArchive {
        component: String,
        file: PathBuf,
        message: String,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { context, source } => CoreError::Io { context, source },
            StoreError::Core(inner) => *inner,
            StoreError::RecipeNotFound { name, version } => {
                CoreError::ComponentNotFound(format!("{name} {version}"))
            }
            StoreError::RecipeDirectory { .. }
            | StoreError::InvalidName { .. }
            | StoreError::Recipe(_) => CoreError::InvalidArgument(e.to_string()),
            other => CoreError::Other(other.to_string()),
        }
    }
}

impl From<CoreError> for StoreError {
    fn from(e: CoreError) -> Self {
        StoreError::Core(Box::new(e))
    }
}
