//! The typed recipe and what selecting a manifest for a platform yields.

use std::collections::BTreeMap;

use semver::Version;
use serde_json::Value;

use crate::error::RecipeError;
use crate::lifecycle::{Interpolator, Lifecycle, select_global_lifecycle, selection_keywords};
use crate::platform::{Platform, PlatformRequirement};
use crate::range::VersionRange;

/// A parsed and validated component recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// `RecipeFormatVersion`; always `2020-01-25`.
    pub format_version: String,
    /// `ComponentName`.
    pub name: String,
    /// `ComponentVersion`.
    pub version: Version,
    /// `ComponentDescription`.
    pub description: Option<String>,
    /// `ComponentPublisher`.
    pub publisher: Option<String>,
    /// `ComponentType`.
    pub component_type: ComponentType,
    /// `ComponentConfiguration.DefaultConfiguration`; always an object (`{}` if absent).
    pub default_configuration: Value,
    /// `ComponentDependencies`, by component name.
    pub dependencies: BTreeMap<String, Dependency>,
    /// `Manifests`, in recipe order (order matters: the first match wins).
    pub manifests: Vec<Manifest>,
    /// The top-level (global) `Lifecycle`, with its selection keys, as written.
    pub global_lifecycle: Option<Value>,
    /// The whole recipe as JSON, keys as written, so the store can keep it normalized and
    /// re-parse it with [`crate::parse_recipe`].
    pub document: Value,
}

/// `ComponentType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ComponentType {
    /// `aws.greengrass.generic`: runs commands or provides artifacts.
    #[default]
    Generic,
    /// `aws.greengrass.lambda`: runs a Lambda function through the Lambda launcher.
    Lambda,
    /// `aws.greengrass.plugin`: runs inside the Java nucleus (lichen cannot run these).
    Plugin,
    /// `aws.greengrass.nucleus`: the nucleus itself.
    Nucleus,
    /// `lichen.wasm`, lichen's own: a WebAssembly module run in-process in a sandbox by the
    /// node's WASM service (its artifact is the module; see `lichen-wasm`).
    Wasm,
}

impl ComponentType {
    /// The recipe spelling, e.g. `aws.greengrass.generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentType::Generic => "aws.greengrass.generic",
            ComponentType::Lambda => "aws.greengrass.lambda",
            ComponentType::Plugin => "aws.greengrass.plugin",
            ComponentType::Nucleus => "aws.greengrass.nucleus",
            ComponentType::Wasm => "lichen.wasm",
        }
    }

    /// Parses the recipe spelling, ignoring case.
    pub fn parse(s: &str) -> Option<ComponentType> {
        [
            ComponentType::Generic,
            ComponentType::Lambda,
            ComponentType::Plugin,
            ComponentType::Nucleus,
            ComponentType::Wasm,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// One entry of `ComponentDependencies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// `VersionRequirement` (`*` if absent).
    pub requirement: VersionRange,
    /// `DependencyType`.
    pub kind: DependencyType,
}

/// `DependencyType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DependencyType {
    /// The component restarts when the dependency changes state.
    #[default]
    Hard,
    /// The component does not restart when the dependency changes state.
    Soft,
}

/// One entry of `Manifests`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `Name`.
    pub name: Option<String>,
    /// `Platform`; empty matches every platform.
    pub platform: PlatformRequirement,
    /// The manifest's own `Lifecycle`, as written. `None` (or `{}`) means "use the global
    /// lifecycle with `selections`".
    pub lifecycle: Option<Value>,
    /// `Selections` into the global lifecycle (defaults to `["all"]` when empty).
    pub selections: Vec<String>,
    /// `Artifacts`.
    pub artifacts: Vec<Artifact>,
}

/// One entry of a manifest's `Artifacts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `URI`, as written (`s3://`, `greengrass:`, `docker:`, or anything else: the runtime
    /// decides what it can fetch).
    pub uri: String,
    /// `Digest`: base64 or hex digest set by the service, verified after download.
    pub digest: Option<String>,
    /// `Algorithm` of the digest, e.g. `SHA-256`.
    pub algorithm: Option<String>,
    /// `Unarchive`.
    pub unarchive: Unarchive,
    /// `Permission`.
    pub permission: Permission,
}

