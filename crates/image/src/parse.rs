//! [`parse`]: the rules that turn a file's raw headers (`elf.rs`) into an
//! [`Image`], or into the first rule it breaks.
//!
//! The order of the checks is part of the contract only in one way: the file
//! header is checked before any program header, and program headers are
//! checked in table order before the rules that relate them to each other
//! (roles, overlap, entry point, sizes). Every size or address computed from
//! the file is computed with checked arithmetic, and every slice is taken with
//! `get`, so no input can make this module panic.

use crate::elf::{self, FileHeader, ProgramHeader};
use crate::{Image, ImageError, Limits, MAX_PROGRAM_HEADERS, PAGE_BYTES, Segment, SegmentError, SegmentKind};

/// Checks `elf` against the rules in `docs/image.md` and `limits`, and
/// describes the program it holds.
///
/// The returned [`Image`] borrows its segments' bytes from `elf`.
///
/// # Errors
///
/// The first rule the file breaks, as an [`ImageError`] that keeps the
/// offending value and, for a program header, its index.
pub fn parse<'a>(elf: &'a [u8], limits: &Limits) -> Result<Image<'a>, ImageError> {
    let header = check_file_header(elf)?;
    let table = program_header_table(elf, &header)?;

    let mut text: Option<Placed<'a>> = None;
    let mut rodata: Option<Placed<'a>> = None;
    let mut data: Option<Placed<'a>> = None;
    let mut stack: Option<(u16, u64)> = None;

    for (index, record) in (0..header.program_header_count).zip(table.chunks_exact(elf::PROGRAM_HEADER_BYTES)) {
        let segment_error = |error| ImageError::Segment { index, error };
        let program = ProgramHeader::decode(record).ok_or(ImageError::Truncated {
            needed_bytes: header.program_header_offset.saturating_add(table.len() as u64),
            file_bytes: elf.len() as u64,
        })?;
        match program.kind {
            elf::KIND_LOAD => {
                let Some(placed) = place(index, &program, elf, limits).map_err(segment_error)? else {
                    continue;
                };
                let role = match placed.kind {
                    SegmentKind::Text => &mut text,
                    SegmentKind::ReadOnlyData => &mut rodata,
                    // `place` never says Stack; grouping it here keeps the
                    // match total without a panic path.
                    SegmentKind::Data | SegmentKind::Stack => &mut data,
                };
                if let Some(first) = role {
                    return Err(ImageError::Duplicate { kind: placed.kind, first: first.index, second: index });
                }
                *role = Some(placed);
            }
            elf::KIND_GNU_STACK => {
                if program.flags & elf::FLAG_EXECUTE != 0 {
                    return Err(segment_error(SegmentError::ExecutableStack { flags: program.flags }));
                }
                if let Some((first, _)) = stack {
                    return Err(ImageError::Duplicate { kind: SegmentKind::Stack, first, second: index });
                }
                stack = Some((index, program.memory_bytes));
            }
            elf::KIND_DYNAMIC | elf::KIND_INTERPRETER | elf::KIND_THREAD_LOCAL | elf::KIND_SHARED_LIBRARY => {
                return Err(segment_error(SegmentError::Unsupported { kind: program.kind }));
            }
            // PT_NULL, PT_NOTE, PT_PHDR, PT_GNU_EH_FRAME, PT_GNU_RELRO,
            // PT_GNU_PROPERTY and anything OS- or processor-specific describe
            // bytes already inside the loadable segments, or nothing at all.
            // PT_GNU_RELRO asks a dynamic loader to write-protect data after
            // relocating it; a static program has nothing to relocate, so its
            // data simply stays writable.
            _ => {}
        }
    }

    let text = text.ok_or(ImageError::MissingText)?;
    check_disjoint([Some(&text), rodata.as_ref(), data.as_ref()])?;
    check_entry(header.entry, &text)?;
    check_image_size([Some(&text), rodata.as_ref(), data.as_ref()], limits)?;
    let stack_size = stack_size(stack.map(|(_, bytes)| bytes), limits)?;

    Ok(Image {
        entry: header.entry,
        text: text.segment,
        rodata: rodata.map(|placed| placed.segment),
        data: data.map(|placed| placed.segment),
        stack_size,
    })
}

