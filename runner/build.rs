//! Builds the kernel (and the user programs it carries) for
//! `x86_64-unknown-none`, so that `cargo run` and `cargo test` in the host
//! workspace need nothing else. The kernel lives in its own workspace
//! (`kernel/`) with its own target directory, because a root `[build] target`
//! would break the host tests. Adds the target with rustup when it is missing.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TARGET: &str = "x86_64-unknown-none";

fn main() {
    let runner_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = runner_dir.parent().unwrap().to_path_buf();
    for watched in
        ["kernel/src", "kernel/Cargo.toml", "kernel/build.rs", "kernel/linker.ld", "kernel/.cargo", "crates", "user"]
    {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_target();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let user_images = build_user_programs(&cargo, &root);
    let kernel = build_kernel(&cargo, &root, &user_images);
    println!("cargo:rustc-env=ORRERY_KERNEL={}", kernel.display());
    println!("cargo:rustc-env=ORRERY_ROOT={}", root.display());
}

/// Adds the bare-metal target when the pinned toolchain lacks it; rustup will
/// not do so by itself here (`RUSTUP_AUTO_INSTALL=0`).
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    let toolchain = sysroot.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    println!(
        "cargo:warning=the {TARGET} target is missing: running `rustup target add {TARGET} --toolchain {toolchain}`"
    );
    let status =
        Command::new("rustup").args(["target", "add", TARGET, "--toolchain", &toolchain]).status().expect("run rustup");
    if !status.success() {
        panic!("`rustup target add {TARGET}` failed; install the target by hand and build again");
    }
}

/// A `cargo` command for the bare-metal workspaces, with the host build's
/// settings scrubbed so they do not leak into the kernel build.
fn bare_metal_cargo(cargo: &str, dir: &Path) -> Command {
    let mut command = Command::new(cargo);
    command.current_dir(dir);
    for variable in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        command.env_remove(variable);
    }
    command
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run cargo for {what}: {error}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building {what} failed (see the compiler output above)");
    }
}

/// Builds every program under `user/` and returns `name=path` pairs.
fn build_user_programs(cargo: &str, root: &Path) -> Vec<(String, PathBuf)> {
    let user = root.join("user");
    if !user.join("Cargo.toml").exists() {
        return Vec::new();
    }
    let mut command = bare_metal_cargo(cargo, &user);
    command.args(["build", "--release", "--target", TARGET]);
    run(command, "the user programs");
    let out_dir = user.join("target").join(TARGET).join("release");
    let mut programs = Vec::new();
    let programs_dir = user.join("programs");
    let mut names: Vec<String> = std::fs::read_dir(&programs_dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.path().join("Cargo.toml").exists())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        let path = out_dir.join(&name);
        assert!(path.exists(), "user program {name} was not built at {}", path.display());
        programs.push((name, path));
    }
    programs
}

fn build_kernel(cargo: &str, root: &Path, user_images: &[(String, PathBuf)]) -> PathBuf {
    let kernel = root.join("kernel");
    let list: Vec<String> = user_images.iter().map(|(name, path)| format!("{name}={}", path.display())).collect();
    let mut command = bare_metal_cargo(cargo, &kernel);
    command.args(["build", "--release"]).env("ORRERY_USER_IMAGES", list.join(";"));
    run(command, "the kernel");
    kernel.join("target").join(TARGET).join("release").join("orrery-kernel")
}
