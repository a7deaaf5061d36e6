//! Files `parse` must accept, and exactly what it must say about them:
//! addresses, borrowed bytes, zero-filled tails, stack sizes, page counts.

mod common;

use common::*;
use orrery_image::{Image, Limits, PAGE_BYTES, Region, SegmentKind, parse};

fn parse_ok(file: &[u8]) -> Image<'_> {
    parse(file, &Limits::DEFAULT).unwrap_or_else(|error| panic!("rejected: {error}"))
}

#[test]
fn typical_image_is_described_exactly() {
    let builder = ElfBuilder::typical();
    let file = builder.build();
    let image = parse_ok(&file);

    assert_eq!(image.entry, ENTRY);
    assert_eq!(image.text.address, TEXT_ADDRESS);
    assert_eq!(image.text.bytes_offset, 0);
    assert_eq!(image.text.bytes, &pattern(0x90, 0x456)[..]);
    assert_eq!(image.text.memory_size, 0x456);

    let rodata = image.rodata.expect("read-only data");
    assert_eq!(rodata.address, RODATA_ADDRESS);
    assert_eq!(rodata.bytes, &pattern(0x10, 0x123)[..]);
    assert_eq!(rodata.memory_size, 0x123);
    assert_eq!(rodata.zero_tail(), None);

    let data = image.data.expect("data");
    assert_eq!(data.address, DATA_ADDRESS);
    assert_eq!(data.bytes, &pattern(0xd0, 0x40)[..]);
    assert_eq!(data.memory_size, 0x3000);
    assert_eq!(data.zero_tail(), Some(Region { address: DATA_ADDRESS + 0x40, size: 0x3000 - 0x40 }));

    // PT_GNU_STACK without a size: the default.
    assert_eq!(image.stack_size, Limits::DEFAULT.default_stack_size);
}

#[test]
fn segment_bytes_are_borrowed_from_the_file() {
    let file = ElfBuilder::typical().build();
    let image = parse_ok(&file);
    let file_range = file.as_ptr_range();
    for (_, segment) in image.segments() {
        assert!(file_range.contains(&segment.bytes.as_ptr()), "segment bytes must point into the file");
    }
    let text_offset = program(&file, 1, ProgramField::Offset) as usize;
    assert_eq!(image.text.bytes.as_ptr(), file[text_offset..].as_ptr());
}

#[test]
fn page_counts_split_shared_from_private() {
    let file = ElfBuilder::typical().build();
    let image = parse_ok(&file);
    assert_eq!(image.text.page_count(), 1);
    assert_eq!(image.rodata.unwrap().page_count(), 1);
    assert_eq!(image.data_page_count(), 3);
    assert_eq!(image.stack_page_count(), Limits::DEFAULT.default_stack_size / PAGE_BYTES);
    assert_eq!(image.shared_page_count(), 2);
    assert_eq!(image.private_page_count(), 3 + 16);
    assert_eq!(image.data.unwrap().pages(), Region { address: DATA_ADDRESS, size: 3 * PAGE_BYTES });
}

#[test]
fn segments_are_listed_with_their_roles() {
    let file = ElfBuilder::typical().build();
    let image = parse_ok(&file);
    let roles: Vec<(SegmentKind, u64)> = image.segments().map(|(kind, segment)| (kind, segment.address)).collect();
    assert_eq!(
        roles,
        [
            (SegmentKind::Text, TEXT_ADDRESS),
            (SegmentKind::ReadOnlyData, RODATA_ADDRESS),
            (SegmentKind::Data, DATA_ADDRESS)
        ]
    );
}

#[test]
fn text_alone_is_enough() {
    let file = ElfBuilder::text_only().build();
    let image = parse_ok(&file);
    assert_eq!(image.rodata, None);
    assert_eq!(image.data, None);
    assert_eq!(image.segments().count(), 1);
    assert_eq!(image.private_page_count(), image.stack_page_count());
}

/// `lld` without `-z separate-code` starts segments mid-page; the part of the
/// first page before the segment is reported as leading zeroes, not as the
/// neighbouring segment's file bytes.
#[test]
fn mid_page_segments_start_on_their_page_with_leading_zeroes() {
    let mut builder = ElfBuilder::typical();
    builder.programs[0].address = RODATA_ADDRESS + 0x40;
    builder.programs[1].address = TEXT_ADDRESS + 0x310;
    builder.programs[2].address = DATA_ADDRESS + 0xc48;
    builder.entry = TEXT_ADDRESS + 0x310;
    let file = builder.build();
    let image = parse_ok(&file);

    assert_eq!(image.text.address, TEXT_ADDRESS);
    assert_eq!(image.text.bytes_offset, 0x310);
    assert_eq!(image.text.bytes_address(), TEXT_ADDRESS + 0x310);
    assert_eq!(image.text.memory_size, 0x310 + 0x456);
    assert_eq!(image.text.bytes, &pattern(0x90, 0x456)[..]);

    let data = image.data.unwrap();
    assert_eq!(data.address, DATA_ADDRESS);
    assert_eq!(data.memory_size, 0xc48 + 0x3000);
    // 0xc48 + 0x3000 = 0x3c48: four pages.
    assert_eq!(data.page_count(), 4);
    assert_eq!(data.zero_tail(), Some(Region { address: DATA_ADDRESS + 0xc48 + 0x40, size: 0x3000 - 0x40 }));
}

