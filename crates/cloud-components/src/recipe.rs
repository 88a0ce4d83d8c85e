//! The recipe side of publishing: which artifacts a recipe needs, and the stored recipe with
//! each artifact's `Digest` and `Algorithm` filled in.
//!
//! Pure: text and JSON in, JSON out.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lichen_recipe::Recipe;
use serde_json::{Map, Value};

use crate::error::{ComponentError, Result};

/// The digest algorithm the stored recipe names (Greengrass writes `SHA-256`).
pub const DIGEST_ALGORITHM: &str = "SHA-256";

/// A recipe being published: parsed, and the artifact URIs its manifests list.
#[derive(Debug, Clone)]
pub struct PublishedRecipe {
    /// The parsed recipe.
    pub recipe: Recipe,
    /// `name@version`, for messages.
    pub id: String,
    /// Every artifact URI the manifests list that the store must hold (one entry per URI,
    /// in first-listed order). `docker:` images are not files and are not listed.
    pub artifact_uris: Vec<String>,
}

impl PublishedRecipe {
    /// Parses and validates the recipe text (YAML or JSON); `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<PublishedRecipe> {
        let recipe = lichen_recipe::parse_recipe(text, source)?;
        let id = format!("{}@{}", recipe.name, recipe.version);
        let mut artifact_uris: Vec<String> = Vec::new();
        for (m, manifest) in recipe.manifests.iter().enumerate() {
            for (a, artifact) in manifest.artifacts.iter().enumerate() {
                if artifact.scheme().eq_ignore_ascii_case("docker") {
                    continue;
                }
                if artifact.file_name().is_none() {
                    return Err(ComponentError::invalid(
                        format!("recipe Manifests[{m}].Artifacts[{a}].URI"),
                        format!(
                            "{:?} names no file (it ends in '/' or has no path)",
                            artifact.uri
                        ),
                    ));
                }
                if !artifact_uris.contains(&artifact.uri) {
                    artifact_uris.push(artifact.uri.clone());
                }
            }
        }
        Ok(PublishedRecipe {
            recipe,
            id,
            artifact_uris,
        })
    }

    /// The file name the core stores the artifact `uri` under (the URI's last segment, as
    /// `lichen_recipe::Artifact::file_name` says).
    pub fn file_name(&self, uri: &str) -> Option<&str> {
        self.recipe
            .manifests
            .iter()
            .flat_map(|m| &m.artifacts)
            .find(|a| a.uri == uri)
            .and_then(|a| a.file_name())
    }

    /// The stored recipe: the document as written (JSON), with `Digest` (base64 of the
    /// SHA-256, as Greengrass writes it) and `Algorithm: SHA-256` set on every artifact whose
    /// URI is in `digests` (lowercase hex sha256 by URI). A `Digest`/`Algorithm` the author
    /// wrote is replaced, as Greengrass does. The result parses again as a recipe.
    pub fn stored_document(&self, digests: &BTreeMap<String, String>) -> Result<Value> {
        let mut document = self.recipe.document.clone();
        inject_digests(&mut document, digests)?;
        // The stored recipe is what devices receive: it must parse, and name the same
        // component, or the store would hand out something it never validated.
        let again = lichen_recipe::recipe_from_value(document.clone(), &self.id)?;
        if again.name != self.recipe.name || again.version != self.recipe.version {
            return Err(ComponentError::invalid(
                "recipe",
                "the stored recipe no longer names the published component",
            ));
        }
        Ok(document)
    }
}

/// Base64 (standard alphabet, padded) of the raw SHA-256, from its lowercase hex form.
pub fn base64_digest(sha256_hex: &str) -> Result<String> {
    let raw = hex::decode(sha256_hex)
        .ok()
        .filter(|raw| raw.len() == 32)
        .ok_or_else(|| {
            ComponentError::invalid("sha256", format!("{sha256_hex:?} is not a hex SHA-256"))
        })?;
    Ok(STANDARD.encode(raw))
}

/// Finds a key ignoring ASCII case, as the recipe parser does.
fn key_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(String::as_str)
}

