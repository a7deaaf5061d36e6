//! Page tables and address spaces.
//!
//! Layout of every address space (4-level paging, 48-bit addresses):
//!
//! | range                                   | PML4 slots | what                                  |
//! |-----------------------------------------|------------|---------------------------------------|
//! | `0x0000_0000_0000_0000 ..`              | 0..=255    | private to the address space (user or kernel-task mappings) |
//! | [`PHYSMAP_BASE`] `0xffff_8000_0000_0000`| 256..=383  | all physical memory, NX               |
//! | [`KERNEL_STACKS_BASE`] `0xffff_c000_0000_0000` | 384 | kernel stacks with unmapped guard pages |
//! | [`KERNEL_OFFSET`] `0xffff_ffff_8000_0000` | 511      | the kernel image                      |
//!
//! The kernel half (slots 256..=511) is shared: every address space's PML4
//! points at the same lower-level tables, allocated once at boot, so a
//! kernel mapping made later is seen everywhere without touching any PML4.
//! Leaf entries carry the software bit [`OWNED`] when the address space owns
//! the frame and must free it when the mapping or the space goes away;
//! shared frames (a program's text, a task-set area, a mailbox, pages a
//! process shared with a child) are mapped without it and freed by their
//! owner. Where that owner is a [`SharedFrames`] record, the space holds a
//! reference to it for as long as it maps the frames
//! ([`AddressSpace::keep`]), dropped only after the mappings are gone.

use core::{
    arch::asm,
    sync::atomic::{AtomicU64, Ordering},
};

use alloc::{sync::Arc, vec::Vec};

use orrery_frames::Frame;

use crate::mm::frames::{self, SharedFrames};

/// Where the kernel image is linked (the top 2 GiB).
pub const KERNEL_OFFSET: u64 = 0xffff_ffff_8000_0000;
/// Where all physical memory is mapped (PML4 slot 256).
pub const PHYSMAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Largest physical address the physical-memory window covers (64 TiB).
pub const PHYSMAP_LIMIT: u64 = (128 * 512) << 30;
/// Base of the kernel-stack region (PML4 slot 384).
pub const KERNEL_STACKS_BASE: u64 = 0xffff_c000_0000_0000;
/// Size of the kernel-stack region.
pub const KERNEL_STACKS_SIZE: u64 = 512 << 30;
/// Base of the region where the kernel heap maps frames that memory has no
/// contiguous run of (PML4 slot 416; see `mm::heap`).
pub const KERNEL_HEAP_BASE: u64 = 0xffff_d000_0000_0000;
/// Size of the kernel-heap region.
pub const KERNEL_HEAP_SIZE: u64 = 512 << 30;
/// First address above the private (lower) half.
pub const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;
/// Bytes per page.
pub const PAGE_SIZE: u64 = 4096;

/// Page-table entry bits.
pub mod flags {
    /// The entry is valid.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes are allowed.
    pub const WRITABLE: u64 = 1 << 1;
    /// User mode may access the page.
    pub const USER: u64 = 1 << 2;
    /// Write-through caching.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Caching disabled.
    pub const NO_CACHE: u64 = 1 << 4;
    /// Set by the CPU on access.
    pub const ACCESSED: u64 = 1 << 5;
    /// Set by the CPU on write.
    pub const DIRTY: u64 = 1 << 6;
    /// A 2 MiB or 1 GiB page (in a PD or PDPT entry).
    pub const HUGE: u64 = 1 << 7;
    /// Survives CR3 switches (kernel mappings only).
    pub const GLOBAL: u64 = 1 << 8;
    /// Software bit: the address space owns the frame and frees it.
    pub const OWNED: u64 = 1 << 9;
    /// Instruction fetches fault.
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The physical-address bits of an entry.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
}
pub use flags::OWNED;

/// How a page may be used; turned into entry bits by [`Access::bits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
    /// Reachable from user mode.
    pub user: bool,
}