impl Artifact {
    /// The URI scheme (`s3`, `greengrass`, `docker`, ...), or `""` if the URI has none.
    pub fn scheme(&self) -> &str {
        match self.uri.split_once(':') {
            Some((scheme, _))
                if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                scheme
            }
            _ => "",
        }
    }

    /// The file name the artifact is stored under: the last path segment of the URI.
    /// `None` for `docker:` images and URIs that end in `/` or name no path.
    pub fn file_name(&self) -> Option<&str> {
        let scheme = self.scheme();
        if scheme.eq_ignore_ascii_case("docker") {
            return None;
        }
        let rest = if scheme.is_empty() {
            self.uri.as_str()
        } else {
            &self.uri[scheme.len() + 1..]
        };
        // `s3://bucket/key`: the bucket is not a file name.
        let path = match rest.strip_prefix("//") {
            Some(auth_and_path) => auth_and_path.split_once('/').map(|(_, p)| p)?,
            None => rest,
        };
        let name = path.rsplit('/').next()?;
        (!name.is_empty() && name != "." && name != "..").then_some(name)
    }
}

/// `Unarchive`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Unarchive {
    /// Keep the file as it is.
    #[default]
    None,
    /// Extract the ZIP archive to `{artifacts:decompressedPath}/<name without extension>`.
    Zip,
}

/// `Permission` of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    /// `Read` (default `OWNER`).
    pub read: Access,
    /// `Execute` (default `NONE`); implies read.
    pub execute: Access,
}

impl Default for Permission {
    fn default() -> Self {
        Permission {
            read: Access::Owner,
            execute: Access::None,
        }
    }
}

/// Who gets a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Nobody.
    None,
    /// The user the component runs as.
    Owner,
    /// Every user (needed for dependents to use the artifact).
    All,
}

/// What the runtime needs of a recipe on one platform.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectedComponent {
    /// The component name.
    pub name: String,
    /// The component version.
    pub version: Version,
    /// The effective, typed lifecycle (manifest lifecycle, or the selected global one).
    pub lifecycle: Lifecycle,
    /// The artifacts of the chosen manifest.
    pub artifacts: Vec<Artifact>,
    /// Index of the chosen manifest in [`Recipe::manifests`].
    pub manifest_index: usize,
}

impl Recipe {
    /// Selects the first manifest that accepts `platform` and types its lifecycle.
    ///
    /// Typed lifecycle fields holding a recipe variable (e.g. a `Timeout` of
    /// `{configuration:/timeout}`) are left at their defaults; use [`Recipe::select_with`]
    /// to interpolate before typing.
    pub fn select(&self, platform: &Platform) -> Result<SelectedComponent, RecipeError> {
        self.select_inner(platform, None)
    }

    /// Like [`Recipe::select`], but every string of the lifecycle goes through `interpolate`
    /// first (typically [`crate::interpolate`] bound to this component), so variable-valued
    /// `Timeout`/`RequiresPrivilege`/`Skipif` are typed with their real values.
    pub fn select_with(
        &self,
        platform: &Platform,
        interpolate: Interpolator<'_>,
    ) -> Result<SelectedComponent, RecipeError> {
        self.select_inner(platform, Some(interpolate))
    }

    /// The selection keys this recipe declares (all manifests' `Selections`, plus `all`).
    pub fn selection_keywords(&self) -> Vec<String> {
        selection_keywords(self.manifests.iter().map(|m| m.selections.as_slice()))
    }

    /// Names of the direct dependencies, in the form [`crate::interpolate`] takes.
    pub fn dependency_names(&self) -> Vec<&str> {
        self.dependencies.keys().map(String::as_str).collect()
    }

    /// Index of the first manifest that accepts `platform`.
    pub fn manifest_for(&self, platform: &Platform) -> Option<usize> {
        self.manifests
            .iter()
            .position(|m| m.platform.matches(platform))
    }

    /// The untyped effective lifecycle of manifest `index`: its own lifecycle if it has a
    /// non-empty one, otherwise the global lifecycle filtered by its selections.
    pub fn lifecycle_value(&self, index: usize) -> Option<Value> {
        let manifest = self.manifests.get(index)?;
        Some(effective_lifecycle(
            manifest,
            self.global_lifecycle.as_ref(),
            &self.selection_keywords(),
        ))
    }