/// A loadable segment with what the cross-segment rules need to know.
struct Placed<'a> {
    index: u16,
    kind: SegmentKind,
    segment: Segment<'a>,
    /// `p_vaddr`.
    start: u64,
    /// `p_vaddr + p_memsz`.
    end: u64,
    /// `end` rounded up to a page.
    page_end: u64,
    /// `p_vaddr + p_filesz`.
    file_end: u64,
}

/// Decodes the file header and checks that it describes a little-endian
/// ELF64 x86_64 executable.
fn check_file_header(elf: &[u8]) -> Result<FileHeader, ImageError> {
    // Check the magic on whatever is there first, so a short file that is not
    // ELF at all is reported as "not ELF", not as a truncated ELF file.
    let present = elf.len().min(elf::MAGIC.len());
    if elf.get(..present) != elf::MAGIC.get(..present) {
        let mut magic = [0; 4];
        for (slot, byte) in magic.iter_mut().zip(elf) {
            *slot = *byte;
        }
        return Err(ImageError::NotElf { magic });
    }
    let header = FileHeader::decode(elf)
        .ok_or(ImageError::Truncated { needed_bytes: elf::FILE_HEADER_BYTES as u64, file_bytes: elf.len() as u64 })?;
    if header.class != elf::CLASS_64 {
        return Err(ImageError::WrongClass { class: header.class });
    }
    if header.data_encoding != elf::DATA_LITTLE_ENDIAN {
        return Err(ImageError::WrongEndianness { encoding: header.data_encoding });
    }
    if u32::from(header.identification_version) != elf::VERSION_CURRENT {
        return Err(ImageError::WrongVersion { version: header.identification_version.into() });
    }
    if header.version != elf::VERSION_CURRENT {
        return Err(ImageError::WrongVersion { version: header.version });
    }
    if header.machine != elf::MACHINE_X86_64 {
        return Err(ImageError::WrongMachine { machine: header.machine });
    }
    if header.file_type != elf::TYPE_EXECUTABLE {
        return Err(ImageError::NotExecutable { file_type: header.file_type });
    }
    Ok(header)
}

/// The program header table's bytes, checked to be whole, in the file, and
/// not too long.
fn program_header_table<'a>(elf: &'a [u8], header: &FileHeader) -> Result<&'a [u8], ImageError> {
    let count = header.program_header_count;
    if count == 0 {
        // Nothing to read, whatever e_phoff and e_phentsize say; the missing
        // text segment is reported later.
        return Ok(&[]);
    }
    if usize::from(header.program_header_entry_bytes) != elf::PROGRAM_HEADER_BYTES {
        return Err(ImageError::ProgramHeaderSize { entry_bytes: header.program_header_entry_bytes });
    }
    if count > MAX_PROGRAM_HEADERS {
        return Err(ImageError::TooManyProgramHeaders { count, limit: MAX_PROGRAM_HEADERS });
    }
    let offset = header.program_header_offset;
    let overflow = ImageError::ProgramHeaderTableOverflow { offset, count };
    let table_bytes = u64::from(count) * elf::PROGRAM_HEADER_BYTES as u64;
    let end = offset.checked_add(table_bytes).ok_or(overflow)?;
    let truncated = ImageError::Truncated { needed_bytes: end, file_bytes: elf.len() as u64 };
    let start = usize::try_from(offset).map_err(|_| truncated)?;
    let end = usize::try_from(end).map_err(|_| truncated)?;
    elf.get(start..end).ok_or(truncated)
}

