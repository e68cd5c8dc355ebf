//! docs/ansible/orch.yml must stay a valid playbook. Fails (never skips) when
//! ansible-playbook is missing, so CI cannot pass without checking it.

use crate::support::OutputBounded;
use std::path::Path;
use std::process::Command;

#[test]
fn playbook_passes_syntax_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let playbook = root.join("docs/ansible/orch.yml");
    let out = match Command::new("ansible-playbook")
        .arg("--syntax-check")
        .arg(&playbook)
        // Localhost only, no inventory lookups, no cowsay or colour in the message.
        .args(["-i", "localhost,"])
        .env("ANSIBLE_NOCOWS", "1")
        .env("ANSIBLE_NOCOLOR", "1")
        .current_dir(root)
        .output_bounded()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "ansible-playbook not found on PATH: install it with `pip install ansible-core` \
             (or `python3 -m pip install ansible-core`) to check {}",
            playbook.display()
        ),
        Err(e) => panic!("cannot run ansible-playbook: {e}"),
    };
    assert!(
        out.status.success(),
        "ansible-playbook --syntax-check {} failed ({}):\n{}{}",
        playbook.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
