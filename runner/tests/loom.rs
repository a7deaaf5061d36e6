//! Runs the loom models of the lock-free crates (`orrery-mailbox`'s slot
//! protocol, `orrery-lifetime`'s retain/hold word, `orrery-executor`'s task
//! states and notification). The models need those
//! crates built with `--cfg loom`, which swaps their atomics for loom's, so
//! `cargo test` runs them through a nested cargo with its own target
//! directory (`target/loom`), leaving the normal build untouched.

use std::{path::Path, process::Command};

#[test]
fn loom_models_of_the_lock_free_crates_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the runner lives in the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", root.join("target/loom"))
        .args([
            "test",
            "--release",
            "-p",
            "orrery-mailbox",
            "-p",
            "orrery-lifetime",
            "-p",
            "orrery-executor",
            "--test",
            "loom",
        ])
        .output()
        .expect("cannot run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loom models failed ({})\n{stdout}\n{stderr}", output.status);
    // Every crate's models ran (a filter or cfg mistake would run none).
    let suites = stdout.matches("test result: ok.").count();
    assert_eq!(suites, 3, "expected three loom suites\n{stdout}");
    assert!(!stdout.contains("running 0 tests"), "a loom suite ran no models\n{stdout}");
}
