//! The PVH `hvm_start_info` block: memory map, command line and ACPI RSDP.
//!
//! The loader leaves it in low memory and passes its physical address in
//! `%ebx`. [`BootInfo::read`] copies out what the kernel needs while the boot
//! identity map still covers it, so nothing later depends on the loader's
//! memory staying untouched.

use core::{mem::size_of, str};

/// `hvm_start_info.magic`.
const MAGIC: u32 = 0x336e_c578;
/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 64;
/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 512;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// What a range of physical memory is, per the firmware's E820 types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM.
    Usable,
    /// Reserved by firmware or devices.
    Reserved,
    /// ACPI tables, reclaimable after they are read.
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Memory reported broken.
    Unusable,
    /// A type this kernel does not know.
    Other(u32),
}

/// One entry of the boot memory map.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// First physical address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the memory is.
    pub kind: RegionKind,
}

/// Why the start-info block could not be used.
#[derive(Clone, Copy, Debug)]
pub enum StartInfoError {
    /// The magic number is wrong: not booted through PVH.
    BadMagic(u32),
    /// The block has no memory map (version 0).
    NoMemoryMap {
        /// The version found.
        version: u32,
    },
}

/// What the kernel keeps from the loader.
pub struct BootInfo {
    regions: [Option<Region>; MAX_REGIONS],
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp: Option<u64>,
    /// Memory-map entries that did not fit.
    pub dropped_regions: usize,
    /// Command-line bytes that did not fit.
    pub truncated_cmdline: usize,
}

impl BootInfo {
    /// Copies the start-info block at physical address `physical`.
    ///
    /// # Safety
    /// `physical` must be the value the PVH loader passed in `%ebx`, and the
    /// memory it and its sub-blocks occupy must be mapped at
    /// `physical + offset` and not yet reused.
    pub unsafe fn read(physical: u64, offset: u64) -> Result<Self, StartInfoError> {
        let at = |address: u64| (address + offset) as *const u8;
        // SAFETY: the caller guarantees the block is mapped and intact; the
        // fields are read unaligned-safe because the struct is plain data.
        let info = unsafe { (at(physical) as *const StartInfo).read_unaligned() };
        if info.magic != MAGIC {
            return Err(StartInfoError::BadMagic(info.magic));
        }
        if info.version < 1 || info.memmap_paddr == 0 {
            return Err(StartInfoError::NoMemoryMap { version: info.version });
        }
        let mut boot = BootInfo {
            regions: [None; MAX_REGIONS],
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: (info.rsdp_paddr != 0).then_some(info.rsdp_paddr),
            dropped_regions: 0,
            truncated_cmdline: 0,
        };
        for index in 0..info.memmap_entries as usize {
            let address = info.memmap_paddr + (index * size_of::<MemmapEntry>()) as u64;
            // SAFETY: the entry lies inside the loader's memory map, which the
            // caller guarantees is mapped.
            let entry = unsafe { (at(address) as *const MemmapEntry).read_unaligned() };
            let kind = match entry.kind {
                1 => RegionKind::Usable,
                2 => RegionKind::Reserved,
                3 => RegionKind::AcpiReclaimable,
                4 => RegionKind::AcpiNvs,
                5 => RegionKind::Unusable,
                other => RegionKind::Other(other),
            };
            match boot.regions.get_mut(index) {
                Some(slot) => *slot = Some(Region { start: entry.address, size: entry.size, kind }),
                None => boot.dropped_regions += 1,
            }
        }
        if info.cmdline_paddr != 0 {
            let mut length = 0;
            loop {
                // SAFETY: the command line is a NUL-terminated string in
                // loader memory, mapped per the caller's guarantee.
                let byte = unsafe { at(info.cmdline_paddr + length as u64).read() };
                if byte == 0 {
                    break;
                }
                if length < MAX_CMDLINE {
                    boot.cmdline[length] = byte;
                    boot.cmdline_len = length + 1;
                } else {
                    boot.truncated_cmdline += 1;
                }
                length += 1;
            }
        }
        Ok(boot)
    }

    /// The memory map, in the loader's order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> + Clone {
        self.regions.iter().flatten()
    }

    /// The command line; bytes that are not UTF-8 end it early.
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or(""),
        }
    }
}
