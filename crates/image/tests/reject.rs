//! Files `parse` must refuse, one test per rule, each asserting the exact
//! error and the values it keeps.
//!
//! Every case starts from the valid `ElfBuilder::typical()` file (program
//! headers: 0 read-only data, 1 text, 2 data, 3 `PT_GNU_STACK`) and breaks one
//! thing, so the error can only come from that one thing.

mod common;

use common::*;
use orrery_image::{ImageError, Limits, MAX_PROGRAM_HEADERS, PAGE_BYTES, SegmentError, SegmentKind, parse};

fn reject(file: &[u8]) -> ImageError {
    reject_with(file, &Limits::DEFAULT)
}

fn reject_with(file: &[u8], limits: &Limits) -> ImageError {
    match parse(file, limits) {
        Ok(image) => panic!("accepted: {image:?}"),
        Err(error) => error,
    }
}

fn typical() -> Vec<u8> {
    ElfBuilder::typical().build()
}

fn segment(index: u16, error: SegmentError) -> ImageError {
    ImageError::Segment { index, error }
}

// ---- the file header ----

#[test]
fn empty_file_is_truncated() {
    assert_eq!(reject(&[]), ImageError::Truncated { needed_bytes: 64, file_bytes: 0 });
}

#[test]
fn wrong_magic_is_not_elf() {
    let mut file = typical();
    file[..4].copy_from_slice(b"MZ\x90\x00");
    assert_eq!(reject(&file), ImageError::NotElf { magic: *b"MZ\x90\x00" });
    assert_eq!(reject(b"#!"), ImageError::NotElf { magic: [b'#', b'!', 0, 0] });
}

#[test]
fn file_shorter_than_its_header_is_truncated() {
    let file = typical();
    assert_eq!(reject(&file[..4]), ImageError::Truncated { needed_bytes: 64, file_bytes: 4 });
    assert_eq!(reject(&file[..63]), ImageError::Truncated { needed_bytes: 64, file_bytes: 63 });
}

#[test]
fn thirty_two_bit_class_is_refused() {
    let mut file = typical();
    file[4] = 1;
    assert_eq!(reject(&file), ImageError::WrongClass { class: 1 });
}

#[test]
fn big_endian_is_refused() {
    let mut file = typical();
    file[5] = 2;
    assert_eq!(reject(&file), ImageError::WrongEndianness { encoding: 2 });
}

#[test]
fn unknown_versions_are_refused() {
    let mut file = typical();
    file[6] = 0;
    assert_eq!(reject(&file), ImageError::WrongVersion { version: 0 });
    let mut file = typical();
    put32(&mut file, 20, 2);
    assert_eq!(reject(&file), ImageError::WrongVersion { version: 2 });
}

#[test]
fn other_machines_are_refused() {
    let mut file = typical();
    put16(&mut file, 18, 183); // EM_AARCH64
    assert_eq!(reject(&file), ImageError::WrongMachine { machine: 183 });
}

#[test]
fn shared_objects_and_pie_are_refused() {
    for file_type in [0_u16, 1, 3, 4] {
        let mut file = typical();
        put16(&mut file, 16, file_type);
        assert_eq!(reject(&file), ImageError::NotExecutable { file_type });
    }
}

#[test]
fn program_header_size_must_be_56() {
    let mut file = typical();
    put16(&mut file, 54, 64);
    assert_eq!(reject(&file), ImageError::ProgramHeaderSize { entry_bytes: 64 });
}

#[test]
fn too_many_program_headers_are_refused() {
    let mut builder = ElfBuilder::typical();
    while builder.programs.len() <= usize::from(MAX_PROGRAM_HEADERS) {
        builder.programs.push(Program::other(NOTE, R, 0));
    }
    let file = builder.build();
    assert_eq!(
        reject(&file),
        ImageError::TooManyProgramHeaders { count: MAX_PROGRAM_HEADERS + 1, limit: MAX_PROGRAM_HEADERS }
    );
    let mut file = typical();
    put16(&mut file, 56, 0xffff); // PN_XNUM
    assert_eq!(reject(&file), ImageError::TooManyProgramHeaders { count: 0xffff, limit: MAX_PROGRAM_HEADERS });
}

