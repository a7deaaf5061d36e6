//! Property tests of `parse`: it never panics, whatever the bytes; whatever
//! it accepts satisfies the image invariants the supervisor relies on; and
//! every well-formed layout is accepted and described exactly.

mod common;

use common::*;
use orrery_image::{Image, Limits, PAGE_BYTES, SegmentKind, parse};
use proptest::prelude::*;

/// The facts the supervisor builds on, checked on any accepted image.
fn assert_invariants(image: &Image<'_>, file: &[u8], limits: &Limits) {
    let file_range = file.as_ptr_range();
    let mut pages = Vec::new();
    let mut image_bytes = 0_u64;
    for (_, segment) in image.segments() {
        assert_eq!(segment.address % PAGE_BYTES, 0, "segment not page aligned: {segment:?}");
        assert!(segment.bytes_offset < PAGE_BYTES);
        assert!(segment.bytes_offset + segment.bytes.len() as u64 <= segment.memory_size);
        assert!(segment.memory_size > 0);
        if !segment.bytes.is_empty() {
            assert!(file_range.contains(&segment.bytes.as_ptr()));
            assert!(segment.bytes.as_ptr_range().end <= file_range.end);
        }
        let region = segment.pages();
        assert!(region.address >= limits.lowest_address && region.end() <= limits.highest_address);
        pages.push(region);
        image_bytes += region.size;
    }
    for (position, first) in pages.iter().enumerate() {
        for second in &pages[position + 1..] {
            assert!(
                first.end() <= second.address || second.end() <= first.address,
                "{first:?} and {second:?} share pages"
            );
        }
    }
    assert!(image_bytes <= limits.max_image_bytes);
    let text_start = image.text.bytes_address();
    assert!((text_start..text_start + image.text.bytes.len() as u64).contains(&image.entry));
    assert_eq!(image.stack_size % PAGE_BYTES, 0);
    assert!(image.stack_size <= limits.max_stack_size);
}

fn check(file: &[u8], limits: &Limits) {
    if let Ok(image) = parse(file, limits) {
        assert_invariants(&image, file, limits);
    }
}

/// Values that tend to sit on the edges of the rules.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0_u64),
        Just(1),
        Just(PAGE_BYTES - 1),
        Just(PAGE_BYTES),
        Just(0x40_0000),
        Just(0x40_1000),
        Just(0x0000_7f00_0000_0000),
        Just(0xffff_8000_0000_0000),
        Just(u64::MAX),
        Just(u64::MAX - PAGE_BYTES),
        any::<u64>(),
        0_u64..0x2000,
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite one byte anywhere.
    Byte { position: usize, value: u8 },
    /// Overwrite a 2-, 4- or 8-byte little-endian value inside the headers.
    Field { position: usize, width: usize, value: u64 },
    /// Cut the file short.
    Truncate { length: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(position, value)| Mutation::Byte { position, value }),
        6 => (0_usize..64 + 56 * 6, prop_oneof![Just(2_usize), Just(4), Just(8)], interesting_u64())
            .prop_map(|(position, width, value)| Mutation::Field { position, width, value }),
        1 => any::<usize>().prop_map(|length| Mutation::Truncate { length }),
    ]
}

fn apply(file: &mut Vec<u8>, mutation: &Mutation) {
    if file.is_empty() {
        return;
    }
    match *mutation {
        Mutation::Byte { position, value } => {
            let length = file.len();
            file[position % length] = value;
        }
        Mutation::Field { position, width, value } => {
            let bytes = value.to_le_bytes();
            for (offset, byte) in bytes[..width].iter().enumerate() {
                if let Some(slot) = file.get_mut(position + offset) {
                    *slot = *byte;
                }
            }
        }
        Mutation::Truncate { length } => file.truncate(length % (file.len() + 1)),
    }
}

/// A valid file to mutate: the builder's typical one, a mid-page variant, or
/// the real linked binary.
fn seed_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(ElfBuilder::typical().build()),
        Just(ElfBuilder::text_only().build()),
        Just({
            let mut builder = ElfBuilder::typical();
            builder.programs[1].address += 0x310;
            builder.entry += 0x310;
            builder.build()
        }),
        Just(include_bytes!("fixtures/hello.elf").to_vec()),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::DEFAULT),
        1 => (interesting_u64(), interesting_u64(), interesting_u64(), interesting_u64(), interesting_u64()).prop_map(
            |(lowest_address, highest_address, max_image_bytes, default_stack_size, max_stack_size)| Limits {
                lowest_address,
                highest_address,
                max_image_bytes,
                default_stack_size,
                max_stack_size,
            }
        ),
    ]
}

