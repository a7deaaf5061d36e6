//! Bringing up the other CPUs, the CPU table, and calls across CPUs.
//!
//! Start-up: the bootstrap CPU copies a real-mode trampoline to
//! [`TRAMPOLINE`], sends every listed CPU INIT and two STARTUP IPIs, and the
//! CPUs climb to long mode on a transient page table (the kernel half plus an
//! identity map of the trampoline page), each taking a guarded stack from a
//! table by an atomic counter, and enter [`crate::ap_main`]. Their CPU
//! number comes from their APIC id's place in the MADT order.
//!
//! Cross-CPU calls ([`call_on`]) put a request in the target's inbox and send
//! the call IPI; the caller waits for every target to run it, and while it
//! waits it serves its own inbox, so two CPUs calling each other cannot
//! deadlock.

use alloc::vec::Vec;
use core::{
    arch::{asm, global_asm},
    ops::Range,
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};

use orrery_topology::{Location, Shifts};

use super::{
    apic,
    cpu::{MAX_CPUS, cpu_index},
    paging::{self, Access, AddressSpace, PAGE_SIZE},
    traps::{self, TrapFrame},
};
use crate::sync::SpinLock;

/// Physical address the trampoline runs at (page 8: STARTUP vector 0x08).
pub const TRAMPOLINE: u64 = 0x8000;
/// Offset of the parameter block inside the trampoline page.
const PARAMETERS: u64 = 0xf00;

/// What the kernel knows of one CPU.
struct CpuSlot {
    apic_id: AtomicU32,
    package: AtomicU32,
    core: AtomicU32,
    thread: AtomicU32,
    online: AtomicBool,
}

static CPUS: [CpuSlot; MAX_CPUS] = [const {
    CpuSlot {
        apic_id: AtomicU32::new(u32::MAX),
        package: AtomicU32::new(0),
        core: AtomicU32::new(0),
        thread: AtomicU32::new(0),
        online: AtomicBool::new(false),
    }
}; MAX_CPUS];
/// CPUs listed in the MADT (and kept: at most [`MAX_CPUS`]).
static CPU_COUNT: AtomicUsize = AtomicUsize::new(1);
static SHIFTS: spin::Once<Shifts> = spin::Once::new();
/// TSC when the last CPU came online.
static ALL_ONLINE_TSC: AtomicU64 = AtomicU64::new(0);

/// Number of CPUs the kernel runs on.
pub fn cpu_count() -> usize {
    CPU_COUNT.load(Ordering::Acquire)
}

/// APIC id of CPU `index`.
pub fn apic_id(index: usize) -> u32 {
    CPUS[index].apic_id.load(Ordering::Relaxed)
}

/// Where CPU `index` sits: package, core and SMT thread.
pub fn location(index: usize) -> Location {
    let slot = &CPUS[index];
    Location {
        package: slot.package.load(Ordering::Relaxed),
        core: slot.core.load(Ordering::Relaxed),
        thread: slot.thread.load(Ordering::Relaxed),
    }
}

/// True once CPU `index` has finished starting.
pub fn is_online(index: usize) -> bool {
    CPUS[index].online.load(Ordering::Acquire)
}

/// TSC value when the last CPU came online (0 until then).
pub fn all_online_tsc() -> u64 {
    ALL_ONLINE_TSC.load(Ordering::Relaxed)
}

/// The APIC-id field widths, from CPUID leaf 0x1F/0xB or the legacy leaves.
pub fn topology_shifts() -> Shifts {
    *SHIFTS.call_once(|| {
        let cpuid = raw_cpuid::CpuId::new();
        if let Some(levels) = cpuid.get_extended_topology_info() {
            let levels: Vec<(u8, u32)> = levels
                .map(|level| {
                    let level_type = match level.level_type() {
                        raw_cpuid::TopologyType::SMT => orrery_topology::level_type::SMT,
                        raw_cpuid::TopologyType::Core => orrery_topology::level_type::CORE,
                        _ => 3,
                    };
                    (level_type, level.shift_right_for_next_apic_id())
                })
                .collect();
            match Shifts::from_extended_leaf(levels.iter().copied()) {
                Ok(shifts) => return shifts,
                Err(error) => log::warn!("CPUID topology leaf unusable ({error}); using the legacy leaves"),
            }
        }
        let logical = cpuid
            .get_feature_info()
            .map_or(1, |info| if info.has_htt() { u32::from(info.max_logical_processor_ids()) } else { 1 });
        let cores = cpuid
            .get_cache_parameters()
            .and_then(|mut caches| caches.next())
            .map_or(1, |cache| cache.max_cores_for_package() as u32);
        Shifts::from_legacy(logical, cores)
    })
}

