//! Switching CR3 with process-context identifiers.
//!
//! With PCID the TLB tags each translation with a 12-bit id, so switching
//! address spaces need not flush it. Ids are handed out per CPU: each CPU
//! keeps a few slots, each remembering which address space (by its
//! never-reused 64-bit id) it last held and at which unmap generation. A
//! switch to a space that still owns its slot at the same generation loads
//! CR3 with the "no flush" bit; a new space, or one that unmapped something
//! since, gets its slot flushed as it is loaded. PCID 0 is the kernel's own
//! space. Without PCID every switch is a plain CR3 write. Those decisions
//! are `orrery-asid`'s, whose property tests check them against a model of
//! the TLB (this machine's emulator has no PCID to try them on); this module
//! keeps the per-CPU state and writes CR3.

use core::{
    arch::asm,
    cell::UnsafeCell,
    sync::atomic::{AtomicU64, Ordering},
};

use orrery_asid::AsidCache;

use super::cpu::{MAX_CPUS, cpu_index, features};

/// One CPU's PCID slots (the decisions, host-tested in `orrery-asid`) and
/// the root it has loaded.
struct CpuSlots {
    cache: AsidCache,
    current_root: u64,
}

struct PerCpu(UnsafeCell<CpuSlots>);
// SAFETY: each CPU touches only its own entry, with interrupts off.
unsafe impl Sync for PerCpu {}

static SLOTS_OF: [PerCpu; MAX_CPUS] =
    [const { PerCpu(UnsafeCell::new(CpuSlots { cache: AsidCache::new(), current_root: 0 })) }; MAX_CPUS];

/// The page-table root each CPU has loaded, for shoot-downs (see
/// [`cpus_running`]): written by the CPU itself on every CR3 change.
static LOADED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The CPUs that have `root` loaded now, or may have until they pass their
/// next CR3 write. A CPU that loads it later flushes what it cached of it
/// as it does (an unmap bumps the space's generation), so only these can
/// hold stale translations after an unmap. Read after the page-table
/// change (the caller's fence orders the two).
pub fn cpus_running(root: u64) -> impl Iterator<Item = usize> {
    let count = super::smp::cpu_count();
    LOADED[..count]
        .iter()
        .enumerate()
        .filter(move |(_, loaded)| loaded.load(Ordering::SeqCst) == root)
        .map(|(cpu, _)| cpu)
}

/// Loads `root` (address space `space`, whose unmap generation is counted
/// by `generation`, `None` for the kernel's) into CR3, reusing or recycling
/// this CPU's PCID slots. Returns true when CR3 was written.
///
/// The CPU records that it has `root` loaded before it reads the
/// generation, with a full fence between: an unmap either sees this CPU in
/// [`cpus_running`] (and shoots it down), or bumped the generation before
/// the read here (and this switch flushes the slot).
///
/// # Safety
/// The space must stay alive while current, and must map the running code
/// and stack.
pub unsafe fn switch_to(root: u64, space: u64, generation: Option<&AtomicU64>) -> bool {
    // SAFETY: forwarded; interrupts are masked around the call.
    super::interrupts::without(|| unsafe { switch_to_masked(root, space, generation) })
}

/// [`switch_to`] for callers that already run with interrupts off (the
/// scheduler's switch path).
///
/// # Safety
/// As for [`switch_to`], and interrupts must be off.
pub unsafe fn switch_to_masked(root: u64, space: u64, generation: Option<&AtomicU64>) -> bool {
    {
        // SAFETY: only this CPU touches its slots, and interrupts are off.
        let cpu = unsafe { &mut *SLOTS_OF[cpu_index()].0.get() };
        if cpu.current_root == root {
            return false;
        }
        cpu.current_root = root;
        // SeqCst (an `xchg`): ordered before the generation's load below.
        LOADED[cpu_index()].store(root, Ordering::SeqCst);
        if !features().pcid {
            // SAFETY: forwarded to the caller.
            unsafe { write_cr3(root) };
            return true;
        }
        let generation = generation.map_or(0, |generation| generation.load(Ordering::SeqCst));
        // The kernel's space (0) is PCID 0, never flushed: kernel mappings
        // are global or never removed without a shoot-down.
        let value = cpu.cache.load(root, space, generation);
        // SAFETY: forwarded to the caller.
        unsafe { write_cr3(value) };
        true
    }
}

/// Records that this CPU runs on `root` already (at start-up).
pub fn note_current(root: u64) {
    // SAFETY: only this CPU touches its slots; called before it schedules.
    unsafe { (*SLOTS_OF[cpu_index()].0.get()).current_root = root };
    LOADED[cpu_index()].store(root, Ordering::SeqCst);
}

unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables map what runs.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}