#[test]
fn program_header_table_past_the_end_is_truncated() {
    let file = typical();
    let cut = &file[..64 + 56 * 3];
    assert_eq!(reject(cut), ImageError::Truncated { needed_bytes: 64 + 56 * 4, file_bytes: 64 + 56 * 3 });
    let mut file = typical();
    put64(&mut file, 32, 1 << 40);
    assert_eq!(
        reject(&file),
        ImageError::Truncated { needed_bytes: (1 << 40) + 56 * 4, file_bytes: file.len() as u64 }
    );
}

#[test]
fn program_header_table_offset_overflow_is_refused() {
    let mut file = typical();
    put64(&mut file, 32, u64::MAX - 10);
    assert_eq!(reject(&file), ImageError::ProgramHeaderTableOverflow { offset: u64::MAX - 10, count: 4 });
}

#[test]
fn no_program_headers_means_no_text() {
    let mut file = typical();
    put16(&mut file, 56, 0);
    assert_eq!(reject(&file), ImageError::MissingText);
}

// ---- one program header ----

#[test]
fn writable_and_executable_load_is_refused() {
    for flags in [R | W | X, W | X] {
        let mut file = typical();
        set_program(&mut file, 2, ProgramField::Flags, flags.into());
        assert_eq!(reject(&file), segment(2, SegmentError::WritableAndExecutable { flags }));
    }
}

#[test]
fn writable_and_executable_is_refused_even_when_empty() {
    let mut builder = ElfBuilder::typical();
    builder.programs.push(Program::load(R | W | X, 0x60_0000, Vec::new()));
    let file = builder.build();
    assert_eq!(reject(&file), segment(4, SegmentError::WritableAndExecutable { flags: R | W | X }));
}

#[test]
fn permissions_without_read_are_refused() {
    for flags in [0, X, W] {
        let mut file = typical();
        set_program(&mut file, 1, ProgramField::Flags, flags.into());
        assert_eq!(reject(&file), segment(1, SegmentError::UnsupportedFlags { flags }));
    }
}

#[test]
fn executable_stack_is_refused() {
    let mut file = typical();
    set_program(&mut file, 3, ProgramField::Flags, (R | W | X).into());
    assert_eq!(reject(&file), segment(3, SegmentError::ExecutableStack { flags: R | W | X }));
}

#[test]
fn dynamic_linking_and_thread_locals_are_unsupported() {
    for kind in [INTERPRETER, DYNAMIC, THREAD_LOCAL, SHARED_LIBRARY] {
        let mut builder = ElfBuilder::typical();
        builder.programs.insert(1, Program::other(kind, R, 0x10));
        let file = builder.build();
        assert_eq!(reject(&file), segment(1, SegmentError::Unsupported { kind }));
    }
}

#[test]
fn file_size_larger_than_memory_size_is_refused() {
    let mut file = typical();
    set_program(&mut file, 0, ProgramField::MemoryBytes, 0x100);
    assert_eq!(
        reject(&file),
        segment(0, SegmentError::FileSizeExceedsMemorySize { file_bytes: 0x123, memory_bytes: 0x100 })
    );
}

#[test]
fn segment_bytes_past_the_end_of_the_file_are_refused() {
    let file = typical();
    let length = file.len() as u64;
    // The data segment's bytes are the last thing in the file: cut one off.
    let cut = &file[..file.len() - 1];
    let offset = program(&file, 2, ProgramField::Offset);
    assert_eq!(reject(cut), segment(2, SegmentError::BeyondFile { offset, file_bytes: 0x40, file_length: length - 1 }));

    let mut file = typical();
    set_program(&mut file, 1, ProgramField::Offset, u64::MAX - 4);
    assert_eq!(
        reject(&file),
        segment(1, SegmentError::BeyondFile { offset: u64::MAX - 4, file_bytes: 0x456, file_length: length })
    );
}