/// Records the CPUs the MADT lists; the bootstrap CPU (whose APIC id is
/// `boot_apic_id`) becomes CPU 0 and the others follow in table order.
pub fn register_cpus(listed: &[u32], boot_apic_id: u32) {
    let shifts = topology_shifts();
    let mut count = 0;
    let ordered = core::iter::once(boot_apic_id).chain(listed.iter().copied().filter(|id| *id != boot_apic_id));
    for apic_id in ordered {
        if count == MAX_CPUS {
            log::warn!("more than {MAX_CPUS} CPUs listed; APIC id {apic_id} and later stay halted");
            break;
        }
        let slot = &CPUS[count];
        let place = shifts.locate(apic_id);
        slot.apic_id.store(apic_id, Ordering::Relaxed);
        slot.package.store(place.package, Ordering::Relaxed);
        slot.core.store(place.core, Ordering::Relaxed);
        slot.thread.store(place.thread, Ordering::Relaxed);
        count += 1;
    }
    CPU_COUNT.store(count, Ordering::Release);
}

/// Marks the calling CPU online.
pub fn mark_online() {
    let index = cpu_index();
    CPUS[index].online.store(true, Ordering::Release);
    if (0..cpu_count()).all(is_online) {
        ALL_ONLINE_TSC.store(super::tsc::now(), Ordering::Relaxed);
    }
}

/// The CPU number of the CPU with APIC id `apic_id`.
pub fn index_of_apic_id(apic_id: u32) -> Option<usize> {
    (0..cpu_count()).find(|index| CPUS[*index].apic_id.load(Ordering::Relaxed) == apic_id)
}

