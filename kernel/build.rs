//! Build script of the kernel: passes the linker script, and embeds the user
//! programs that the runner built (see `ORRERY_USER_IMAGES`).

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let script = manifest_dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");

    // User programs travel in the kernel image. The runner builds them first
    // and names the directory; a kernel built on its own (clippy, say) embeds
    // none.
    println!("cargo:rerun-if-env-changed=ORRERY_USER_IMAGES");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("user_images.rs");
    let mut source = String::from("&[\n");
    if let Ok(list) = env::var("ORRERY_USER_IMAGES") {
        for entry in list.split(';').filter(|entry| !entry.is_empty()) {
            let (name, path) = entry.split_once('=').expect("ORRERY_USER_IMAGES entries are name=path");
            println!("cargo:rerun-if-changed={path}");
            source.push_str(&format!(
                "    crate::proc::loader::EmbeddedProgram {{ name: {name:?}, elf: {{ #[unsafe(link_section = \".user_images\")] static BYTES: crate::proc::loader::Aligned<[u8; {len}]> = crate::proc::loader::Aligned(*include_bytes!({path:?})); &BYTES.0 }} }},\n",
                len = fs::metadata(path).expect("user program image").len()
            ));
        }
    }
    source.push_str("]\n");
    fs::write(out, source).unwrap();
}