#[test]
fn stack_size_comes_from_gnu_stack_rounded_up_to_pages() {
    let mut builder = ElfBuilder::typical();
    builder.programs[3].memory_bytes = 0x2_0001;
    let file = builder.build();
    assert_eq!(parse_ok(&file).stack_size, 0x2_1000);
}

#[test]
fn stack_size_defaults_without_gnu_stack() {
    let mut builder = ElfBuilder::typical();
    builder.programs.pop();
    let file = builder.build();
    let limits = Limits { default_stack_size: 0x5000, ..Limits::DEFAULT };
    assert_eq!(parse(&file, &limits).unwrap().stack_size, 0x5000);
}

#[test]
fn stack_of_exactly_the_limit_is_accepted() {
    let mut builder = ElfBuilder::typical();
    builder.programs[3].memory_bytes = Limits::DEFAULT.max_stack_size;
    let file = builder.build();
    assert_eq!(parse_ok(&file).stack_size, Limits::DEFAULT.max_stack_size);
}

#[test]
fn data_without_file_bytes_is_all_zero_tail() {
    let mut builder = ElfBuilder::typical();
    builder.programs[2].contents.clear();
    let file = builder.build();
    let data = parse_ok(&file).data.unwrap();
    assert!(data.bytes.is_empty());
    assert_eq!(data.zero_tail(), Some(Region { address: DATA_ADDRESS, size: 0x3000 }));
}

#[test]
fn headers_that_describe_no_memory_are_ignored() {
    let mut builder = ElfBuilder::typical();
    builder.programs.insert(0, Program::other(PROGRAM_HEADERS, R, 0x1c0));
    builder.programs.push(Program::other(NOTE, R, 0x20));
    builder.programs.push(Program::other(GNU_RELRO, R, 0x40));
    builder.programs.push(Program::other(0, 0, 0)); // PT_NULL
    builder.programs.push(Program::other(0x6474_e550, R, 0x10)); // PT_GNU_EH_FRAME
    let file = builder.build();
    let image = parse_ok(&file);
    assert_eq!(image.text.address, TEXT_ADDRESS);
    assert!(image.rodata.is_some() && image.data.is_some());
}

#[test]
fn empty_load_segments_are_skipped() {
    let mut builder = ElfBuilder::typical();
    // An empty read+write segment in front of the real data would be a
    // duplicate if it counted.
    builder.programs.insert(2, Program::load(R | W, 0x50_0000, Vec::new()));
    let file = builder.build();
    assert_eq!(parse_ok(&file).data.unwrap().address, DATA_ADDRESS);
}

#[test]
fn os_specific_flag_bits_do_not_change_the_role() {
    let mut file = ElfBuilder::typical().build();
    set_program(&mut file, 1, ProgramField::Flags, u64::from(R | X | 0x0ff0_0000));
    assert_eq!(parse_ok(&file).text.address, TEXT_ADDRESS);
}

#[test]
fn segments_may_touch_the_limits_exactly() {
    let limits = Limits { lowest_address: RODATA_ADDRESS, highest_address: DATA_ADDRESS + 0x3000, ..Limits::DEFAULT };
    let file = ElfBuilder::typical().build();
    assert!(parse(&file, &limits).is_ok());
}

#[test]
fn image_of_exactly_the_limit_is_accepted() {
    let limits = Limits { max_image_bytes: 5 * PAGE_BYTES, ..Limits::DEFAULT };
    let file = ElfBuilder::typical().build();
    assert!(parse(&file, &limits).is_ok());
}

#[test]
fn entry_may_be_the_first_or_last_text_byte() {
    for entry in [TEXT_ADDRESS, TEXT_ADDRESS + 0x455] {
        let builder = ElfBuilder { entry, ..ElfBuilder::typical() };
        let file = builder.build();
        assert_eq!(parse_ok(&file).entry, entry);
    }
}

#[test]
fn segment_order_in_the_table_does_not_matter() {
    let mut builder = ElfBuilder::typical();
    builder.programs.reverse();
    let file = builder.build();
    let image = parse_ok(&file);
    assert_eq!(image.text.address, TEXT_ADDRESS);
    assert_eq!(image.rodata.unwrap().address, RODATA_ADDRESS);
    assert_eq!(image.data.unwrap().address, DATA_ADDRESS);
}

#[test]
fn errors_display_the_offending_values() {
    let mut file = ElfBuilder::typical().build();
    set_program(&mut file, 2, ProgramField::Flags, u64::from(R | W | X));
    let error = parse(&file, &Limits::DEFAULT).unwrap_err();
    assert_eq!(error.to_string(), "program header 2: flags 0x7 make it both writable and executable");
}
