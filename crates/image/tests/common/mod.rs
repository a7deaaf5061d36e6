//! Test fixtures for `orrery-image`: a builder that assembles small, valid
//! ELF64 executables byte by byte, and helpers that patch single header
//! fields afterwards to make each kind of malformed file.
//!
//! Building the bytes here, rather than checking in binaries, keeps every
//! fixture readable next to the assertion it serves. `tests/real_binary.rs`
//! adds one file a real linker produced, so the builder's idea of ELF is
//! checked against the toolchain's.
#![allow(dead_code, reason = "each test binary uses a different subset of the fixtures")]

/// `PT_LOAD`.
pub const LOAD: u32 = 1;
/// `PT_DYNAMIC`.
pub const DYNAMIC: u32 = 2;
/// `PT_INTERP`.
pub const INTERPRETER: u32 = 3;
/// `PT_NOTE`.
pub const NOTE: u32 = 4;
/// `PT_SHLIB`.
pub const SHARED_LIBRARY: u32 = 5;
/// `PT_PHDR`.
pub const PROGRAM_HEADERS: u32 = 6;
/// `PT_TLS`.
pub const THREAD_LOCAL: u32 = 7;
/// `PT_GNU_STACK`.
pub const GNU_STACK: u32 = 0x6474_e551;
/// `PT_GNU_RELRO`.
pub const GNU_RELRO: u32 = 0x6474_e552;

/// `PF_X`.
pub const X: u32 = 1;
/// `PF_W`.
pub const W: u32 = 2;
/// `PF_R`.
pub const R: u32 = 4;

/// Where the typical fixture's segments start.
pub const RODATA_ADDRESS: u64 = 0x40_0000;
pub const TEXT_ADDRESS: u64 = 0x40_1000;
pub const DATA_ADDRESS: u64 = 0x40_2000;
/// The typical fixture's entry point: 16 bytes into the text.
pub const ENTRY: u64 = TEXT_ADDRESS + 0x10;

/// One program header and, for a loadable one, the bytes it carries.
#[derive(Clone, Debug)]
pub struct Program {
    pub kind: u32,
    pub flags: u32,
    pub address: u64,
    /// Becomes `p_filesz`; placed in the file by [`ElfBuilder::build`].
    pub contents: Vec<u8>,
    pub memory_bytes: u64,
}

impl Program {
    /// A `PT_LOAD` whose memory is exactly its contents.
    pub fn load(flags: u32, address: u64, contents: Vec<u8>) -> Self {
        let memory_bytes = contents.len() as u64;
        Self { kind: LOAD, flags, address, contents, memory_bytes }
    }

    /// A header of another kind with no bytes.
    pub fn other(kind: u32, flags: u32, memory_bytes: u64) -> Self {
        Self { kind, flags, address: 0, contents: Vec::new(), memory_bytes }
    }
}

/// Assembles an ELF64 executable: file header, program header table, then
/// each program's contents at a file offset congruent to its address modulo
/// the page size (as real linkers place them, though the parser does not need
/// it).
#[derive(Clone, Debug)]
pub struct ElfBuilder {
    pub entry: u64,
    pub programs: Vec<Program>,
}

/// Recognisable contents: `length` bytes counting up from `seed`.
pub fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length).map(|position| seed.wrapping_add(position as u8)).collect()
}

impl ElfBuilder {
    /// Read-only data, text, data with a `.bss` tail, and a `PT_GNU_STACK`
    /// without a size: the shape `lld -z separate-code -z norelro` produces.
    pub fn typical() -> Self {
        let mut data = Program::load(R | W, DATA_ADDRESS, pattern(0xd0, 0x40));
        data.memory_bytes = 0x3000;
        Self {
            entry: ENTRY,
            programs: vec![
                Program::load(R, RODATA_ADDRESS, pattern(0x10, 0x123)),
                Program::load(R | X, TEXT_ADDRESS, pattern(0x90, 0x456)),
                data,
                Program::other(GNU_STACK, R | W, 0),
            ],
        }
    }

