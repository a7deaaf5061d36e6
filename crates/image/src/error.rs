//! Why an ELF file was refused: [`ImageError`] for the file as a whole and
//! [`SegmentError`] for one program header, which [`ImageError::Segment`]
//! wraps together with the header's index.
//!
//! Every variant keeps the offending value (and, where there is one, the index
//! of the program header it came from), so a boot log can say exactly what is
//! wrong with which program without the loader re-parsing anything.

use core::fmt;

/// Which part of the image a loadable segment would become.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// Readable and executable: shared by every process of the program.
    Text,
    /// Read-only: shared by every process of the program.
    ReadOnlyData,
    /// Readable and writable: private to each process.
    Data,
    /// The `PT_GNU_STACK` header, which describes the private stack.
    Stack,
}

/// Why a file is not an acceptable program image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The file ends before the ELF header or the program header table does.
    Truncated {
        /// Bytes the header or table needs, counted from the start of the file.
        needed_bytes: u64,
        /// Bytes the file has.
        file_bytes: u64,
    },
    /// The file does not start with `\x7fELF`.
    NotElf {
        /// The first four bytes found.
        magic: [u8; 4],
    },
    /// `e_ident[EI_CLASS]` is not `ELFCLASS64`.
    WrongClass {
        /// The class byte found (1 is 32-bit).
        class: u8,
    },
    /// `e_ident[EI_DATA]` is not `ELFDATA2LSB`.
    WrongEndianness {
        /// The data-encoding byte found (2 is big-endian).
        encoding: u8,
    },
    /// `e_ident[EI_VERSION]` or `e_version` is not `EV_CURRENT`.
    WrongVersion {
        /// The version found.
        version: u32,
    },
    /// `e_machine` is not `EM_X86_64`.
    WrongMachine {
        /// The machine found.
        machine: u16,
    },
    /// `e_type` is not `ET_EXEC`: relocatable objects, shared objects and
    /// position-independent executables (`ET_DYN`) are refused.
    NotExecutable {
        /// The file type found (3 is `ET_DYN`).
        file_type: u16,
    },
    /// `e_phentsize` is not the 56 bytes of an ELF64 program header.
    ProgramHeaderSize {
        /// The entry size found.
        entry_bytes: u16,
    },
    /// More program headers than [`crate::MAX_PROGRAM_HEADERS`].
    TooManyProgramHeaders {
        /// `e_phnum` as found.
        count: u16,
        /// The limit.
        limit: u16,
    },
    /// The program header table's position overflows 64 bits.
    ProgramHeaderTableOverflow {
        /// `e_phoff` as found.
        offset: u64,
        /// `e_phnum` as found.
        count: u16,
    },
    /// One program header is wrong.
    Segment {
        /// Index of the header in the program header table.
        index: u16,
        /// What is wrong with it.
        error: SegmentError,
    },
    /// No non-empty readable and executable `PT_LOAD` segment.
    MissingText,
    /// Two program headers claim the same role.
    Duplicate {
        /// The role.
        kind: SegmentKind,
        /// Index of the first header with that role.
        first: u16,
        /// Index of the second.
        second: u16,
    },
    /// Two loadable segments overlap in memory.
    Overlap {
        /// Index of the lower segment's header.
        first: u16,
        /// Index of the other segment's header.
        second: u16,
    },
    /// Two loadable segments do not overlap but touch the same page, which
    /// could then not have one set of permissions.
    SharedPage {
        /// Index of the lower segment's header.
        first: u16,
        /// Index of the other segment's header.
        second: u16,
        /// Address of the page both touch.
        page_address: u64,
    },
    /// The entry point is not inside the text segment's file bytes.
    EntryOutsideText {
        /// `e_entry`.
        entry: u64,
        /// First address of the text segment's bytes (`p_vaddr`).
        text_start: u64,
        /// One past the last (`p_vaddr + p_filesz`).
        text_end: u64,
    },
    /// The requested stack (or, without a request, the default) is larger
    /// than [`crate::Limits::max_stack_size`].
    StackTooLarge {
        /// Requested bytes, rounded up to whole pages.
        requested_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The loadable segments together need more memory than
    /// [`crate::Limits::max_image_bytes`].
    ImageTooLarge {
        /// Whole pages of text, read-only data and data, in bytes.
        image_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
}

/// What is wrong with one program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// The segment would be both writable and executable.
    WritableAndExecutable {
        /// `p_flags` as found.
        flags: u32,
    },
    /// A `PT_LOAD` whose permissions are none of read+execute, read, or
    /// read+write (for example write-only, execute-only, or none at all).
    UnsupportedFlags {
        /// `p_flags` as found.
        flags: u32,
    },
    /// `PT_GNU_STACK` asks for an executable stack.
    ExecutableStack {
        /// `p_flags` as found.
        flags: u32,
    },
    /// A segment kind this loader does not implement: `PT_INTERP` and
    /// `PT_DYNAMIC` (dynamic linking), `PT_TLS` (thread-local storage) and
    /// `PT_SHLIB`.
    Unsupported {
        /// `p_type` as found.
        kind: u32,
    },
    /// `p_filesz` is larger than `p_memsz`.
    FileSizeExceedsMemorySize {
        /// `p_filesz`.
        file_bytes: u64,
        /// `p_memsz`.
        memory_bytes: u64,
    },
    /// The segment's file bytes run past the end of the file (or their end
    /// overflows 64 bits).
    BeyondFile {
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        file_bytes: u64,
        /// Bytes the file has.
        file_length: u64,
    },
    /// The segment's end, rounded up to a page, overflows 64 bits.
    AddressOverflow {
        /// `p_vaddr`.
        address: u64,
        /// `p_memsz`.
        memory_bytes: u64,
    },
    /// The segment's pages are not all inside
    /// [`crate::Limits::lowest_address`]..[`crate::Limits::highest_address`].
    OutsideAddressRange {
        /// First address of the segment's first page.
        start: u64,
        /// One past the last address of its last page.
        end: u64,
    },
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Text => "text (read+execute)",
            Self::ReadOnlyData => "read-only data",
            Self::Data => "data (read+write)",
            Self::Stack => "PT_GNU_STACK",
        })
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed_bytes, file_bytes } => {
                write!(formatter, "file of {file_bytes} bytes is truncated: its headers need {needed_bytes}")
            }
            Self::NotElf { magic } => write!(formatter, "not an ELF file (magic {magic:02x?})"),
            Self::WrongClass { class } => write!(formatter, "ELF class {class} is not ELFCLASS64"),
            Self::WrongEndianness { encoding } => {
                write!(formatter, "ELF data encoding {encoding} is not little endian")
            }
            Self::WrongVersion { version } => write!(formatter, "ELF version {version} is not 1"),
            Self::WrongMachine { machine } => write!(formatter, "machine {machine} is not EM_X86_64 (62)"),
            Self::NotExecutable { file_type } => {
                write!(formatter, "ELF type {file_type} is not ET_EXEC (a static, non-PIE executable)")
            }
            Self::ProgramHeaderSize { entry_bytes } => {
                write!(formatter, "program header entries of {entry_bytes} bytes, not 56")
            }
            Self::TooManyProgramHeaders { count, limit } => {
                write!(formatter, "{count} program headers, more than the limit of {limit}")
            }
            Self::ProgramHeaderTableOverflow { offset, count } => {
                write!(formatter, "program header table of {count} entries at offset {offset:#x} overflows")
            }
            Self::Segment { index, error } => write!(formatter, "program header {index}: {error}"),
            Self::MissingText => formatter.write_str("no non-empty read+execute PT_LOAD segment"),
            Self::Duplicate { kind, first, second } => {
                write!(formatter, "program headers {first} and {second} are both {kind}")
            }
            Self::Overlap { first, second } => write!(formatter, "segments {first} and {second} overlap"),
            Self::SharedPage { first, second, page_address } => {
                write!(formatter, "segments {first} and {second} share the page at {page_address:#x}")
            }
            Self::EntryOutsideText { entry, text_start, text_end } => {
                write!(formatter, "entry point {entry:#x} is outside text {text_start:#x}..{text_end:#x}")
            }
            Self::StackTooLarge { requested_bytes, limit_bytes } => {
                write!(formatter, "stack of {requested_bytes} bytes exceeds the limit of {limit_bytes}")
            }
            Self::ImageTooLarge { image_bytes, limit_bytes } => {
                write!(formatter, "segments need {image_bytes} bytes, more than the limit of {limit_bytes}")
            }
        }
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::WritableAndExecutable { flags } => {
                write!(formatter, "flags {flags:#x} make it both writable and executable")
            }
            Self::UnsupportedFlags { flags } => {
                write!(formatter, "flags {flags:#x} are not read+execute, read, or read+write")
            }
            Self::ExecutableStack { flags } => write!(formatter, "flags {flags:#x} ask for an executable stack"),
            Self::Unsupported { kind } => {
                let name = match kind {
                    crate::elf::KIND_DYNAMIC => "PT_DYNAMIC (dynamic linking)",
                    crate::elf::KIND_INTERPRETER => "PT_INTERP (dynamic linking)",
                    crate::elf::KIND_THREAD_LOCAL => "PT_TLS (thread-local storage)",
                    crate::elf::KIND_SHARED_LIBRARY => "PT_SHLIB",
                    _ => "segment kind",
                };
                write!(formatter, "unsupported {name} {kind:#x}")
            }
            Self::FileSizeExceedsMemorySize { file_bytes, memory_bytes } => {
                write!(formatter, "p_filesz {file_bytes:#x} exceeds p_memsz {memory_bytes:#x}")
            }
            Self::BeyondFile { offset, file_bytes, file_length } => {
                write!(formatter, "bytes {offset:#x}+{file_bytes:#x} run past the end of the {file_length}-byte file")
            }
            Self::AddressOverflow { address, memory_bytes } => {
                write!(formatter, "{address:#x}+{memory_bytes:#x} overflows the address space")
            }
            Self::OutsideAddressRange { start, end } => {
                write!(formatter, "pages {start:#x}..{end:#x} are outside the allowed address range")
            }
        }
    }
}

impl core::error::Error for ImageError {}
impl core::error::Error for SegmentError {}
