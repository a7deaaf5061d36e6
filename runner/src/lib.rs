//! The Orrery runner: boots the kernel in QEMU and reads what it says.
//!
//! `cargo run` uses it through `main.rs`; the integration tests in `tests/`
//! use it to boot the kernel in test mode and check its serial output. The
//! kernel image is built by this crate's build script and its path baked in
//! as `ORRERY_KERNEL`.

pub mod qemu;
pub mod report;
pub mod trace;

pub use qemu::{Accel, Machine, Outcome, QemuConfig, RunError};
pub use report::{TestOutcome, TestReport};

/// Path of the kernel image built for this runner.
pub const KERNEL_IMAGE: &str = env!("ORRERY_KERNEL");