impl Access {
    /// Kernel read-write data.
    pub const KERNEL_DATA: Access = Access { write: true, execute: false, user: false };
    /// Kernel read-only data.
    pub const KERNEL_READ_ONLY: Access = Access { write: false, execute: false, user: false };
    /// Kernel code.
    pub const KERNEL_CODE: Access = Access { write: false, execute: true, user: false };
    /// User read-write data.
    pub const USER_DATA: Access = Access { write: true, execute: false, user: true };
    /// User read-only data.
    pub const USER_READ_ONLY: Access = Access { write: false, execute: false, user: true };
    /// User code.
    pub const USER_CODE: Access = Access { write: false, execute: true, user: true };

    /// Leaf entry bits (without the frame address).
    pub fn bits(self) -> u64 {
        let mut bits = flags::PRESENT;
        if self.write {
            bits |= flags::WRITABLE;
        }
        if self.user {
            bits |= flags::USER;
        }
        if !self.execute && crate::arch::cpu::features().nx {
            bits |= flags::NO_EXECUTE;
        }
        bits
    }
}

/// The kernel-virtual address of physical address `physical`.
#[inline]
pub fn phys_to_virt(physical: u64) -> u64 {
    PHYSMAP_BASE + physical
}

/// The physical address of a kernel-image or physical-window address.
pub fn kernel_virt_to_phys(virtual_address: u64) -> Option<u64> {
    if virtual_address >= KERNEL_OFFSET {
        Some(virtual_address - KERNEL_OFFSET)
    } else if (PHYSMAP_BASE..PHYSMAP_BASE + PHYSMAP_LIMIT).contains(&virtual_address) {
        Some(virtual_address - PHYSMAP_BASE)
    } else {
        None
    }
}

type Table = [u64; 512];

fn table_at(frame_address: u64) -> *mut Table {
    phys_to_virt(frame_address) as *mut Table
}

