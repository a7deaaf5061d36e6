//! Program images for Orrery: a static x86_64 ELF64 executable, checked and
//! reduced to the few regions a process is built from.
//!
//! The kernel embeds its user programs as ELF files. At boot its loader calls
//! [`parse`] on each and hands the resulting [`Image`] to the supervisor
//! process, which creates processes from it (the Hypatia "theon" loader's
//! "minimal representation of the binary's text, read-only data, read-write
//! data, and stack requirements"). Text and read-only data are copied once and
//! mapped shared and read-only into every process of the program; data and the
//! stack are private to each process; nothing is writable and executable.
//!
//! ```text
//!  ELF file (borrowed)                         Image (views into the file)
//!  +------------------+
//!  | ELF header       |--- e_entry ------------> entry
//!  | program headers  |
//!  | R+X  PT_LOAD ----|---------------------->  text    shared, read+execute
//!  | R    PT_LOAD ----|---------------------->  rodata  shared, read-only
//!  | R+W  PT_LOAD ----|---------------------->  data    private, read+write (bss included)
//!  | PT_GNU_STACK ----|---------------------->  stack_size  private, read+write
//!  +------------------+
//! ```
//!
//! [`parse`] never panics and never allocates: every rule it enforces has an
//! [`ImageError`] or [`SegmentError`] variant that keeps the offending value
//! and the index of the program header it came from. Segment bytes are
//! borrowed from the file, not copied. The rules, the reasons for a hand
//! parser rather than `goblin` or `xmas-elf`, and the tests that prove each
//! rule are in `docs/image.md`.
//!
//! Everything here is pure logic, tested on the host (`cargo test -p
//! orrery-image`) and built unchanged into the kernel for
//! `x86_64-unknown-none`.
#![no_std]
#![forbid(unsafe_code)]
// Every public item is part of the contract between the loader and the supervisor.
#![deny(missing_docs)]

mod elf;
mod error;
mod parse;

pub use error::{ImageError, SegmentError, SegmentKind};
pub use parse::parse;

/// Bytes in a page: the granularity of every mapping the supervisor makes.
pub const PAGE_BYTES: u64 = 4096;

/// Most program headers a file may have. `lld` emits six to eight for a
/// static executable; the limit bounds the work [`parse`] does on a hostile
/// `e_phnum` (up to 65,535).
pub const MAX_PROGRAM_HEADERS: u16 = 16;

/// What the kernel is willing to load: address range, sizes, stack defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lowest address a segment's first page may start at. Keeping the first
    /// pages unmapped turns null-pointer dereferences into faults.
    pub lowest_address: u64,
    /// One past the highest address a segment's last page may reach: the end
    /// of the part of the lower half that programs may use, which leaves room
    /// for the stack and shared mappings the supervisor places above.
    pub highest_address: u64,
    /// Largest total of text, read-only data and data, each rounded up to
    /// whole pages. The stack is bounded separately by `max_stack_size`.
    pub max_image_bytes: u64,
    /// Stack size for a program without a `PT_GNU_STACK` size.
    pub default_stack_size: u64,
    /// Largest stack a program may ask for (after rounding up to pages).
    pub max_stack_size: u64,
}