    /// Only a text segment.
    pub fn text_only() -> Self {
        Self { entry: TEXT_ADDRESS, programs: vec![Program::load(R | X, TEXT_ADDRESS, pattern(0x90, 0x20))] }
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let table_end = 64 + 56 * self.programs.len();
        let mut file = vec![0_u8; table_end];
        let mut offsets = Vec::new();
        for program in &self.programs {
            if program.contents.is_empty() {
                offsets.push(0);
                continue;
            }
            let mut offset = file.len() as u64;
            let wanted = program.address % 4096;
            if offset % 4096 != wanted {
                offset = offset - offset % 4096 + wanted;
                if offset < file.len() as u64 {
                    offset += 4096;
                }
            }
            file.resize(offset as usize, 0);
            file.extend_from_slice(&program.contents);
            offsets.push(offset);
        }

        file[..4].copy_from_slice(b"\x7fELF");
        file[4] = 2; // ELFCLASS64
        file[5] = 1; // ELFDATA2LSB
        file[6] = 1; // EV_CURRENT
        put16(&mut file, 16, 2); // ET_EXEC
        put16(&mut file, 18, 62); // EM_X86_64
        put32(&mut file, 20, 1); // EV_CURRENT
        put64(&mut file, 24, self.entry);
        put64(&mut file, 32, 64); // e_phoff
        put16(&mut file, 52, 64); // e_ehsize
        put16(&mut file, 54, 56); // e_phentsize
        put16(&mut file, 56, self.programs.len() as u16);

        for (index, (program, offset)) in self.programs.iter().zip(offsets).enumerate() {
            let at = 64 + 56 * index;
            put32(&mut file, at, program.kind);
            put32(&mut file, at + 4, program.flags);
            put64(&mut file, at + 8, offset);
            put64(&mut file, at + 16, program.address);
            put64(&mut file, at + 24, program.address);
            put64(&mut file, at + 32, program.contents.len() as u64);
            put64(&mut file, at + 40, program.memory_bytes);
            put64(&mut file, at + 48, if program.kind == LOAD { 4096 } else { 16 });
        }
        file
    }
}

/// Byte offsets of program header fields, for [`set_program`].
#[derive(Clone, Copy, Debug)]
pub enum ProgramField {
    Kind,
    Flags,
    Offset,
    Address,
    FileBytes,
    MemoryBytes,
}

/// Overwrites one field of program header `index` in a built file.
pub fn set_program(file: &mut [u8], index: usize, field: ProgramField, value: u64) {
    let at = 64 + 56 * index;
    match field {
        ProgramField::Kind => put32(file, at, value as u32),
        ProgramField::Flags => put32(file, at + 4, value as u32),
        ProgramField::Offset => put64(file, at + 8, value),
        ProgramField::Address => put64(file, at + 16, value),
        ProgramField::FileBytes => put64(file, at + 32, value),
        ProgramField::MemoryBytes => put64(file, at + 40, value),
    }
}

/// Reads one field of program header `index` in a built file.
pub fn program(file: &[u8], index: usize, field: ProgramField) -> u64 {
    let at = 64 + 56 * index;
    let read32 = |at: usize| u64::from(u32::from_le_bytes(file[at..at + 4].try_into().unwrap()));
    let read64 = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    match field {
        ProgramField::Kind => read32(at),
        ProgramField::Flags => read32(at + 4),
        ProgramField::Offset => read64(at + 8),
        ProgramField::Address => read64(at + 16),
        ProgramField::FileBytes => read64(at + 32),
        ProgramField::MemoryBytes => read64(at + 40),
    }
}

pub fn put16(file: &mut [u8], at: usize, value: u16) {
    file[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub fn put32(file: &mut [u8], at: usize, value: u32) {
    file[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub fn put64(file: &mut [u8], at: usize, value: u64) {
    file[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
