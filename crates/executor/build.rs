//! Build script of `orrery-executor`: declares the `loom` cfg.
//!
//! The loom models (`tests/loom.rs`) are compiled with `RUSTFLAGS="--cfg loom"`.
//! Without this declaration every `#[cfg(loom)]` would trip the
//! `unexpected_cfgs` lint; the usual place for it, a `[lints.rust]` table, cannot
//! sit next to `[lints] workspace = true`.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
