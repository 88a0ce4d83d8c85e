//! Bakes the git commit and the enabled cargo features into `lichen --version`. The commit comes
//! from `git rev-parse` when the source is a git checkout (no network); a source tarball says
//! `unknown`, or whatever `LICHEN_GIT_COMMIT` says (for packagers building outside git).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=LICHEN_GIT_COMMIT");
    let commit = std::env::var("LICHEN_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves (a worktree's HEAD and refs live where git says, not in ./.git).
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &reference])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=LICHEN_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=LICHEN_FEATURES={features}");
}
