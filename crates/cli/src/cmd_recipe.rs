//! `lichen recipe check FILE...`: offline validation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lichen_recipe::Platform;
use serde_json::json;

use crate::Global;

#[derive(Subcommand)]
pub enum RecipeCommand {
    /// Validate recipe files. Every error names the file and the field.
    ///
    /// Also reports whether a manifest matches this machine's platform.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(global: &Global, command: RecipeCommand) -> anyhow::Result<ExitCode> {
    let RecipeCommand::Check { files } = command;
    let platform = Platform::current();
    let mut failed = 0;
    let mut results = Vec::new();
    for file in &files {
        match lichen_recipe::parse_recipe_file(file) {
            Ok(recipe) => {
                let platform_note = match recipe.select(&platform) {
                    Ok(sel) => format!("manifest {} matches this platform", sel.manifest_index),
                    Err(e) => format!("warning: {e}"),
                };
                if !global.json {
                    println!(
                        "ok    {}: {} {} ({} dependencies; {platform_note})",
                        file.display(),
                        recipe.name,
                        recipe.version,
                        recipe.dependencies.len()
                    );
                }
                results.push(json!({
                    "file": file, "ok": true, "componentName": recipe.name,
                    "componentVersion": recipe.version.to_string(), "platform": platform_note,
                }));
            }
            Err(e) => {
                failed += 1;
                if !global.json {
                    println!("error {e}");
                }
                results.push(json!({ "file": file, "ok": false, "error": e.to_string() }));
            }
        }
    }
    if global.json {
        crate::output::json(&results);
    } else if files.len() > 1 {
        println!("{} of {} recipes valid", files.len() - failed, files.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