fn inject_digests(document: &mut Value, digests: &BTreeMap<String, String>) -> Result<()> {
    let Value::Object(top) = document else {
        return Err(ComponentError::invalid("recipe", "not a mapping"));
    };
    let Some(manifests_key) = key_ci(top, "Manifests").map(str::to_owned) else {
        return Ok(());
    };
    let Some(Value::Array(manifests)) = top.get_mut(&manifests_key) else {
        return Ok(());
    };
    for manifest in manifests {
        let Value::Object(manifest) = manifest else {
            continue;
        };
        let Some(artifacts_key) = key_ci(manifest, "Artifacts").map(str::to_owned) else {
            continue;
        };
        let Some(Value::Array(artifacts)) = manifest.get_mut(&artifacts_key) else {
            continue;
        };
        for artifact in artifacts {
            let Value::Object(artifact) = artifact else {
                continue;
            };
            let uri = key_ci(artifact, "URI")
                .and_then(|k| artifact.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(sha256) = uri.as_ref().and_then(|u| digests.get(u)) else {
                continue;
            };
            let digest = base64_digest(sha256)?;
            artifact.retain(|k, _| {
                !k.eq_ignore_ascii_case("Digest") && !k.eq_ignore_ascii_case("Algorithm")
            });
            artifact.insert("Digest".to_owned(), Value::String(digest));
            artifact.insert(
                "Algorithm".to_owned(),
                Value::String(DIGEST_ALGORITHM.to_owned()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    const RECIPE: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Art
ComponentVersion: "1.2.3"
Manifests:
  - Platform: { os: linux }
    Artifacts:
      - uri: s3://bucket/a/run.sh
        digest: "written-by-the-author"
        ALGORITHM: MD5
      - URI: s3://bucket/model.zip
        Unarchive: ZIP
      - URI: docker:registry/image:1
  - Platform: { os: windows }
    Artifacts:
      - URI: s3://bucket/a/run.sh
"#;

    #[test]
    fn lists_each_file_artifact_once_and_skips_images() {
        let p = PublishedRecipe::parse(RECIPE, "r.yaml").unwrap();
        assert_eq!(p.id, "com.example.Art@1.2.3");
        assert_eq!(
            p.artifact_uris,
            vec!["s3://bucket/a/run.sh", "s3://bucket/model.zip"]
        );
    }

    #[test]
    fn digests_are_injected_as_base64_sha256_replacing_the_authors() {
        let p = PublishedRecipe::parse(RECIPE, "r.yaml").unwrap();
        let run = hex::encode(Sha256::digest(b"#!/bin/sh"));
        let zip = hex::encode(Sha256::digest(b"PK"));
        let digests = BTreeMap::from([
            ("s3://bucket/a/run.sh".to_owned(), run.clone()),
            ("s3://bucket/model.zip".to_owned(), zip),
        ]);
        let doc = p.stored_document(&digests).unwrap();
        let first = &doc["Manifests"][0]["Artifacts"][0];
        assert_eq!(
            first["Digest"],
            STANDARD.encode(Sha256::digest(b"#!/bin/sh"))
        );
        assert_eq!(first["Algorithm"], "SHA-256");
        assert!(first.get("digest").is_none() && first.get("ALGORITHM").is_none());
        // The same URI in the second manifest gets the same digest.
        assert_eq!(
            doc["Manifests"][1]["Artifacts"][0]["Digest"],
            first["Digest"]
        );
        assert!(doc["Manifests"][0]["Artifacts"][2].get("Digest").is_none());
        // And the stored recipe parses back with the digests typed.
        let again = lichen_recipe::recipe_from_value(doc, "stored").unwrap();
        assert_eq!(
            again.manifests[0].artifacts[0].digest.as_deref(),
            Some(STANDARD.encode(Sha256::digest(b"#!/bin/sh")).as_str())
        );
    }

    #[test]
    fn an_artifact_naming_no_file_is_refused_with_its_field() {
        let text = r#"{"RecipeFormatVersion":"2020-01-25","ComponentName":"c","ComponentVersion":"1.0.0",
            "Manifests":[{"Artifacts":[{"URI":"s3://bucket/dir/"}]}]}"#;
        let err = PublishedRecipe::parse(text, "r.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Manifests[0].Artifacts[0].URI"), "{err}");
    }

    #[test]
    fn recipe_errors_name_the_field() {
        let err = PublishedRecipe::parse(
            "RecipeFormatVersion: '2020-01-25'\nComponentName: c\nComponentVersion: one\n",
            "bad.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ComponentVersion"), "{err}");
        assert!(err.contains("bad.yaml"), "{err}");
    }

    #[test]
    fn base64_digest_refuses_what_is_not_a_sha256() {
        assert!(base64_digest("abcd").is_err());
        assert!(base64_digest(&"zz".repeat(32)).is_err());
        assert_eq!(
            base64_digest(&hex::encode([0u8; 32])).unwrap(),
            STANDARD.encode([0u8; 32])
        );
    }
}