// The real-mode trampoline. It is copied to TRAMPOLINE, so every address in
// it is computed relative to `ap_trampoline_start`. The parameter block at
// PARAMETERS: +0 CR3, +8 entry, +16 EFER bits, +24 stack table, +32 next
// stack index, +40 CR4 bits.
global_asm!(
    r#"
    .pushsection .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl {base} + (ap_gdt_pointer - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, ${base} + (ap_protected - ap_trampoline_start)

    .code32
ap_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl {base} + {parameters} + 40, %eax
    movl %eax, %cr4
    movl {base} + {parameters}, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl {base} + {parameters} + 16, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    ljmpl $0x18, ${base} + (ap_long - ap_trampoline_start)

    .code64
ap_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $1, %rax
    lock xaddq %rax, {base} + {parameters} + 32
    movq {base} + {parameters} + 24, %rbx
    movq (%rbx, %rax, 8), %rsp
    xorl %ebp, %ebp
    movq %rax, %rdi
    movq {base} + {parameters} + 8, %rax
    callq *%rax
    ud2

    .balign 16
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00af9a000000ffff    /* 0x18: 64-bit code */
ap_gdt_end:
    .balign 4
    .word 0
ap_gdt_pointer:
    .word ap_gdt_end - ap_gdt - 1
    .long {base} + (ap_gdt - ap_trampoline_start)
ap_trampoline_end:
    .popsection
    "#,
    base = const TRAMPOLINE,
    parameters = const PARAMETERS,
    options(att_syntax),
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// What AP start-up achieved.
#[derive(Clone, Copy, Debug)]
pub struct StartReport {
    /// CPUs listed (bootstrap CPU included).
    pub listed: usize,
    /// CPUs online after start-up (bootstrap CPU included).
    pub online: usize,
}

/// Starts every listed application processor; each runs `entry(arrival)`
/// on one of `stacks` (top addresses, one per AP). Waits up to a second for
/// them all.
pub fn start_application_processors(entry: extern "C" fn(u64) -> !, stacks: &[u64]) -> StartReport {
    let count = cpu_count();
    if count <= 1 {
        return StartReport { listed: 1, online: 1 };
    }
    assert_eq!(stacks.len(), count - 1);
    // A transient space: the kernel half plus the trampoline page identity
    // mapped, so the instruction after enabling paging is still mapped.
    let mut space = AddressSpace::new().expect("memory for the AP start-up tables");
    assert!(space.root() < 1 << 32, "the AP start-up PML4 must be below 4 GiB");
    // Writable as well as executable: the APs take their stack index with a
    // `lock xadd` in the parameter block. The page exists only in this
    // transient space, which is dropped once every AP is online.
    let trampoline_access = Access { write: true, execute: true, user: false };
    space
        .map(TRAMPOLINE, orrery_frames::Frame::containing(TRAMPOLINE), trampoline_access, false)
        .expect("identity map of the trampoline page");
    let page = paging::phys_to_virt(TRAMPOLINE) as *mut u8;
    let start = &raw const ap_trampoline_start;
    let length = &raw const ap_trampoline_end as usize - start as usize;
    assert!((length as u64) < PARAMETERS);
    let features = super::cpu::features();
    let mut efer = 1 << 8; // LME
    if features.nx {
        efer |= 1 << 11;
    }
    let mut cr4 = (1 << 5) | (1 << 9) | (1 << 10); // PAE, OSFXSR, OSXMMEXCPT
    if features.global_pages {
        cr4 |= 1 << 7;
    }
    // SAFETY: the trampoline page is reserved low memory that nothing else
    // uses, mapped through the physical window; the copy and the parameter
    // writes happen before any AP is told to start.
    unsafe {
        core::ptr::copy_nonoverlapping(start, page, length);
        let parameters = page.add(PARAMETERS as usize) as *mut u64;
        parameters.write(space.root());
        parameters.add(1).write(entry as usize as u64);
        parameters.add(2).write(efer);
        parameters.add(3).write(stacks.as_ptr() as u64);
        parameters.add(4).write(0);
        parameters.add(5).write(cr4);
    }
    for index in 1..count {
        apic::send_init(apic_id(index));
    }
    // The 10 ms INIT-to-STARTUP delay of the MP specification is for old
    // processors; like Linux, skip it on virtual machines and on family 6
    // and later CPUs, which do not need it.
    let modern =
        features.hypervisor || raw_cpuid::CpuId::new().get_feature_info().is_some_and(|info| info.family_id() >= 6);
    spin_for_micros(if modern { 0 } else { 10_000 });
    for _round in 0..2 {
        for index in 1..count {
            if !is_online(index) {
                apic::send_startup(apic_id(index), (TRAMPOLINE / PAGE_SIZE) as u8);
            }
        }
        spin_for_micros(200);
    }
    let deadline = super::tsc::now() + super::tsc::hz();
    while (1..count).any(|index| !is_online(index)) && super::tsc::now() < deadline {
        core::hint::spin_loop();
    }
    let online = (0..count).filter(|index| is_online(*index)).count();
    // Every AP has left the trampoline's tables once it is online.
    if online == count {
        drop(space);
    } else {
        // A late AP may still be on the transient tables: keep them.
        core::mem::forget(space);
    }
    StartReport { listed: count, online }
}

fn spin_for_micros(micros: u64) {
    let end = super::tsc::now() + super::tsc::hz() / 1_000_000 * micros;
    while super::tsc::now() < end {
        core::hint::spin_loop();
    }
}

/// One queued cross-CPU call.
#[derive(Clone, Copy)]
struct Call {
    function: fn(u64),
    argument: u64,
    /// Incremented by the target when the call has run.
    done: &'static AtomicU32,
}

const INBOX_SIZE: usize = 16;

static INBOXES: [SpinLock<[Option<Call>; INBOX_SIZE]>; MAX_CPUS] =
    [const { SpinLock::new([None; INBOX_SIZE]) }; MAX_CPUS];

/// Runs the calls waiting in this CPU's inbox.
fn serve_inbox() {
    loop {
        let call = INBOXES[cpu_index()].lock().iter_mut().find_map(|slot| slot.take());
        match call {
            Some(call) => {
                (call.function)(call.argument);
                call.done.fetch_add(1, Ordering::Release);
            }
            None => return,
        }
    }
}

fn call_interrupt(_frame: &mut TrapFrame) {
    apic::end_of_interrupt();
    serve_inbox();
}

/// Installs the cross-CPU call handler.
pub fn init_calls() {
    traps::set_handler(traps::CALL_VECTOR, call_interrupt);
    traps::set_handler(traps::TLB_VECTOR, call_interrupt);
}

/// Runs `function(argument)` on every CPU in `targets` (the caller's own CPU
/// runs it directly) and returns once all have. Offline CPUs are skipped.
pub fn call_on(targets: impl Iterator<Item = usize>, function: fn(u64), argument: u64) {
    // The counter must outlive every target's use of it: the caller waits
    // below until each target has incremented it, so a stack counter would
    // do, but the `Call` record needs a `'static` reference; leak-free, it
    // lives in a per-CPU static because a CPU makes one call at a time.
    static DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
    let me = cpu_index();
    let done = &DONE[me];
    done.store(0, Ordering::Relaxed);
    let mut expected = 0;
    let mut run_here = false;
    for target in targets {
        if target == me {
            run_here = true;
            continue;
        }
        if target >= cpu_count() || !is_online(target) {
            continue;
        }
        loop {
            let mut inbox = INBOXES[target].lock();
            if let Some(slot) = inbox.iter_mut().find(|slot| slot.is_none()) {
                *slot = Some(Call { function, argument, done });
                break;
            }
            drop(inbox);
            serve_inbox();
            core::hint::spin_loop();
        }
        apic::send_ipi(apic_id(target), traps::CALL_VECTOR);
        expected += 1;
    }
    if run_here {
        function(argument);
    }
    while done.load(Ordering::Acquire) < expected {
        serve_inbox();
        core::hint::spin_loop();
    }
}

/// Makes every other CPU that has the address space rooted at `root`
/// loaded drop what it cached of its lower half, and returns once each
/// has: the step between removing user mappings of a space that may run
/// elsewhere and reusing their frames. CPUs that load the space later
/// flush as they do (see [`super::pcid::cpus_running`]).
///
/// The caller must not be preempted or migrate meanwhile, and must not
/// hold a lock that another CPU may spin on with interrupts off (that CPU
/// could not take the request); interrupts may be on or off.
pub fn shoot_down_user(root: u64) {
    fn flush(root: u64) {
        if paging::current_root() == root {
            reload_cr3();
        }
    }
    // The page-table change and the generation bump before the look at
    // which CPUs run the space (see `pcid::switch_to`).
    core::sync::atomic::fence(Ordering::SeqCst);
    let me = cpu_index();
    call_on(super::pcid::cpus_running(root).filter(|&cpu| cpu != me), flush, root);
}

/// Flushes translations of a kernel-half range on every CPU (after stacks
/// or other kernel mappings were removed).
pub fn flush_kernel_range(range: Range<u64>) {
    fn flush(argument: u64) {
        // SAFETY: the caller of `call_on` keeps the range alive until every
        // CPU has run this.
        let range = unsafe { &*(argument as *const Range<u64>) };
        flush_local(range.clone());
    }
    call_on(0..cpu_count(), flush, &range as *const Range<u64> as u64);
}

/// Flushes a range from this CPU's TLB, global entries included.
pub fn flush_local(range: Range<u64>) {
    let pages = (range.end - range.start) / PAGE_SIZE;
    if pages <= 64 {
        let mut address = range.start & !(PAGE_SIZE - 1);
        while address < range.end {
            paging::flush_page(address);
            address += PAGE_SIZE;
        }
    } else {
        flush_all_local();
    }
}

/// Flushes this CPU's whole TLB, global entries included (toggling CR4.PGE).
pub fn flush_all_local() {
    super::interrupts::without(|| {
        // SAFETY: clearing and restoring CR4.PGE flushes every TLB entry and
        // changes nothing else.
        unsafe {
            let cr4: u64;
            asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
            if cr4 & (1 << 7) != 0 {
                asm!("mov cr4, {}", in(reg) cr4 & !(1 << 7), options(nostack, preserves_flags));
                asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
            } else {
                reload_cr3();
            }
        }
    });
}

/// Drops this CPU's non-global translations of the current address space.
fn reload_cr3() {
    // SAFETY: reloading CR3 with its own value (bit 63 clear, so with PCID
    // too) drops the current PCID's non-global translations and changes
    // nothing else.
    unsafe { asm!("mov {tmp}, cr3", "mov cr3, {tmp}", tmp = out(reg) _, options(nostack, preserves_flags)) };
}