fn index(address: u64, level: u32) -> usize {
    ((address >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Why a mapping request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame was left for a page table.
    OutOfFrames,
    /// The page is already mapped (to the frame given).
    AlreadyMapped {
        /// The virtual address.
        address: u64,
        /// The frame it maps.
        existing: u64,
    },
    /// A huge page covers the address; this API maps 4 KiB pages only.
    HugePage(u64),
    /// The address is not page aligned, not canonical, or in the wrong half.
    BadAddress(u64),
}

/// Allocates and zeroes a frame for a page table: of a task's or
/// process's own space (`lower`, taken like process memory, outside the
/// kernel's reserve), or of the kernel half.
fn new_table(lower: bool) -> Result<u64, MapError> {
    let frame = if lower { frames::allocate_zeroed_for_process() } else { frames::allocate_zeroed() };
    Ok(frame.ok_or(MapError::OutOfFrames)?.address())
}

/// The PML4 of the kernel's own address space, which every other space
/// copies the upper half of.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

/// Page-table frames added to the kernel half after boot (by
/// [`map_kernel_page`]). They stay when the pages below them are unmapped
/// (every address space shares them), so they are capacity, like the heap's
/// frames: leak tests count them.
static KERNEL_TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// How many page-table frames the kernel half has grown by since boot.
pub fn kernel_table_frames() -> u64 {
    KERNEL_TABLE_FRAMES.load(Ordering::Relaxed)
}

/// Physical address of the kernel PML4.
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(Ordering::Relaxed)
}

/// Source of unique address-space ids (0 is the kernel's).
static NEXT_SPACE_ID: AtomicU64 = AtomicU64::new(1);

/// Walks (and with `create`, builds) the tables from `root` down to the
/// level-1 entry of `address`.
///
/// # Safety
/// `root` must be a valid PML4 owned by the caller's address space, and the
/// caller must hold whatever lock serialises changes to that space.
unsafe fn walk(root: u64, address: u64, create: bool, user: bool) -> Result<Option<*mut u64>, MapError> {
    // SAFETY: forwarded.
    unsafe { walk_recording(root, address, create, user, &mut |_, _| {}) }
}

/// [`walk`], calling `created(table, level)` for each table it makes.
///
/// # Safety
/// As for [`walk`].
unsafe fn walk_recording(
    root: u64,
    address: u64,
    create: bool,
    user: bool,
    created: &mut dyn FnMut(u64, u32),
) -> Result<Option<*mut u64>, MapError> {
    let mut table = root;
    for level in (2..=4).rev() {
        // SAFETY: `table` is a page-table frame reachable from `root`, mapped
        // through the physical window.
        let entry = unsafe { &mut (*table_at(table))[index(address, level)] };
        if *entry & flags::PRESENT == 0 {
            if !create {
                return Ok(None);
            }
            let new = new_table(address < LOWER_HALF_END)?;
            created(new, level - 1);
            // Intermediate entries are permissive; the leaf decides.
            let mut bits = flags::PRESENT | flags::WRITABLE;
            if user {
                bits |= flags::USER;
            }
            *entry = new | bits;
        } else if *entry & flags::HUGE != 0 {
            return Err(MapError::HugePage(address));
        }
        table = *entry & flags::ADDRESS_MASK;
    }
    // SAFETY: as above, for the level-1 table.
    Ok(Some(unsafe { &mut (*table_at(table))[index(address, 1)] as *mut u64 }))
}

fn check_address(address: u64, lower_half: bool) -> Result<(), MapError> {
    let aligned = address.is_multiple_of(PAGE_SIZE);
    let in_half = if lower_half { address < LOWER_HALF_END } else { address >= PHYSMAP_BASE };
    if aligned && in_half { Ok(()) } else { Err(MapError::BadAddress(address)) }
}

/// Invalidates the TLB entry of one page on this CPU.
#[inline]
pub fn flush_page(address: u64) {
    // SAFETY: `invlpg` only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}

/// Maps a 4 KiB page in the shared kernel half (stacks, and so on).
///
/// # Safety
/// `address` must be in a kernel region reserved for the caller (the stack
/// region's allocator hands out disjoint slots), so that no other code maps
/// or relies on the same page.
pub unsafe fn map_kernel_page(address: u64, frame: Frame, access: Access, owned: bool) -> Result<(), MapError> {
    check_address(address, false)?;
    // SAFETY: the kernel half's PML4 entries were all created at boot, so
    // the walk only adds tables below them, and the caller owns the slot.
    let entry = unsafe {
        walk_recording(kernel_root(), address, true, false, &mut |_, _| {
            KERNEL_TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        })?
    }
    .ok_or(MapError::OutOfFrames)?;
    // SAFETY: `entry` points into a live page table.
    unsafe {
        if *entry & flags::PRESENT != 0 {
            return Err(MapError::AlreadyMapped { address, existing: *entry & flags::ADDRESS_MASK });
        }
        let global = if crate::arch::cpu::features().global_pages { flags::GLOBAL } else { 0 };
        *entry = frame.address() | access.bits() | global | if owned { OWNED } else { 0 };
    }
    Ok(())
}

/// Removes a kernel-half mapping on this CPU's TLB and returns the frame and
/// whether it was owned. Other CPUs must be told with a shoot-down.
///
/// # Safety
/// The page must have been mapped by the caller with [`map_kernel_page`] and
/// nothing may use it any more.
pub unsafe fn unmap_kernel_page(address: u64) -> Option<(Frame, bool)> {
    // SAFETY: see `map_kernel_page`.
    let entry = unsafe { walk(kernel_root(), address, false, false) }.ok()??;
    // SAFETY: `entry` points into a live page table.
    let old = unsafe { core::ptr::replace(entry, 0) };
    if old & flags::PRESENT == 0 {
        return None;
    }
    flush_page(address);
    Some((Frame::containing(old & flags::ADDRESS_MASK), old & OWNED != 0))
}

/// The frame and entry bits that map `address` in the space rooted at
/// `root`, if any (4 KiB pages, or the covering huge page).
pub fn translate_in(root: u64, address: u64) -> Option<(u64, u64)> {
    let mut table = root;
    for level in (1..=4).rev() {
        // SAFETY: reading entries of live page tables through the physical
        // window; a racing change gives a stale but valid answer.
        let entry = unsafe { (*table_at(table))[index(address, level)] };
        if entry & flags::PRESENT == 0 {
            return None;
        }
        if level == 1 || entry & flags::HUGE != 0 {
            let page_size = 1u64 << (12 + 9 * (level - 1));
            let base = entry & flags::ADDRESS_MASK & !(page_size - 1);
            return Some((base + (address & (page_size - 1)), entry));
        }
        table = entry & flags::ADDRESS_MASK;
    }
    None
}

/// One page table of an address space.
#[derive(Clone, Copy)]
struct TableRecord {
    /// Its physical address.
    frame: u64,
    /// 1 for a last-level table.
    level: u32,
    /// Owned frames it maps (last level only).
    owned: u32,
}

/// Pages `start..end` of an address space map frames of `frames` (some of
/// them, without [`OWNED`]), or did until they were unmapped.
struct Kept {
    start: u64,
    end: u64,
    frames: Arc<SharedFrames>,
}

/// An address space: a PML4 whose kernel half is the shared kernel mapping
/// and whose lower half belongs to one task or process.
pub struct AddressSpace {
    root: u64,
    id: u64,
    /// Every lower-half page table of this space, so that tearing the space
    /// down visits only tables that exist, and scans a last-level table only
    /// until it has found the owned frames it holds.
    tables: Vec<TableRecord>,
    /// References to the shared records whose frames this space maps, each
    /// with the pages it covers: dropped only after those mappings are gone
    /// (released with the range, or after the tables at tear-down), so no
    /// frame is freed while this space maps it.
    kept: Vec<Kept>,
    /// Bumped on every unmap, so a CPU that cached this space's
    /// translations under its PCID knows to flush before using it again;
    /// shared with the task that owns the space, whose threads' switches
    /// read it without this space's lock.
    generation: Arc<AtomicU64>,
}

impl AddressSpace {
    /// A new space with an empty lower half.
    pub fn new() -> Result<Self, MapError> {
        let root = new_table(true)?;
        let kernel = kernel_root();
        // SAFETY: both tables are live page-table frames; only the kernel
        // half is copied, and those entries never change after boot.
        unsafe { (&mut *table_at(root))[256..].copy_from_slice(&(&*table_at(kernel))[256..]) };
        Ok(Self {
            root,
            id: NEXT_SPACE_ID.fetch_add(1, Ordering::Relaxed),
            tables: Vec::new(),
            kept: Vec::new(),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Physical address of the PML4 (what CR3 holds).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Unique id of this space; never reused.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The count of unmaps so far (see the field's doc), shared, for
    /// whoever switches to this space without holding it (the scheduler).
    pub fn generation_counter(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    /// Maps the 4 KiB page at `address` (lower half) to `frame`. With
    /// `owned`, the space frees the frame when the page is unmapped or the
    /// space dropped.
    pub fn map(&mut self, address: u64, frame: Frame, access: Access, owned: bool) -> Result<(), MapError> {
        check_address(address, true)?;
        if self.tables.try_reserve(3).is_err() {
            return Err(MapError::OutOfFrames);
        }
        let tables = &mut self.tables;
        // SAFETY: `&mut self` serialises changes to this space's tables.
        let entry = unsafe {
            walk_recording(self.root, address, true, access.user, &mut |frame, level| {
                tables.push(TableRecord { frame, level, owned: 0 })
            })?
        }
        .ok_or(MapError::OutOfFrames)?;
        // SAFETY: `entry` points into one of this space's tables.
        unsafe {
            if *entry & flags::PRESENT != 0 {
                return Err(MapError::AlreadyMapped { address, existing: *entry & flags::ADDRESS_MASK });
            }
            *entry = frame.address() | access.bits() | if owned { OWNED } else { 0 };
        }
        if owned {
            self.count_owned(entry, 1);
        }
        Ok(())
    }

    /// Adjusts the owned count of the last-level table holding `entry`.
    /// Searched from the newest record: mappings are made mostly in
    /// ascending runs, so the table is usually the one just added.
    fn count_owned(&mut self, entry: *mut u64, delta: i32) {
        let table = (entry as u64 - PHYSMAP_BASE) & !(PAGE_SIZE - 1);
        if let Some(record) = self.tables.iter_mut().rev().find(|record| record.frame == table) {
            record.owned = record.owned.wrapping_add_signed(delta);
        }
    }

    /// Removes the mapping of `address`; frees the frame if the space owned
    /// it, and returns the frame otherwise. The caller must make sure no CPU
    /// keeps a stale translation (see [`AddressSpace::generation_counter`]): this
    /// flushes only the current CPU, if the space is active on it. Where the
    /// space may be running on another CPU, use
    /// [`take_mapping`](Self::take_mapping) and free after a shoot-down.
    pub fn unmap(&mut self, address: u64) -> Option<Frame> {
        let (frame, owned) = self.take_mapping(address)?;
        if owned {
            frames::deallocate(frame);
        }
        Some(frame)
    }

    /// Removes the mapping of `address` without freeing its frame: returns
    /// the frame and whether the space owned it (then it is the caller's to
    /// free, once no CPU can use a stale translation of it). Flushes the
    /// current CPU's translation, if the space is active on it.
    pub fn take_mapping(&mut self, address: u64) -> Option<(Frame, bool)> {
        // SAFETY: `&mut self` serialises changes to this space's tables.
        let entry = unsafe { walk(self.root, address, false, false) }.ok()??;
        // SAFETY: `entry` points into one of this space's tables.
        let old = unsafe { core::ptr::replace(entry, 0) };
        if old & flags::PRESENT == 0 {
            return None;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if current_root() == self.root {
            flush_page(address);
        }
        let owned = old & OWNED != 0;
        if owned {
            self.count_owned(entry, -1);
        }
        Some((Frame::containing(old & flags::ADDRESS_MASK), owned))
    }

    /// Makes the mapping of `address` stop owning its frame, which the
    /// caller takes over (to hand it to a [`SharedFrames`] record this space
    /// then [keeps](Self::keep)): the page stays mapped as it was, but
    /// neither [`unmap`](Self::unmap) nor tear-down frees the frame. Returns
    /// the frame, or `None` if the page is not mapped or not owned.
    pub fn disown(&mut self, address: u64) -> Option<Frame> {
        check_address(address, true).ok()?;
        // SAFETY: `&mut self` serialises changes to this space's tables.
        let entry = unsafe { walk(self.root, address, false, false) }.ok()??;
        // SAFETY: `entry` points into one of this space's tables, 8-byte
        // aligned. The page stays mapped and may be in use on another CPU,
        // which may set its accessed and dirty bits meanwhile: an atomic
        // update keeps them. Only the software bit changes, which the CPU
        // ignores, so no cached translation goes stale.
        let old = unsafe { AtomicU64::from_ptr(entry) }.fetch_and(!OWNED, Ordering::AcqRel);
        if old & (flags::PRESENT | OWNED) != flags::PRESENT | OWNED {
            return None;
        }
        self.count_owned(entry, -1);
        Some(Frame::containing(old & flags::ADDRESS_MASK))
    }

    /// Holds a reference to `frames` for the pages `start..end`, which map
    /// (or are about to map) some of its frames without owning them, until
    /// [`release_kept`](Self::release_kept) or tear-down drops it. Fails
    /// only for want of memory.
    pub fn keep(&mut self, start: u64, end: u64, frames: Arc<SharedFrames>) -> Result<(), MapError> {
        self.reserve_kept(1)?;
        self.kept.push(Kept { start, end, frames });
        Ok(())
    }

    /// Makes room for `additional` more [`keep`](Self::keep)s, which then
    /// cannot fail.
    pub fn reserve_kept(&mut self, additional: usize) -> Result<(), MapError> {
        self.kept.try_reserve(additional).map_err(|_| MapError::OutOfFrames)
    }

    /// The record that keeps the frame of the page at `address` alive, if
    /// one does (the page is mapped without [`OWNED`] from a shared record).
    pub fn keeper(&self, address: u64) -> Option<&Arc<SharedFrames>> {
        self.kept.iter().rev().find(|kept| (kept.start..kept.end).contains(&address)).map(|kept| &kept.frames)
    }

    /// Drops the references kept for pages that lie wholly inside
    /// `start..end`, whose mappings the caller has removed. A kept range
    /// that reaches outside stays kept until tear-down: later, never too
    /// early. (The process layer never makes one: it unmaps only whole
    /// regions made by `map_memory`, each with an unmapped page on either
    /// side, and a range is kept only for pages that were all mapped, so
    /// it never crosses a region's edge.)
    /// Frames whose last reference this was are freed, so as for
    /// [`unmap`](Self::unmap) the caller must make sure no CPU keeps a stale
    /// translation of them.
    pub fn release_kept(&mut self, start: u64, end: u64) {
        self.kept.retain(|kept| !(start <= kept.start && kept.end <= end));
    }

    /// Unmaps everything in the lower half, freeing owned frames and the
    /// lower-half page tables, then drops the references to shared records
    /// (freeing their frames if no other space maps them); the space stays
    /// usable (and empty). Nothing may run on the space meanwhile.
    pub fn clear_lower_half(&mut self) {
        // SAFETY: `&mut self` serialises changes, and the caller guarantees
        // no CPU runs on the space; the tables listed are this space's.
        unsafe {
            free_tables(&mut self.tables);
            (&mut *table_at(self.root))[..256].fill(0);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Only now: nothing here maps their frames any more.
        self.kept.clear();
    }

    /// The physical address `address` maps to, and the entry bits.
    pub fn translate(&self, address: u64) -> Option<(u64, u64)> {
        translate_in(self.root, address)
    }

    /// Makes this the current address space of this CPU.
    ///
    /// # Safety
    /// The space must stay alive while it is current, and the code and stack
    /// in use must be mapped in it (the kernel half always is).
    pub unsafe fn activate(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { super::pcid::switch_to(self.root, self.id, Some(&self.generation)) };
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // SAFETY: no CPU runs on this space any more (the owner guarantees it
        // by dropping), so its lower-half tables can be torn down.
        unsafe { free_tables(&mut self.tables) };
        frames::deallocate(Frame::containing(self.root));
        // After the tables, as in `clear_lower_half`.
        self.kept.clear();
    }
}

/// Frees the owned frames the last-level tables in `tables` map, then the
/// tables themselves, and empties the list.
///
/// # Safety
/// Nothing may use the tables any more.
unsafe fn free_tables(tables: &mut Vec<TableRecord>) {
    for record in tables.drain(..) {
        let mut remaining = record.owned;
        if record.level == 1 && remaining > 0 {
            // SAFETY: a live last-level table of a dead space.
            let entries = unsafe { &*table_at(record.frame) };
            // From both ends at once: stacks fill a table from the top,
            // everything else from the bottom.
            let free_if_owned = |entry: u64| {
                let owned = entry & (flags::PRESENT | OWNED) == flags::PRESENT | OWNED;
                if owned {
                    frames::deallocate(Frame::containing(entry & flags::ADDRESS_MASK));
                }
                u32::from(owned)
            };
            let (mut low, mut high) = (0, entries.len());
            while low < high && remaining > 0 {
                remaining -= free_if_owned(entries[low]);
                low += 1;
                if low < high && remaining > 0 {
                    high -= 1;
                    remaining -= free_if_owned(entries[high]);
                }
            }
        }
        frames::deallocate(Frame::containing(record.frame));
    }
}

/// The PML4 this CPU runs on.
pub fn current_root() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    cr3 & flags::ADDRESS_MASK
}

// Symbols of the linker script that bound the kernel image's parts.
unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __boot_start: u8;
    static __boot_end: u8;
}

/// Addresses of the kernel image's parts.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Code, read-execute.
    pub text: (u64, u64),
    /// Read-only data.
    pub rodata: (u64, u64),
    /// Data and bss, read-write.
    pub data: (u64, u64),
    /// The 32-bit boot code and boot page tables (physical = virtual).
    pub boot: (u64, u64),
}

/// Where the linker put the kernel's parts.
pub fn image_layout() -> ImageLayout {
    let address = |symbol: *const u8| symbol as u64;
    ImageLayout {
        text: (address(&raw const __text_start), address(&raw const __text_end)),
        rodata: (address(&raw const __rodata_start), address(&raw const __rodata_end)),
        data: (address(&raw const __data_start), address(&raw const __data_end)),
        boot: (address(&raw const __boot_start), address(&raw const __boot_end)),
    }
}

/// Builds the kernel's final address space and switches to it: all
/// physical memory up to `physical_end` at [`PHYSMAP_BASE`] (2 MiB pages,
/// no-execute, uncached over the APIC/IOAPIC/HPET range), the kernel image
/// with per-part permissions, and the shared tables of the kernel half. The
/// boot identity map is gone afterwards. `guard_pages` are left unmapped
/// inside the image (the boot stacks' guards).
///
/// # Safety
/// Called once, on the bootstrap CPU, with the frame allocator ready and
/// nothing else running.
pub unsafe fn init_kernel_space(physical_end: u64, guard_pages: &[u64]) -> Result<(), MapError> {
    let features = *crate::arch::cpu::features();
    let global = if features.global_pages { flags::GLOBAL } else { 0 };
    let no_execute = if features.nx { flags::NO_EXECUTE } else { 0 };
    let root = new_table(false)?;
    // SAFETY: `root` is a fresh zeroed table.
    let pml4 = unsafe { &mut *table_at(root) };
    // Every kernel-half slot gets its PDPT now, so later kernel mappings never
    // change a PML4 and copies made by `AddressSpace::new` stay valid.
    for slot in pml4[256..].iter_mut() {
        *slot = new_table(false)? | flags::PRESENT | flags::WRITABLE;
    }
    // Physical window: at least 4 GiB (the APIC and firmware live there).
    let window_end = physical_end.max(4 << 30).next_multiple_of(1 << 30).min(PHYSMAP_LIMIT);
    let mut physical = 0;
    while physical < window_end {
        let virtual_address = phys_to_virt(physical);
        let pdpt = pml4[index(virtual_address, 4)] & flags::ADDRESS_MASK;
        // SAFETY: the PDPT was just allocated above.
        let pdpt_entry = unsafe { &mut (*table_at(pdpt))[index(virtual_address, 3)] };
        if *pdpt_entry & flags::PRESENT == 0 {
            *pdpt_entry = new_table(false)? | flags::PRESENT | flags::WRITABLE;
        }
        let pd = *pdpt_entry & flags::ADDRESS_MASK;
        // The local APIC, I/O APIC and HPET sit in 0xfec00000..0x100000000.
        let uncached =
            if (0xfec0_0000..0x1_0000_0000).contains(&physical) { flags::NO_CACHE | flags::WRITE_THROUGH } else { 0 };
        // SAFETY: `pd` is a live table of the new space.
        unsafe {
            (*table_at(pd))[index(virtual_address, 2)] =
                physical | flags::PRESENT | flags::WRITABLE | flags::HUGE | global | no_execute | uncached;
        }
        physical += 2 << 20;
    }
    KERNEL_ROOT.store(root, Ordering::Relaxed);
    let layout = image_layout();
    let parts = [
        (layout.text, Access::KERNEL_CODE),
        (layout.rodata, Access::KERNEL_READ_ONLY),
        (layout.data, Access::KERNEL_DATA),
    ];
    for ((start, end), access) in parts {
        let mut address = start;
        while address < end {
            if !guard_pages.contains(&address) {
                let frame = Frame::containing(address - KERNEL_OFFSET);
                // SAFETY: the image's own pages, mapped once at their link
                // addresses in the new (not yet active) space.
                unsafe { map_kernel_page(address, frame, access, false)? };
            }
            address += PAGE_SIZE;
        }
    }
    // SAFETY: the new space maps the running code, the stack (in .bss) and
    // all memory the kernel refers to by physical-window address.
    unsafe { asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
    Ok(())
}

/// Loads the kernel's page tables on a CPU that starts up (application
/// processors come in on the trampoline's tables).
///
/// # Safety
/// The caller must run on code and stack mapped in the kernel space.
pub unsafe fn activate_kernel_space() {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr3, {}", in(reg) kernel_root(), options(nostack, preserves_flags)) };
}