/// One loadable segment of a generated well-formed layout.
#[derive(Clone, Debug)]
struct Placement {
    flags: u32,
    kind: SegmentKind,
    /// Page number relative to 0x40_0000; placements use distinct pages.
    page: u64,
    offset_in_page: u64,
    file_bytes: usize,
    zero_bytes: u64,
}

/// Up to three segments (text always), in distinct page ranges, in any order.
fn layout() -> impl Strategy<Value = (Vec<Placement>, u64, u64)> {
    let roles = prop_oneof![
        Just(vec![(4 | 1, SegmentKind::Text)]),
        Just(vec![(4 | 1, SegmentKind::Text), (4, SegmentKind::ReadOnlyData)]),
        Just(vec![(4 | 1, SegmentKind::Text), (4 | 2, SegmentKind::Data)]),
        Just(vec![(4, SegmentKind::ReadOnlyData), (4 | 1, SegmentKind::Text), (4 | 2, SegmentKind::Data)]),
        Just(vec![(4 | 2, SegmentKind::Data), (4 | 1, SegmentKind::Text), (4, SegmentKind::ReadOnlyData)]),
    ];
    let shapes = proptest::collection::vec((0_u64..PAGE_BYTES, 1_usize..3000, 0_u64..0x5000, 0_u64..4), 3);
    (roles, shapes, any::<prop::sample::Index>(), 0_u64..0x10_0000).prop_map(|(roles, shapes, entry_pick, stack)| {
        let mut next_page = 0;
        let placements: Vec<Placement> = roles
            .into_iter()
            .zip(shapes)
            .map(|((flags, kind), (offset_in_page, file_bytes, zero_bytes, gap_pages))| {
                let page = next_page + gap_pages;
                let end = offset_in_page + file_bytes as u64 + zero_bytes;
                next_page = page + end.div_ceil(PAGE_BYTES);
                Placement { flags, kind, page, offset_in_page, file_bytes, zero_bytes }
            })
            .collect();
        let text = placements.iter().find(|placement| placement.kind == SegmentKind::Text).unwrap();
        let entry = 0x40_0000 + text.page * PAGE_BYTES + text.offset_in_page + entry_pick.index(text.file_bytes) as u64;
        (placements, entry, stack)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024), limits in limits()) {
        check(&bytes, &limits);
    }

    /// Random bytes behind a valid ELF64 x86_64 executable's identification,
    /// so the program header rules are reached too.
    #[test]
    fn random_headers_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..1024),
        program_header_count in 0_u16..8,
        limits in limits(),
    ) {
        let mut file = ElfBuilder::text_only().build();
        file.truncate(64);
        put16(&mut file, 56, program_header_count);
        file.extend_from_slice(&tail);
        check(&file, &limits);
    }

    #[test]
    fn mutated_images_never_panic(
        mut file in seed_file(),
        mutations in proptest::collection::vec(mutation(), 1..8),
        limits in limits(),
    ) {
        for mutation in &mutations {
            apply(&mut file, mutation);
        }
        check(&file, &limits);
    }

    /// Every well-formed layout is accepted, and described exactly.
    #[test]
    fn well_formed_layouts_are_described_exactly((placements, entry, stack) in layout()) {
        let programs = placements
            .iter()
            .enumerate()
            .map(|(seed, placement)| {
                let mut program = Program::load(
                    placement.flags,
                    0x40_0000 + placement.page * PAGE_BYTES + placement.offset_in_page,
                    pattern(seed as u8 * 64, placement.file_bytes),
                );
                program.memory_bytes += placement.zero_bytes;
                program
            })
            .chain([Program::other(GNU_STACK, 4 | 2, stack)])
            .collect();
        let file = ElfBuilder { entry, programs }.build();
        let image = parse(&file, &Limits::DEFAULT).map_err(|error| TestCaseError::fail(error.to_string()))?;
        assert_invariants(&image, &file, &Limits::DEFAULT);

        prop_assert_eq!(image.entry, entry);
        prop_assert_eq!(image.segments().count(), placements.len());
        for (seed, placement) in placements.iter().enumerate() {
            let (_, segment) = image.segments().find(|(kind, _)| *kind == placement.kind).unwrap();
            prop_assert_eq!(segment.address, 0x40_0000 + placement.page * PAGE_BYTES);
            prop_assert_eq!(segment.bytes_offset, placement.offset_in_page);
            prop_assert_eq!(segment.bytes, &pattern(seed as u8 * 64, placement.file_bytes)[..]);
            prop_assert_eq!(
                segment.memory_size,
                placement.offset_in_page + placement.file_bytes as u64 + placement.zero_bytes
            );
        }
        let expected_stack = if stack == 0 { Limits::DEFAULT.default_stack_size } else { stack.next_multiple_of(PAGE_BYTES) };
        prop_assert_eq!(image.stack_size, expected_stack);
    }
}