    fn select_inner(
        &self,
        platform: &Platform,
        interp: Option<Interpolator<'_>>,
    ) -> Result<SelectedComponent, RecipeError> {
        let index = self
            .manifest_for(platform)
            .ok_or_else(|| RecipeError::NoMatchingPlatform {
                component: self.name.clone(),
                version: self.version.to_string(),
                platform: platform.to_string(),
                available: if self.manifests.is_empty() {
                    "the recipe has no Manifests".to_owned()
                } else {
                    let list: Vec<String> = self
                        .manifests
                        .iter()
                        .map(|m| format!("[{}]", m.platform))
                        .collect();
                    format!("manifests: {}", list.join(", "))
                },
            })?;
        let manifest = &self.manifests[index];
        let value = effective_lifecycle(
            manifest,
            self.global_lifecycle.as_ref(),
            &self.selection_keywords(),
        );
        let value = crate::lifecycle::resolve_platform_steps(
            &value,
            platform.get("os").unwrap_or(std::env::consts::OS),
        );
        let origin = format!("{} {}", self.name, self.version);
        let lifecycle =
            Lifecycle::from_value_with(&value, &origin, &lifecycle_path(manifest, index), interp)?;
        Ok(SelectedComponent {
            name: self.name.clone(),
            version: self.version.clone(),
            lifecycle,
            artifacts: manifest.artifacts.clone(),
            manifest_index: index,
        })
    }
}

/// Field path used in errors for the effective lifecycle of a manifest.
pub(crate) fn lifecycle_path(manifest: &Manifest, index: usize) -> String {
    if has_own_lifecycle(manifest) {
        format!("Manifests[{index}].Lifecycle")
    } else {
        "Lifecycle".to_owned()
    }
}

fn has_own_lifecycle(manifest: &Manifest) -> bool {
    match &manifest.lifecycle {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(_) => true,
    }
}

pub(crate) fn effective_lifecycle(
    manifest: &Manifest,
    global: Option<&Value>,
    keywords: &[String],
) -> Value {
    if has_own_lifecycle(manifest) {
        return manifest.lifecycle.clone().unwrap_or(Value::Null);
    }
    match global {
        Some(g) => select_global_lifecycle(g, keywords, &manifest.selections),
        None => Value::Object(serde_json::Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(uri: &str) -> Artifact {
        Artifact {
            uri: uri.into(),
            digest: None,
            algorithm: None,
            unarchive: Unarchive::None,
            permission: Permission::default(),
        }
    }

    #[test]
    fn artifact_scheme_and_file_name() {
        let a = art("s3://bucket/a/b/model.zip");
        assert_eq!(a.scheme(), "s3");
        assert_eq!(a.file_name(), Some("model.zip"));
        assert_eq!(art("greengrass:hello.py").file_name(), Some("hello.py"));
        assert_eq!(art("greengrass:hello.py").scheme(), "greengrass");
        assert_eq!(art("docker:$DOCKER_IMAGE").scheme(), "docker");
        assert_eq!(art("docker:$DOCKER_IMAGE").file_name(), None);
        assert_eq!(art("s3//some-bucket/hello-world2.py").scheme(), "");
        assert_eq!(
            art("s3//some-bucket/hello-world2.py").file_name(),
            Some("hello-world2.py")
        );
        assert_eq!(art("s3://bucket").file_name(), None);
        assert_eq!(art("s3://bucket/dir/").file_name(), None);
        assert_eq!(art("s3://bucket/..").file_name(), None);
        assert_eq!(art("file:///tmp/x.sh").file_name(), Some("x.sh"));
        assert_eq!(art("1http://x/y").scheme(), "");
        assert_eq!(Permission::default().read, Access::Owner);
        assert_eq!(Permission::default().execute, Access::None);
    }

    #[test]
    fn component_type_names() {
        assert_eq!(
            ComponentType::parse("AWS.Greengrass.Lambda"),
            Some(ComponentType::Lambda)
        );
        assert_eq!(
            ComponentType::parse("aws.greengrass.nucleus"),
            Some(ComponentType::Nucleus)
        );
        assert_eq!(
            ComponentType::parse("Lichen.WASM"),
            Some(ComponentType::Wasm)
        );
        assert_eq!(ComponentType::Wasm.as_str(), "lichen.wasm");
        assert_eq!(ComponentType::parse("generic"), None);
        assert_eq!(ComponentType::default().as_str(), "aws.greengrass.generic");
    }
}