/// Checks one `PT_LOAD` header on its own and works out where its pages are.
/// `Ok(None)` for an empty segment (`p_memsz == 0`), which occupies nothing.
fn place<'a>(
    index: u16,
    program: &ProgramHeader,
    elf: &'a [u8],
    limits: &Limits,
) -> Result<Option<Placed<'a>>, SegmentError> {
    let flags = program.flags;
    let readable = flags & elf::FLAG_READ != 0;
    let writable = flags & elf::FLAG_WRITE != 0;
    let executable = flags & elf::FLAG_EXECUTE != 0;
    // Bits outside PF_R|PF_W|PF_X are OS- or processor-specific hints
    // (PF_MASKOS, PF_MASKPROC) that no permission depends on.
    let kind = match (readable, writable, executable) {
        (_, true, true) => return Err(SegmentError::WritableAndExecutable { flags }),
        (true, false, true) => SegmentKind::Text,
        (true, false, false) => SegmentKind::ReadOnlyData,
        (true, true, false) => SegmentKind::Data,
        // Execute-only and write-only pages do not exist on x86_64 without
        // protection keys, and a segment nobody may touch is a mistake.
        (false, _, _) => return Err(SegmentError::UnsupportedFlags { flags }),
    };

    let file_bytes = program.file_bytes;
    let memory_bytes = program.memory_bytes;
    if file_bytes > memory_bytes {
        return Err(SegmentError::FileSizeExceedsMemorySize { file_bytes, memory_bytes });
    }
    let beyond_file = SegmentError::BeyondFile { offset: program.offset, file_bytes, file_length: elf.len() as u64 };
    let file_end = program.offset.checked_add(file_bytes).ok_or(beyond_file)?;
    let bytes = usize::try_from(program.offset)
        .ok()
        .zip(usize::try_from(file_end).ok())
        .and_then(|(start, end)| elf.get(start..end))
        .ok_or(beyond_file)?;
    if memory_bytes == 0 {
        return Ok(None);
    }

    let start = program.virtual_address;
    let overflow = SegmentError::AddressOverflow { address: start, memory_bytes };
    let end = start.checked_add(memory_bytes).ok_or(overflow)?;
    let page_end = end.checked_next_multiple_of(PAGE_BYTES).ok_or(overflow)?;
    let page_start = start - start % PAGE_BYTES;
    if page_start < limits.lowest_address || page_end > limits.highest_address {
        return Err(SegmentError::OutsideAddressRange { start: page_start, end: page_end });
    }

    Ok(Some(Placed {
        index,
        kind,
        segment: Segment {
            address: page_start,
            bytes_offset: start - page_start,
            bytes,
            memory_size: end - page_start,
        },
        start,
        end,
        page_end,
        // Cannot overflow: file_bytes <= memory_bytes and start + memory_bytes did not.
        file_end: start + file_bytes,
    }))
}

/// Checks that no two segments overlap or share a page: every page of the
/// image then has exactly one role and one set of permissions.
fn check_disjoint(segments: [Option<&Placed<'_>>; 3]) -> Result<(), ImageError> {
    let present = || segments.iter().flatten().copied();
    for (position, first) in present().enumerate() {
        for second in present().skip(position + 1) {
            let (lower, upper) = if first.start <= second.start { (first, second) } else { (second, first) };
            if lower.end > upper.start {
                return Err(ImageError::Overlap { first: lower.index, second: upper.index });
            }
            if lower.page_end > upper.segment.address {
                return Err(ImageError::SharedPage {
                    first: lower.index,
                    second: upper.index,
                    page_address: upper.segment.address,
                });
            }
        }
    }
    Ok(())
}

/// Checks that the entry point is an instruction the file provides: inside
/// the text segment's file bytes, not in its zero-filled tail.
fn check_entry(entry: u64, text: &Placed<'_>) -> Result<(), ImageError> {
    if (text.start..text.file_end).contains(&entry) {
        Ok(())
    } else {
        Err(ImageError::EntryOutsideText { entry, text_start: text.start, text_end: text.file_end })
    }
}

/// Checks the total of the segments' whole pages against the limit.
fn check_image_size(segments: [Option<&Placed<'_>>; 3], limits: &Limits) -> Result<(), ImageError> {
    // Saturating: a sum past u64::MAX is over any limit anyway.
    let image_bytes = segments
        .iter()
        .flatten()
        .map(|placed| placed.page_end - placed.segment.address)
        .fold(0_u64, u64::saturating_add);
    if image_bytes > limits.max_image_bytes {
        return Err(ImageError::ImageTooLarge { image_bytes, limit_bytes: limits.max_image_bytes });
    }
    Ok(())
}

/// The stack size, in whole pages: `PT_GNU_STACK`'s `p_memsz` when the file
/// gives a non-zero one, else the default; either way within the limit.
fn stack_size(requested: Option<u64>, limits: &Limits) -> Result<u64, ImageError> {
    let requested_bytes = requested.filter(|&bytes| bytes != 0).unwrap_or(limits.default_stack_size);
    let too_large = |requested_bytes| ImageError::StackTooLarge { requested_bytes, limit_bytes: limits.max_stack_size };
    let rounded = requested_bytes.checked_next_multiple_of(PAGE_BYTES).ok_or(too_large(requested_bytes))?;
    if rounded > limits.max_stack_size {
        return Err(too_large(rounded));
    }
    Ok(rounded)
}