impl Limits {
    /// The limits for Orrery's user programs: no segment below 64 KiB (as
    /// Linux's default `mmap_min_addr`), nothing above `0x7f00_0000_0000`,
    /// at most 64 MiB of segments, a 64 KiB stack unless the program asks for
    /// up to 8 MiB.
    pub const DEFAULT: Self = Self {
        lowest_address: 0x1_0000,
        highest_address: 0x0000_7f00_0000_0000,
        max_image_bytes: 64 << 20,
        default_stack_size: 64 << 10,
        max_stack_size: 8 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A checked program: where it starts, what to map, how much stack it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    /// Address of the first instruction; always inside `text`'s bytes.
    pub entry: u64,
    /// Code, mapped read+execute and shared between processes of the program.
    pub text: Segment<'a>,
    /// Constants, mapped read-only and shared.
    pub rodata: Option<Segment<'a>>,
    /// Initialised and zero-initialised writable data, mapped read+write and
    /// private to each process. The zero-initialised part (`.bss`) is the
    /// segment's tail beyond its file bytes, inside `memory_size`; see
    /// [`Segment::zero_tail`].
    pub data: Option<Segment<'a>>,
    /// Bytes of stack each process gets, a whole number of pages. Where the
    /// stack goes is the supervisor's choice.
    pub stack_size: u64,
}

/// One loadable segment: page-aligned memory, partly initialised from the file.
///
/// ```text
///  address                                              address + memory_size
///  |<- bytes_offset ->|<------ bytes ------>|<------ zero ------>|
///       zero            copied from the file   (.bss for data)
/// ```
///
/// The memory is `page_count` whole pages; the bytes past `memory_size` up to
/// the end of the last page are zero as well. The zeroes before `bytes` matter
/// for files linked without `-z separate-code` (`lld`'s default), whose
/// segments start mid-page: the file bytes that precede the segment on its
/// first page belong to another segment and are not copied, so no read-only
/// byte ever lands in an executable page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// First address of the segment's first page.
    pub address: u64,
    /// Where `bytes` go, counted from `address`: `p_vaddr % PAGE_BYTES`.
    pub bytes_offset: u64,
    /// The segment's bytes in the file (`p_filesz` of them), borrowed.
    pub bytes: &'a [u8],
    /// Bytes of memory from `address` to the segment's end: `bytes_offset +
    /// p_memsz`, so at least `bytes_offset + bytes.len()`.
    pub memory_size: u64,
}

/// A range of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub address: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address. Saturates rather than wrapping; regions made
    /// by this crate never come near the top of the address space.
    pub fn end(&self) -> u64 {
        self.address.saturating_add(self.size)
    }
}

impl Segment<'_> {
    /// Pages the segment occupies.
    pub fn page_count(&self) -> u64 {
        self.memory_size.div_ceil(PAGE_BYTES)
    }

    /// The whole pages the segment occupies.
    pub fn pages(&self) -> Region {
        Region { address: self.address, size: self.page_count().saturating_mul(PAGE_BYTES) }
    }

    /// Address of the segment's first byte as the ELF file gives it
    /// (`p_vaddr`), where `bytes[0]` goes.
    pub fn bytes_address(&self) -> u64 {
        self.address.saturating_add(self.bytes_offset)
    }

    /// The part of the segment that is zero-filled rather than copied from
    /// the file, from the end of `bytes` to `memory_size` (for data this is
    /// `.bss`), or `None` if every byte comes from the file.
    pub fn zero_tail(&self) -> Option<Region> {
        let copied_end = self.bytes_offset.saturating_add(self.bytes.len() as u64);
        let size = self.memory_size.saturating_sub(copied_end);
        (size > 0).then(|| Region { address: self.address.saturating_add(copied_end), size })
    }
}

impl<'a> Image<'a> {
    /// The segments present, with their roles, in the order text, read-only
    /// data, data.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentKind, &Segment<'a>)> {
        [
            Some((SegmentKind::Text, &self.text)),
            self.rodata.as_ref().map(|segment| (SegmentKind::ReadOnlyData, segment)),
            self.data.as_ref().map(|segment| (SegmentKind::Data, segment)),
        ]
        .into_iter()
        .flatten()
    }

    /// Pages copied once and mapped into every process of the program: text
    /// and read-only data.
    pub fn shared_page_count(&self) -> u64 {
        self.text.page_count().saturating_add(self.rodata.map_or(0, |segment| segment.page_count()))
    }

    /// Pages of data (including `.bss`) each process gets a private copy of.
    pub fn data_page_count(&self) -> u64 {
        self.data.map_or(0, |segment| segment.page_count())
    }

    /// Pages of stack each process gets.
    pub fn stack_page_count(&self) -> u64 {
        self.stack_size.div_ceil(PAGE_BYTES)
    }

    /// Pages each process needs for itself: data and stack.
    pub fn private_page_count(&self) -> u64 {
        self.data_page_count().saturating_add(self.stack_page_count())
    }
}
