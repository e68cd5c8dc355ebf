//! Records the git commit for `orch --version`.
use std::process::Command;

fn main() {
    let commit = std::env::var("ORCH_GIT_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=ORCH_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=ORCH_GIT_COMMIT");
    // A new commit changes HEAD (detached) or the branch ref it points to.
    // Their paths come from git: in a worktree `.git` is a file, and a
    // rerun-if-changed path that does not exist reruns this script (and
    // rebuilds orch) on every build.
    for path in git_paths() {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// The files a new commit changes: HEAD and the ref it points to, where
/// git says they are (none outside a git checkout).
fn git_paths() -> Vec<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let mut paths: Vec<String> = git(&["rev-parse", "--git-path", "HEAD"])
        .into_iter()
        .collect();
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.extend(git(&["rev-parse", "--git-path", &r]));
    }
    paths
        .into_iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect()
}
