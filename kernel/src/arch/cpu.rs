//! Per-CPU identity, CPU features and the control-register set-up.
//!
//! Every CPU's GS base points at its [`ArchCpu`] (in the static
//! [`ARCH_CPUS`] array), so [`cpu_index`] is one GS-relative load. The layers
//! above keep their own per-CPU state in arrays indexed by that number.

use core::{
    arch::asm,
    cell::UnsafeCell,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use raw_cpuid::CpuId;
use x86_64::registers::{
    control::{Cr0, Cr0Flags, Cr4, Cr4Flags},
    model_specific::{Efer, EferFlags, GsBase, KernelGsBase},
    xcontrol::{XCr0, XCr0Flags},
};

/// Most CPUs the kernel drives; CPUs past this are left halted.
pub const MAX_CPUS: usize = 64;

/// Architecture state of one CPU. The first fields are read by assembly at
/// fixed offsets; keep them in this order.
#[repr(C, align(64))]
pub struct ArchCpu {
    /// Address of this structure (offset 0), for `mov reg, gs:[0]`.
    self_pointer: UnsafeCell<u64>,
    /// Index of this CPU, 0 for the bootstrap CPU (offset 8).
    index: UnsafeCell<u32>,
    /// Local APIC id (offset 12).
    apic_id: UnsafeCell<u32>,
    /// Scratch slot for the user stack pointer at syscall entry (offset 16).
    pub(crate) scratch: UnsafeCell<u64>,
    /// Kernel stack pointer to return to when a user context traps (offset 24).
    pub(crate) kernel_rsp: UnsafeCell<u64>,
    /// The user context being executed, or 0 (offset 32).
    pub(crate) user_context: UnsafeCell<u64>,
    /// Top of the stack used by the SYSCALL entry path (offset 40).
    pub(crate) syscall_stack_top: UnsafeCell<u64>,
    /// System calls the running user context may make, one bit each
    /// (offset 48), for the fast path.
    pub(crate) fast_allowed: UnsafeCell<u64>,
    /// An identifier of the running user context's owner (offset 56), for
    /// the fast path.
    pub(crate) fast_owner: UnsafeCell<u64>,
    /// The thread this CPU runs, as the scheduler's opaque pointer (offset
    /// 64; see [`running_thread`]).
    running_thread: UnsafeCell<u64>,
}

// SAFETY: each `ArchCpu` is written by its own CPU (or by the bootstrap CPU
// before the owner starts), and read by others only for plain integers.
unsafe impl Sync for ArchCpu {}

impl ArchCpu {
    const fn new() -> Self {
        Self {
            self_pointer: UnsafeCell::new(0),
            index: UnsafeCell::new(0),
            apic_id: UnsafeCell::new(0),
            scratch: UnsafeCell::new(0),
            kernel_rsp: UnsafeCell::new(0),
            user_context: UnsafeCell::new(0),
            syscall_stack_top: UnsafeCell::new(0),
            fast_allowed: UnsafeCell::new(0),
            fast_owner: UnsafeCell::new(0),
            running_thread: UnsafeCell::new(0),
        }
    }
}

/// The per-CPU architecture blocks, indexed by CPU number.
pub static ARCH_CPUS: [ArchCpu; MAX_CPUS] = [const { ArchCpu::new() }; MAX_CPUS];

/// Number of CPUs that have reached Rust and set up their per-CPU block.
static ONLINE: AtomicU32 = AtomicU32::new(0);

/// Points this CPU's GS base at `ARCH_CPUS[index]` and records its APIC id.
///
/// # Safety
/// Must be called once per CPU, by that CPU, before anything reads
/// [`cpu_index`] on it, with an `index` no other CPU uses.
pub unsafe fn install_percpu(index: usize, apic_id: u32) {
    let block = &ARCH_CPUS[index];
    let address = block as *const ArchCpu as u64;
    // SAFETY: per the contract, no other CPU uses this block yet.
    unsafe {
        *block.self_pointer.get() = address;
        *block.index.get() = index as u32;
        *block.apic_id.get() = apic_id;
    }
    GsBase::write(x86_64::VirtAddr::new(address));
    // The user's GS base until a user context sets its own.
    KernelGsBase::write(x86_64::VirtAddr::new(0));
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

/// Index of the CPU this runs on (0 is the bootstrap CPU).
#[inline(always)]
pub fn cpu_index() -> usize {
    let index: u32;
    // SAFETY: GS points at this CPU's `ArchCpu` from the first instruction of
    // Rust boot code on (see `install_percpu`), and offset 8 is `index`.
    unsafe { asm!("mov {:e}, gs:[8]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    // Always below `MAX_CPUS` (`install_percpu` indexed `ARCH_CPUS` with
    // it); the mask tells the compiler so, and the per-CPU arrays indexed
    // by it need no bounds check: one `and` instead of a compare and branch.
    index as usize & (MAX_CPUS - 1)
}

const _: () = assert!(MAX_CPUS.is_power_of_two(), "cpu_index masks with MAX_CPUS - 1");
const _: () = assert!(core::mem::offset_of!(ArchCpu, running_thread) == 64, "read at gs:[64]");

/// The thread the CPU this runs on runs, as recorded by
/// [`set_running_thread`] (0 before the scheduler starts there).
///
/// One instruction, so a thread that migrates cannot read one CPU's index
/// and another CPU's slot: it reads the slot of the CPU it runs on at that
/// instruction, which is itself.
#[inline(always)]
pub fn running_thread() -> u64 {
    let pointer: u64;
    // SAFETY: GS points at this CPU's `ArchCpu` (see `cpu_index`), and
    // offset 64 is `running_thread`.
    unsafe { asm!("mov {}, gs:[64]", out(reg) pointer, options(nostack, readonly, preserves_flags)) };
    pointer
}

/// Records the thread this CPU runs (the scheduler, at every switch, with
/// interrupts off).
#[inline(always)]
pub fn set_running_thread(pointer: u64) {
    // SAFETY: as in `running_thread`; only this CPU writes its slot.
    unsafe { asm!("mov gs:[64], {}", in(reg) pointer, options(nostack, preserves_flags)) };
}

/// Local APIC id of CPU `index`, as recorded when it came online.
pub fn apic_id_of(index: usize) -> u32 {
    // SAFETY: written once before the CPU came online and never again.
    unsafe { *ARCH_CPUS[index].apic_id.get() }
}

/// The CPUs that have installed their per-CPU block.
pub fn online_count() -> usize {
    ONLINE.load(Ordering::Acquire) as usize
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        super::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Features the kernel uses when present.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Execute-disable bit in page tables.
    pub nx: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention (needs `stac`/`clac`).
    pub smap: bool,
    /// Process-context identifiers in CR3.
    pub pcid: bool,
    /// The `invpcid` instruction.
    pub invpcid: bool,
    /// 1 GiB pages.
    pub huge_1g: bool,
    /// Global pages.
    pub global_pages: bool,
    /// x2APIC mode of the local APIC.
    pub x2apic: bool,
    /// TSC-deadline mode of the local APIC timer.
    pub tsc_deadline: bool,
    /// The TSC runs at a constant rate in all power states.
    pub invariant_tsc: bool,
    /// `xsave`/`xrstor`.
    pub xsave: bool,
    /// `xsaveopt`.
    pub xsaveopt: bool,
    /// AVX state (YMM upper halves) can be enabled in XCR0.
    pub avx: bool,
    /// `rdtscp` (and `IA32_TSC_AUX`).
    pub rdtscp: bool,
    /// `fsgsbase` instructions.
    pub fsgsbase: bool,
    /// Running under a hypervisor (CPUID.1:ECX[31]).
    pub hypervisor: bool,
    /// Bytes `xsave` writes for the enabled state components.
    pub xsave_size: u32,
}

static FEATURES: spin::Once<Features> = spin::Once::new();
static SMAP_ENABLED: AtomicBool = AtomicBool::new(false);

/// The features of the bootstrap CPU, read once (all CPUs are assumed alike,
/// as they are in QEMU).
pub fn features() -> &'static Features {
    FEATURES.call_once(|| {
        let cpuid = CpuId::new();
        let info = cpuid.get_feature_info();
        let extended = cpuid.get_extended_feature_info();
        let processor = cpuid.get_extended_processor_and_feature_identifiers();
        let power = cpuid.get_advanced_power_mgmt_info();
        let mut features = Features {
            nx: processor.as_ref().is_some_and(|p| p.has_execute_disable()),
            smep: extended.as_ref().is_some_and(|e| e.has_smep()),
            smap: extended.as_ref().is_some_and(|e| e.has_smap()),
            pcid: info.as_ref().is_some_and(|i| i.has_pcid()),
            invpcid: extended.as_ref().is_some_and(|e| e.has_invpcid()),
            huge_1g: processor.as_ref().is_some_and(|p| p.has_1gib_pages()),
            global_pages: info.as_ref().is_some_and(|i| i.has_pge()),
            x2apic: info.as_ref().is_some_and(|i| i.has_x2apic()),
            tsc_deadline: info.as_ref().is_some_and(|i| i.has_tsc_deadline()),
            invariant_tsc: power.as_ref().is_some_and(|p| p.has_invariant_tsc()),
            xsave: info.as_ref().is_some_and(|i| i.has_xsave()),
            xsaveopt: false,
            avx: info.as_ref().is_some_and(|i| i.has_avx()),
            rdtscp: processor.as_ref().is_some_and(|p| p.has_rdtscp()),
            fsgsbase: extended.as_ref().is_some_and(|e| e.has_fsgsbase()),
            hypervisor: info.as_ref().is_some_and(|i| i.has_hypervisor()),
            xsave_size: 512,
        };
        if let Some(state) = cpuid.get_extended_state_info() {
            features.xsaveopt = state.has_xsaveopt();
        }
        features
    })
}

/// True once SMAP is on, so user-memory access must be bracketed by `stac`.
pub fn smap_enabled() -> bool {
    SMAP_ENABLED.load(Ordering::Relaxed)
}

/// Turns on the protection and state features this CPU has: NX, write
/// protection in ring 0, SMEP, SMAP, PCID, global pages, SSE and XSAVE state.
/// Called on every CPU during its start-up.
pub fn enable_features() {
    let features = *features();
    // SAFETY: each flag is set only when CPUID reports the feature, and the
    // kernel is written to run with all of them (no ring-0 access to user
    // pages outside `stac`, NX bits only when NXE is on).
    unsafe {
        if features.nx {
            Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE | EferFlags::SYSTEM_CALL_EXTENSIONS));
        } else {
            Efer::update(|flags| flags.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        }
        Cr0::update(|flags| {
            flags.insert(Cr0Flags::WRITE_PROTECT | Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
            flags.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
        });
        let mut cr4 = Cr4::read();
        cr4.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
        if features.global_pages {
            cr4.insert(Cr4Flags::PAGE_GLOBAL);
        }
        if features.smep {
            cr4.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
        }
        if features.smap {
            cr4.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
        }
        if features.pcid {
            // CR4.PCIDE may only be set while CR3[11:0] is 0, which it is: the
            // kernel runs its own page tables with PCID 0 at this point.
            cr4.insert(Cr4Flags::PCID);
        }
        if features.xsave {
            cr4.insert(Cr4Flags::OSXSAVE);
        }
        Cr4::write(cr4);
        if features.xsave {
            let mut xcr0 = XCr0Flags::X87 | XCr0Flags::SSE;
            if features.avx {
                xcr0 |= XCr0Flags::AVX;
            }
            // Written without the read-back `XCr0::write` does to check the
            // new value against the old: XGETBV is not emulated by every
            // hypervisor, and the value is valid by construction (x87 always,
            // AVX only with SSE, each only when CPUID reports it).
            XCr0::write_raw(xcr0.bits());
        }
    }
    if features.smap {
        SMAP_ENABLED.store(true, Ordering::Relaxed);
        super::traps::note_smap_enabled();
    }
}

/// Size of the XSAVE area for the state components enabled in XCR0 (valid
/// after [`enable_features`]).
pub fn xsave_area_size() -> usize {
    if !features().xsave {
        return 512;
    }
    CpuId::new().get_extended_state_info().map_or(512, |state| state.xsave_area_size_enabled_features() as usize)
}
