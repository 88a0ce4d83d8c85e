//! The component store: recipes per component version (normalized JSON) and their artifacts.
//!
//! ```text
//! store/recipes/<name>@<version>.json
//! store/artifacts/<name>/<version>/<file>                       ({artifacts:path})
//! store/artifacts-unarchived/<name>/<version>/<zip stem>/...    ({artifacts:decompressedPath})
//! ```
//!
//! `artifacts/<name>/<version>/` is made for every staged version; the unarchived directory
//! only for a version with a ZIP artifact or whose `{artifacts:decompressedPath}` a lifecycle
//! names (Greengrass creates it when the variable is resolved): two inodes fewer for most
//! components, whose cost on ext4 dominated a 400-component deployment.
//!
//! Recipes are written crash-safely ([`crate::atomic::write_atomic`]); artifacts are copied to a
//! temporary file, fsynced, verified and renamed into place, and archives are extracted into a
//! temporary directory that is renamed into place, so a crash never leaves a torn artifact.
//! Artifact directories are read-only (0o555) once staged, as in Greengrass.

mod artifacts;
mod error;
mod fsutil;
mod unzip;

use std::fs;
use std::path::{Path, PathBuf};

use lichen_recipe::{Recipe, SelectedComponent};

use crate::paths::RootLayout;

pub use artifacts::{file_mode, sha256_file};
pub use error::StoreError;

/// Stored recipe files are readable by the core only.
const RECIPE_MODE: u32 = 0o600;

/// Recipes and artifacts of every component version the core knows, under `<root>/store`.
#[derive(Debug, Clone)]
pub struct ComponentStore {
    layout: RootLayout,
}

impl ComponentStore {
    pub fn new(layout: RootLayout) -> Self {
        ComponentStore { layout }
    }

    pub fn layout(&self) -> &RootLayout {
        &self.layout
    }

    /// `store/artifacts/<name>/<version>/`, the `{artifacts:path}` of that version.
    pub fn artifacts_path(&self, name: &str, version: &semver::Version) -> PathBuf {
        self.layout.artifacts_dir(name, &version.to_string())
    }

    /// `store/artifacts-unarchived/<name>/<version>/`, the `{artifacts:decompressedPath}`.
    pub fn unarchived_path(&self, name: &str, version: &semver::Version) -> PathBuf {
        self.layout.unarchived_dir(name, &version.to_string())
    }

    /// `store/recipes/<name>@<version>.json`.
    pub fn recipe_path(&self, name: &str, version: &semver::Version) -> PathBuf {
        self.layout
            .recipes_dir()
            .join(format!("{name}@{version}.json"))
    }

    /// Stores the recipe's normalized JSON document, replacing an earlier copy atomically.
    pub fn save_recipe(&self, recipe: &Recipe) -> Result<(), StoreError> {
        check_segment(&recipe.name)?;
        let path = self.recipe_path(&recipe.name, &recipe.version);
        let bytes = serde_json::to_vec_pretty(&recipe.document).map_err(|e| {
            StoreError::io(
                format!("serializing recipe {} {}", recipe.name, recipe.version),
                std::io::Error::other(e),
            )
        })?;
        crate::atomic::write_atomic(&path, &bytes, RECIPE_MODE)?;
        Ok(())
    }

