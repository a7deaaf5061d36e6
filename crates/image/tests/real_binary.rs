//! `parse` on files a real toolchain produced: `tests/fixtures/hello.rs`
//! built by `rustc` for `x86_64-unknown-none` and linked by `rust-lld`
//! (commands in that file). The builder in `tests/common` encodes this
//! crate's own idea of ELF; these files check it against the linker's.
//!
//! The binaries are checked in rather than built by the test so that `cargo
//! test` needs no extra target or linker step.

use orrery_image::{ImageError, Limits, PAGE_BYTES, Region, SegmentKind, parse};

/// Linked with `-z norelro`: one data segment.
static HELLO: &[u8] = include_bytes!("fixtures/hello.elf");
/// Linked with `lld`'s defaults: `.got` gets a read-only-after-relocation
/// data segment of its own.
static HELLO_RELRO: &[u8] = include_bytes!("fixtures/hello-relro.elf");

#[test]
fn linked_program_is_parsed() {
    let image = parse(HELLO, &Limits::DEFAULT).unwrap_or_else(|error| panic!("rejected: {error}"));

    // Values from `readelf -lW hello.elf`. `lld` does not separate code by
    // default, so text and data start mid-page, at the file offset's page
    // position.
    assert_eq!(image.entry, 0x40_1312);
    assert_eq!(image.text.address, 0x40_1000);
    assert_eq!(image.text.bytes_offset, 0x310);
    assert_eq!(image.text.bytes.len(), 0x935);
    assert_eq!(image.text.bytes.as_ptr(), HELLO[0x310..].as_ptr());

    let rodata = image.rodata.expect("read-only data");
    assert_eq!((rodata.address, rodata.bytes_offset, rodata.bytes.len()), (0x40_0000, 0, 0x304));
    let greeting = b"orrery image fixture\n";
    assert!(rodata.bytes.windows(greeting.len()).any(|window| window == greeting));

    let data = image.data.expect("data");
    assert_eq!((data.address, data.bytes_offset, data.bytes.len()), (0x40_2000, 0xc48, 0x30));
    assert_eq!(data.memory_size, 0xc48 + 0x2030);
    assert!(data.bytes.windows(8).any(|window| window == 0x1234_5678_u64.to_le_bytes()));
    // The 8 KiB of `ZEROS` are `.bss`: zero tail, not file bytes.
    assert_eq!(data.zero_tail(), Some(Region { address: 0x40_2c78, size: 0x2000 }));

    // `-z stack-size=0x20000` becomes PT_GNU_STACK's p_memsz.
    assert_eq!(image.stack_size, 0x2_0000);
    assert_eq!(image.shared_page_count(), 2);
    assert_eq!(image.private_page_count(), 3 + 0x2_0000 / PAGE_BYTES);
}

#[test]
fn default_relro_layout_is_refused_as_a_second_data_segment() {
    assert_eq!(
        parse(HELLO_RELRO, &Limits::DEFAULT),
        Err(ImageError::Duplicate { kind: SegmentKind::Data, first: 3, second: 4 })
    );
}
