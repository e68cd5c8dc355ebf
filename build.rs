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
    // Asked of git rather than read from `.git/`: in a worktree `.git` is a
    // file, and a path that does not exist makes cargo rerun this (and
    // rebuild orch) on every build.
    let Some(head) = git_path("HEAD") else { return };
    println!("cargo:rerun-if-changed={head}");
    if let Ok(text) = std::fs::read_to_string(&head) {
        if let Some(r) = text.strip_prefix("ref: ") {
            for path in [r.trim(), "packed-refs"].into_iter().filter_map(git_path) {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
}

/// Where git keeps `name` for this checkout (`git rev-parse --git-path`).
fn git_path(name: &str) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--git-path", name])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}