    /// Stores several recipes crash-safely with one filesystem sync instead of two fsyncs
    /// each (a 400-component deployment spent seconds in fsync): every temporary file is
    /// written, the filesystem is synced once, then each is renamed into place and the
    /// directory is synced once. Temporaries are removed on error.
    pub fn save_recipes(&self, recipes: &[&Recipe]) -> Result<(), StoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.layout.recipes_dir();
        fs::create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(recipes.len());
        let result = (|| {
            for recipe in recipes {
                check_segment(&recipe.name)?;
                let path = self.recipe_path(&recipe.name, &recipe.version);
                let tmp = dir.join(format!(
                    ".{}@{}.json.tmp{}",
                    recipe.name,
                    recipe.version,
                    std::process::id()
                ));
                let bytes = serde_json::to_vec_pretty(&recipe.document).map_err(|e| {
                    StoreError::io(
                        format!("serializing recipe {} {}", recipe.name, recipe.version),
                        std::io::Error::other(e),
                    )
                })?;
                staged.push((tmp.clone(), path));
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(RECIPE_MODE)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&bytes))
                    .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
            }
            if staged.is_empty() {
                return Ok(());
            }
            let dir_file = fs::File::open(&dir)
                .map_err(|e| StoreError::io(format!("opening {}", dir.display()), e))?;
            nix::unistd::syncfs(&dir_file).map_err(|e| {
                StoreError::io(
                    format!("syncing the filesystem of {}", dir.display()),
                    e.into(),
                )
            })?;
            for (tmp, path) in &staged {
                fs::rename(tmp, path).map_err(|e| {
                    StoreError::io(
                        format!("renaming {} to {}", tmp.display(), path.display()),
                        e,
                    )
                })?;
            }
            fsutil::sync_dir(&dir)
        })();
        if result.is_err() {
            for (tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }

    /// Stored versions by component name, from one listing of the recipes directory.
    pub fn recipe_index(&self) -> std::collections::BTreeMap<String, Vec<semver::Version>> {
        let mut index: std::collections::BTreeMap<String, Vec<semver::Version>> =
            Default::default();
        for (name, version) in self.stored_recipe_files() {
            index.entry(name).or_default().push(version);
        }
        for versions in index.values_mut() {
            versions.sort();
            versions.dedup();
        }
        index
    }

    /// Loads a stored recipe; [`StoreError::RecipeNotFound`] when that version is not stored.
    pub fn load_recipe(&self, name: &str, version: &semver::Version) -> Result<Recipe, StoreError> {
        check_segment(name)?;
        let path = self.recipe_path(name, version);
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::RecipeNotFound {
                    name: name.to_string(),
                    version: version.to_string(),
                });
            }
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        }
        Ok(lichen_recipe::parse_recipe_file(&path)?)
    }

    /// Whether a recipe for that version is stored.
    pub fn contains(&self, name: &str, version: &semver::Version) -> bool {
        check_segment(name).is_ok() && self.recipe_path(name, version).is_file()
    }

    /// The stored versions of a component, ascending.
    pub fn versions(&self, name: &str) -> Vec<semver::Version> {
        let mut out: Vec<semver::Version> = self
            .stored_recipe_files()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every stored recipe of a component, ascending by version (for version resolution).
    /// A stored recipe that no longer parses is skipped with a warning.
    pub fn recipes(&self, name: &str) -> Vec<Recipe> {
        self.versions(name)
            .into_iter()
            .filter_map(|v| match self.load_recipe(name, &v) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(component = name, version = %v, error = %e, "skipping unreadable stored recipe");
                    None
                }
            })
            .collect()
    }

    /// Names of all components with at least one stored recipe, sorted.
    pub fn component_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .stored_recipe_files()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// `(name, version)` of every `<name>@<version>.json` in the recipes directory.
    fn stored_recipe_files(&self) -> Vec<(String, semver::Version)> {
        let Ok(entries) = fs::read_dir(self.layout.recipes_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name();
                let file = file.to_str()?;
                let stem = file.strip_suffix(".json")?;
                let (name, version) = stem.rsplit_once('@')?;
                let version = semver::Version::parse(version).ok()?;
                (!name.is_empty() && !name.starts_with('.')).then(|| (name.to_string(), version))
            })
            .collect()
    }

    /// Parses every `*.yaml`, `*.yml` and `*.json` file directly in `dir` (not recursively,
    /// hidden files skipped), in file-name order. Does not store anything: the deployment
    /// saves the recipes it uses.
    pub fn import_recipe_dir(&self, dir: &Path) -> Result<Vec<Recipe>, StoreError> {
        let dir_err = |source| StoreError::RecipeDirectory {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if !matches!(ext.as_deref(), Some("yaml" | "yml" | "json")) {
                continue;
            }
            // Follows symlinks: a recipe directory may link recipes kept elsewhere.
            if path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut recipes: Vec<(Recipe, &PathBuf)> = Vec::with_capacity(files.len());
        for f in &files {
            let recipe = lichen_recipe::parse_recipe_file(f)?;
            if let Some((_, first)) = recipes
                .iter()
                .find(|(r, _)| r.name == recipe.name && r.version == recipe.version)
            {
                return Err(StoreError::DuplicateRecipe {
                    name: recipe.name,
                    version: recipe.version.to_string(),
                    first: first.to_path_buf(),
                    second: f.clone(),
                });
            }
            recipes.push((recipe, f));
        }
        Ok(recipes.into_iter().map(|(r, _)| r).collect())
    }

    /// Removes a component version: its recipe, artifacts and extracted archives. Read-only
    /// artifact files and directories are made writable first. Missing parts are not an error.
    pub fn remove_version(&self, name: &str, version: &semver::Version) -> Result<(), StoreError> {
        check_segment(name)?;
        let recipe = self.recipe_path(name, version);
        match fs::remove_file(&recipe) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", recipe.display()), e)),
        }
        for dir in [
            self.artifacts_path(name, version),
            self.unarchived_path(name, version),
        ] {
            fsutil::remove_tree(&dir)?;
            // Drop `<name>/` once its last version is gone, and an emptied
            // `artifacts-unarchived/` too: it exists only while some version has extracted
            // archives, so a rolled-back ZIP leaves the store as it found it.
            if let Some(parent) = dir.parent()
                && fs::remove_dir(parent).is_ok()
                && dir == self.unarchived_path(name, version)
                && let Some(root) = parent.parent()
            {
                let _ = fs::remove_dir(root);
            }
        }
        if let Some(dir) = recipe.parent() {
            let _ = crate::atomic::sync_dir(dir);
        }
        Ok(())
    }

    /// Brings a component's artifacts into the store: see [`artifacts::stage`].
    ///
    /// For each artifact, the file `<artifact_dir>/<component>/<version>/<file name>` is copied
    /// in (crash-safely); when it is absent but already stored by an earlier deployment, the
    /// stored copy is used. Digests are verified, ZIP archives extracted to
    /// `<decompressedPath>/<file stem>/` and the recipe's `Permission` applied. `docker:`
    /// artifacts are refused.
    pub fn stage_artifacts(
        &self,
        component: &SelectedComponent,
        artifact_dir: Option<&Path>,
    ) -> Result<(), StoreError> {
        self.stage_artifacts_as(component, artifact_dir, None, false)
    }

    /// [`ComponentStore::stage_artifacts`], giving every artifact file (and every file
    /// extracted from an archive) to `owner` = (uid, gid): the user the component runs as, so
    /// that `Permission` `OWNER` means that user, as in Greengrass. Directories stay owned by
    /// the core. Changing owners needs root; pass `None` when the core is not root or the
    /// component runs as the core's user. Call it on every deployment: a re-staged file is
    /// owned by the core until given away again.
    ///
    /// `{artifacts:path}` always exists; `{artifacts:decompressedPath}` exists when the
    /// component has a ZIP artifact or `decompressed_dir` is set (a lifecycle names it).
    pub fn stage_artifacts_as(
        &self,
        component: &SelectedComponent,
        artifact_dir: Option<&Path>,
        owner: Option<(u32, u32)>,
        decompressed_dir: bool,
    ) -> Result<(), StoreError> {
        check_segment(&component.name)?;
        artifacts::stage(self, component, artifact_dir, owner, decompressed_dir)
    }
}

/// A component name or file name used as one path segment must not escape its directory.
pub(crate) fn check_segment(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it is a relative path segment"
    } else if name.contains('/') || name.contains('\\') {
        "it contains a path separator"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests;