#[test]
fn segment_end_overflow_is_refused() {
    let mut file = typical();
    set_program(&mut file, 2, ProgramField::Address, u64::MAX - 0x1000);
    assert_eq!(
        reject(&file),
        segment(2, SegmentError::AddressOverflow { address: u64::MAX - 0x1000, memory_bytes: 0x3000 })
    );
    // The end itself fits, but rounding it up to a page does not.
    let mut file = typical();
    set_program(&mut file, 2, ProgramField::Address, u64::MAX - 0x3000);
    assert_eq!(
        reject(&file),
        segment(2, SegmentError::AddressOverflow { address: u64::MAX - 0x3000, memory_bytes: 0x3000 })
    );
}

#[test]
fn segments_below_the_lowest_address_are_refused() {
    let limits = Limits { lowest_address: RODATA_ADDRESS + PAGE_BYTES, ..Limits::DEFAULT };
    assert_eq!(
        reject_with(&typical(), &limits),
        segment(0, SegmentError::OutsideAddressRange { start: RODATA_ADDRESS, end: RODATA_ADDRESS + PAGE_BYTES })
    );
    // The null page, with the default limits.
    let mut file = typical();
    set_program(&mut file, 0, ProgramField::Address, 0x10);
    assert_eq!(reject(&file), segment(0, SegmentError::OutsideAddressRange { start: 0, end: PAGE_BYTES }));
}

#[test]
fn segments_reaching_past_the_highest_address_are_refused() {
    // The data's last page ends at DATA_ADDRESS + 0x3000; one byte less is too little.
    let limits = Limits { highest_address: DATA_ADDRESS + 0x3000 - 1, ..Limits::DEFAULT };
    assert_eq!(
        reject_with(&typical(), &limits),
        segment(2, SegmentError::OutsideAddressRange { start: DATA_ADDRESS, end: DATA_ADDRESS + 0x3000 })
    );
    // Kernel half.
    let mut file = typical();
    set_program(&mut file, 1, ProgramField::Address, 0xffff_8000_0000_0000);
    assert_eq!(
        reject(&file),
        segment(
            1,
            SegmentError::OutsideAddressRange { start: 0xffff_8000_0000_0000, end: 0xffff_8000_0000_0000 + PAGE_BYTES }
        )
    );
}

// ---- program headers together ----

#[test]
fn missing_text_is_refused() {
    let mut builder = ElfBuilder::typical();
    builder.programs.remove(1);
    let file = builder.build();
    assert_eq!(reject(&file), ImageError::MissingText);
}

#[test]
fn empty_text_does_not_count_as_text() {
    let mut builder = ElfBuilder::typical();
    builder.programs[1].contents.clear();
    builder.programs[1].memory_bytes = 0;
    let file = builder.build();
    assert_eq!(reject(&file), ImageError::MissingText);
}

#[test]
fn two_segments_of_one_role_are_refused() {
    let cases = [
        (R | X, SegmentKind::Text, 1),
        (R, SegmentKind::ReadOnlyData, 0),
        // What `lld` makes of `.got` without `-z norelro`: a second data segment.
        (R | W, SegmentKind::Data, 2),
    ];
    for (flags, kind, first) in cases {
        let mut builder = ElfBuilder::typical();
        builder.programs.push(Program::load(flags, 0x50_0000, pattern(0, 8)));
        let file = builder.build();
        assert_eq!(reject(&file), ImageError::Duplicate { kind, first, second: 4 });
    }
}

#[test]
fn two_gnu_stack_headers_are_refused() {
    let mut builder = ElfBuilder::typical();
    builder.programs.push(Program::other(GNU_STACK, R | W, 0x1000));
    let file = builder.build();
    assert_eq!(reject(&file), ImageError::Duplicate { kind: SegmentKind::Stack, first: 3, second: 4 });
}

