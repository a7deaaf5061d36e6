//! Raw ELF64 records: the file header and the program headers, decoded field by
//! field from little-endian bytes, and nothing else.
//!
//! This is the only part of the crate that knows byte offsets. It checks
//! nothing about meaning: `parse.rs` decides what a record's values allow. A
//! record is read from a slice that has already been checked to be long
//! enough, through [`Fields`], whose reads return `None` instead of panicking,
//! so even a mistake in an offset here cannot turn into a panic.
//!
//! Only the fields the loader needs are decoded. Section headers are never
//! looked at: a loader needs segments, and section headers are an optional,
//! linker-facing view of the same bytes.

/// Bytes of the ELF64 file header.
pub(crate) const FILE_HEADER_BYTES: usize = 64;
/// Bytes of one ELF64 program header; the only `e_phentsize` accepted.
pub(crate) const PROGRAM_HEADER_BYTES: usize = 56;

/// `\x7fELF`.
pub(crate) const MAGIC: [u8; 4] = *b"\x7fELF";
/// `ELFCLASS64`.
pub(crate) const CLASS_64: u8 = 2;
/// `ELFDATA2LSB`: two's complement, little endian.
pub(crate) const DATA_LITTLE_ENDIAN: u8 = 1;
/// `EV_CURRENT`, in both `e_ident[EI_VERSION]` and `e_version`.
pub(crate) const VERSION_CURRENT: u32 = 1;
/// `ET_EXEC`: an executable linked at fixed addresses.
pub(crate) const TYPE_EXECUTABLE: u16 = 2;
/// `EM_X86_64`.
pub(crate) const MACHINE_X86_64: u16 = 62;

/// `PT_LOAD`: bytes to place in memory.
pub(crate) const KIND_LOAD: u32 = 1;
/// `PT_DYNAMIC`: dynamic linking tables.
pub(crate) const KIND_DYNAMIC: u32 = 2;
/// `PT_INTERP`: the path of a dynamic loader.
pub(crate) const KIND_INTERPRETER: u32 = 3;
/// `PT_SHLIB`: reserved with unspecified meaning.
pub(crate) const KIND_SHARED_LIBRARY: u32 = 5;
/// `PT_TLS`: the thread-local storage template.
pub(crate) const KIND_THREAD_LOCAL: u32 = 7;
/// `PT_GNU_STACK`: the stack's permissions and, if non-zero, its size.
pub(crate) const KIND_GNU_STACK: u32 = 0x6474_e551;

/// `PF_X`.
pub(crate) const FLAG_EXECUTE: u32 = 1;
/// `PF_W`.
pub(crate) const FLAG_WRITE: u32 = 2;
/// `PF_R`.
pub(crate) const FLAG_READ: u32 = 4;

/// The fields of the ELF64 file header the loader uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileHeader {
    pub(crate) class: u8,
    pub(crate) data_encoding: u8,
    pub(crate) identification_version: u8,
    pub(crate) file_type: u16,
    pub(crate) machine: u16,
    pub(crate) version: u32,
    pub(crate) entry: u64,
    pub(crate) program_header_offset: u64,
    pub(crate) program_header_entry_bytes: u16,
    pub(crate) program_header_count: u16,
}

/// One ELF64 program header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgramHeader {
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) offset: u64,
    pub(crate) virtual_address: u64,
    pub(crate) file_bytes: u64,
    pub(crate) memory_bytes: u64,
}

impl FileHeader {
    /// Decodes the header from the first [`FILE_HEADER_BYTES`] of `record`;
    /// `None` if `record` is shorter.
    ///
    /// Multi-byte fields are decoded little-endian whatever `data_encoding`
    /// says; the caller rejects other encodings before using them.
    pub(crate) fn decode(record: &[u8]) -> Option<Self> {
        let mut fields = Fields::new(record.get(..FILE_HEADER_BYTES)?);
        // The magic, which the caller checks before decoding.
        fields.skip(MAGIC.len())?;
        let class = fields.u8()?;
        let data_encoding = fields.u8()?;
        let identification_version = fields.u8()?;
        // EI_OSABI, EI_ABIVERSION and the padding up to the end of e_ident.
        fields.skip(9)?;
        let file_type = fields.u16()?;
        let machine = fields.u16()?;
        let version = fields.u32()?;
        let entry = fields.u64()?;
        let program_header_offset = fields.u64()?;
        // e_shoff, e_flags, e_ehsize.
        fields.skip(8 + 4 + 2)?;
        let program_header_entry_bytes = fields.u16()?;
        let program_header_count = fields.u16()?;
        Some(Self {
            class,
            data_encoding,
            identification_version,
            file_type,
            machine,
            version,
            entry,
            program_header_offset,
            program_header_entry_bytes,
            program_header_count,
        })
    }
}

impl ProgramHeader {
    /// Decodes one program header from the first [`PROGRAM_HEADER_BYTES`] of
    /// `record`; `None` if `record` is shorter.
    pub(crate) fn decode(record: &[u8]) -> Option<Self> {
        let mut fields = Fields::new(record.get(..PROGRAM_HEADER_BYTES)?);
        let kind = fields.u32()?;
        let flags = fields.u32()?;
        let offset = fields.u64()?;
        let virtual_address = fields.u64()?;
        // p_paddr: meaningless for a process image.
        fields.skip(8)?;
        let file_bytes = fields.u64()?;
        let memory_bytes = fields.u64()?;
        // p_align is not needed: segments are copied, not mapped from the
        // file, so file offsets need no congruence with addresses.
        Some(Self { kind, flags, offset, virtual_address, file_bytes, memory_bytes })
    }
}

/// A cursor over a record whose reads fail instead of panicking.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(record: &'a [u8]) -> Self {
        Self { rest: record }
    }

    fn array<const BYTES: usize>(&mut self) -> Option<[u8; BYTES]> {
        let (head, rest) = self.rest.split_first_chunk::<BYTES>()?;
        self.rest = rest;
        Some(*head)
    }

    fn skip(&mut self, bytes: usize) -> Option<()> {
        self.rest = self.rest.get(bytes..)?;
        Some(())
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}
