//! What can go wrong in the component store, and how each maps to an HTTP status.

use lichen_cloud_store::StoreError;

/// Component-store errors. Each names the component version, artifact or field concerned.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The recipe does not parse or validate (the message names the recipe field).
    #[error("invalid recipe: {0}")]
    Recipe(#[from] lichen_recipe::RecipeError),
    /// A request field is malformed (upload header, query, path).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field, e.g. `artifacts[2].sha256`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The recipe lists an artifact that was neither uploaded nor referenced by digest.
    #[error("component {component}: the recipe lists artifact {uri:?}, but it was not supplied")]
    MissingArtifact {
        /// `name@version`.
        component: String,
        /// The artifact URI as the recipe writes it.
        uri: String,
    },
    /// An artifact was supplied that no manifest of the recipe lists.
    #[error(
        "component {component}: artifact {uri:?} was supplied, but no manifest of the recipe lists it"
    )]
    UnexpectedArtifact {
        /// `name@version`.
        component: String,
        /// The URI the upload named.
        uri: String,
    },
    /// An artifact referenced by digest is not in the artifact store.
    #[error(
        "component {component}: artifact {uri:?} refers to sha256 {sha256}, which is not stored; upload its content"
    )]
    UnknownDigest {
        /// `name@version`.
        component: String,
        /// The artifact URI.
        uri: String,
        /// The digest that was named.
        sha256: String,
    },
    /// The uploaded content does not match what the upload header declared.
    #[error("component {component}: artifact {uri:?}: {message}")]
    ContentMismatch {
        /// `name@version`.
        component: String,
        /// The artifact URI.
        uri: String,
        /// What differs (size, digest).
        message: String,
    },
    /// An artifact or the sum of a version's artifacts is larger than allowed.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large, e.g. `artifact "s3://b/model.zip" of com.example.Ml@1.0.0`.
        what: String,
        /// Its size (or at least this much, when it was counted while streaming).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The version exists already; versions are immutable.
    #[error("component {component} already exists; versions are immutable, publish a new version")]
    AlreadyExists {
        /// `name@version`.
        component: String,
    },
    /// No such component version or artifact.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The version cannot be deleted: deployments name it.
    #[error(
        "component {component} is used by deployment(s) {deployments}; delete or replace them first"
    )]
    InUse {
        /// `name@version`.
        component: String,
        /// The deployments naming it.
        deployments: String,
    },
    /// Reading the upload failed (the client went away, the body ended early).
    #[error("reading {what}: {message}")]
    Read {
        /// What was being read.
        what: String,
        /// The I/O error.
        message: String,
    },
    /// The operation raced with another one (an artifact was collected meanwhile); retry.
    #[error("{0}; retry")]
    Conflict(String),
    /// The request body is of a type this route does not take.
    #[error("content type {found:?} is not accepted here; send {expected}")]
    UnsupportedMediaType {
        /// The content type sent.
        found: String,
        /// What the route takes.
        expected: String,
    },
    /// The operation took longer than allowed.
    #[error("{what} took longer than {seconds} s")]
    Timeout {
        /// What was being done.
        what: String,
        /// The bound.
        seconds: u64,
    },
    /// The storage failed.
    #[error("storage: {0}")]
    Store(StoreError),
}

impl ComponentError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ComponentError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        // As the control plane's API: 400 for a body of the wrong shape, 422 for a value
        // that parses but is not acceptable.
        match self {
            ComponentError::Invalid { .. }
            | ComponentError::ContentMismatch { .. }
            | ComponentError::Read { .. } => 400,
            ComponentError::Recipe(_)
            | ComponentError::MissingArtifact { .. }
            | ComponentError::UnexpectedArtifact { .. }
            | ComponentError::UnknownDigest { .. } => 422,
            ComponentError::NotFound { .. } => 404,
            ComponentError::AlreadyExists { .. }
            | ComponentError::InUse { .. }
            | ComponentError::Conflict(_) => 409,
            ComponentError::TooLarge { .. } => 413,
            ComponentError::UnsupportedMediaType { .. } => 415,
            ComponentError::Timeout { .. } => 503,
            ComponentError::Store(e) => match e {
                StoreError::NotFound { .. } => 404,
                StoreError::AlreadyExists { .. }
                | StoreError::InUse { .. }
                | StoreError::Superseded { .. }
                | StoreError::VersionConflict { .. } => 409,
                StoreError::Invalid { .. } => 422,
                StoreError::Database(_) | StoreError::Artifacts { .. } => 500,
            },
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ComponentError::Recipe(_) => "InvalidRecipe",
            ComponentError::Invalid { .. } => "MalformedRequest",
            ComponentError::MissingArtifact { .. } => "MissingArtifact",
            ComponentError::UnexpectedArtifact { .. } => "UnexpectedArtifact",
            ComponentError::UnknownDigest { .. } => "UnknownDigest",
            ComponentError::ContentMismatch { .. } => "ContentMismatch",
            ComponentError::Read { .. } => "UploadIncomplete",
            ComponentError::NotFound { .. } => "NotFound",
            ComponentError::AlreadyExists { .. } => "AlreadyExists",
            ComponentError::InUse { .. } => "InUse",
            ComponentError::Conflict(_) => "Conflict",
            ComponentError::TooLarge { .. } => "PayloadTooLarge",
            ComponentError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ComponentError::Timeout { .. } => "Timeout",
            ComponentError::Store(e) => match e {
                StoreError::NotFound { .. } => "NotFound",
                StoreError::AlreadyExists { .. } => "AlreadyExists",
                StoreError::InUse { .. } => "InUse",
                StoreError::Superseded { .. } => "Superseded",
                StoreError::VersionConflict { .. } => "Conflict",
                StoreError::Invalid { .. } => "InvalidField",
                StoreError::Database(_) | StoreError::Artifacts { .. } => "InternalError",
            },
        }
    }
}

impl From<StoreError> for ComponentError {
    fn from(e: StoreError) -> Self {
        ComponentError::Store(e)
    }
}

/// Result of the component store.
pub type Result<T> = std::result::Result<T, ComponentError>;