#[test]
fn overlapping_segments_are_refused() {
    // Data's memory (0x3000 bytes from DATA_ADDRESS) runs into a segment
    // moved to its last page.
    let mut file = typical();
    set_program(&mut file, 0, ProgramField::Address, DATA_ADDRESS + 0x2f00);
    assert_eq!(reject(&file), ImageError::Overlap { first: 2, second: 0 });
    // Same start address.
    let mut file = typical();
    set_program(&mut file, 1, ProgramField::Address, RODATA_ADDRESS);
    set_program(&mut file, 1, ProgramField::Flags, u64::from(R | X));
    assert!(matches!(reject(&file), ImageError::Overlap { .. }));
}

#[test]
fn segments_sharing_a_page_are_refused() {
    // Text moved to start right after read-only data ends, on the same page.
    let mut builder = ElfBuilder::typical();
    builder.programs[1].address = RODATA_ADDRESS + 0x200;
    builder.entry = RODATA_ADDRESS + 0x200;
    let file = builder.build();
    assert_eq!(reject(&file), ImageError::SharedPage { first: 0, second: 1, page_address: RODATA_ADDRESS });
}

#[test]
fn entry_outside_text_is_refused() {
    let text_end = TEXT_ADDRESS + 0x456;
    for entry in [0, RODATA_ADDRESS, TEXT_ADDRESS - 1, text_end, DATA_ADDRESS + 0x10] {
        let builder = ElfBuilder { entry, ..ElfBuilder::typical() };
        let file = builder.build();
        assert_eq!(reject(&file), ImageError::EntryOutsideText { entry, text_start: TEXT_ADDRESS, text_end });
    }
}

#[test]
fn entry_in_texts_zero_tail_is_refused() {
    let mut builder = ElfBuilder::typical();
    builder.programs[1].memory_bytes = 0x800;
    builder.entry = TEXT_ADDRESS + 0x500;
    let file = builder.build();
    assert_eq!(
        reject(&file),
        ImageError::EntryOutsideText {
            entry: TEXT_ADDRESS + 0x500,
            text_start: TEXT_ADDRESS,
            text_end: TEXT_ADDRESS + 0x456
        }
    );
}

#[test]
fn stack_above_the_limit_is_refused() {
    let mut builder = ElfBuilder::typical();
    builder.programs[3].memory_bytes = Limits::DEFAULT.max_stack_size + 1;
    let file = builder.build();
    assert_eq!(
        reject(&file),
        ImageError::StackTooLarge {
            requested_bytes: Limits::DEFAULT.max_stack_size + PAGE_BYTES,
            limit_bytes: Limits::DEFAULT.max_stack_size
        }
    );
    let mut builder = ElfBuilder::typical();
    builder.programs[3].memory_bytes = u64::MAX;
    let file = builder.build();
    assert_eq!(
        reject(&file),
        ImageError::StackTooLarge { requested_bytes: u64::MAX, limit_bytes: Limits::DEFAULT.max_stack_size }
    );
}

#[test]
fn default_stack_above_the_limit_is_refused() {
    let limits = Limits { default_stack_size: 0x3000, max_stack_size: 0x2000, ..Limits::DEFAULT };
    assert_eq!(
        reject_with(&typical(), &limits),
        ImageError::StackTooLarge { requested_bytes: 0x3000, limit_bytes: 0x2000 }
    );
}

#[test]
fn image_above_the_limit_is_refused() {
    let limits = Limits { max_image_bytes: 5 * PAGE_BYTES - 1, ..Limits::DEFAULT };
    assert_eq!(
        reject_with(&typical(), &limits),
        ImageError::ImageTooLarge { image_bytes: 5 * PAGE_BYTES, limit_bytes: 5 * PAGE_BYTES - 1 }
    );
}
