//! Who holds the deployment's lock, and how an orch run by `-- CMD` acts
//! under the lock its parent holds.
//!
//! The lock itself is an `flock` on the state folder's `lock` file (see
//! [`crate::store::FileStore::lock`]); this module owns what goes around it:
//! the text written into the file (pid, command, since, and the sha256 of the
//! token handed to CMD), the paths this process holds for a whole
//! maintenance, and how long a command waits for another holder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The environment variable that hands CMD the lock token.
pub const TOKEN_ENV: &str = "ORCH_LOCK_TOKEN";

/// How long install/start/stop/restart/reload wait for another holder
/// when neither `--lock-wait` nor `ORCH_LOCK_WAIT` says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Lock files this process holds across several operations (the stop,
/// CMD and the resume of `stop-for-maintenance -- CMD`).
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
/// This process's token, made when it first holds a lock across CMD.
static TOKEN: OnceLock<String> = OnceLock::new();
static WAIT: OnceLock<Duration> = OnceLock::new();
static COMMAND: OnceLock<String> = OnceLock::new();

/// Sets the bound of the wait for the lock (`--lock-wait`), once, at start.
pub fn set_wait(wait: Duration) {
    let _ = WAIT.set(wait);
}

/// Names the command this orch runs, for the holder text.
pub fn set_command(name: &str) {
    let _ = COMMAND.set(name.to_string());
}

pub fn wait() -> Duration {
    WAIT.get().copied().unwrap_or(DEFAULT_WAIT)
}

/// The token handed to CMD (random, made once), whose sha256 the lock file holds.
pub fn token() -> &'static str {
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 32];
        // /dev/urandom never blocks once the kernel's pool is seeded; a
        // failure leaves a token that cannot match any hash (all zeros are
        // refused in `inherited`).
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut bytes);
        }
        hex(&bytes)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// `PID … (orch COMMAND) on HOST since TIME[, token sha256 HASH]`: what a
/// second orch prints, and what a child with the token matches.
pub fn holder_text() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let command = COMMAND.get().map(String::as_str).unwrap_or("?");
    let mut text = format!(
        "PID {} (orch {command}) on {host} since {since}",
        std::process::id()
    );
    if let Some(t) = TOKEN.get() {
        text.push_str(&format!(", token sha256 {}", sha256(t)));
    }
    text
}

/// The holder as people read it: without the token's hash.
pub fn show(holder: &str) -> String {
    match holder.find(", token sha256 ") {
        Some(i) => holder[..i].to_string(),
        None => holder.to_string(),
    }
}

/// True when this orch was given, in [`TOKEN_ENV`], the token of the
/// holder: it runs inside that holder's `-- CMD` and acts under its lock.
pub fn inherited(holder: &str) -> bool {
    match std::env::var(TOKEN_ENV) {
        Ok(t) if t.len() == 64 && t.bytes().any(|b| b != b'0') => {
            holder.ends_with(&format!(", token sha256 {}", sha256(&t)))
        }
        _ => false,
    }
}

/// Marks `path` held by this process until [`release`].
pub fn hold(path: &Path) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.get_or_insert_with(HashSet::new)
        .insert(path.to_path_buf());
}

pub fn release(path: &Path) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = held.as_mut() {
        h.remove(path);
    }
}

/// True when this process already holds `path` across operations.
pub fn held_here(path: &Path) -> bool {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.as_ref().is_some_and(|h| h.contains(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_hash_is_hidden_and_matched() {
        let t = token().to_string();
        let text = holder_text();
        assert!(text.contains(&sha256(&t)), "{text}");
        assert!(!show(&text).contains("sha256"), "{}", show(&text));
        assert!(show(&text).starts_with("PID "));
    }
}
