//! Traps: the interrupt descriptor table, the entry stubs, and the
//! dispatcher that turns a trap into a call to the right handler.
//!
//! Every vector has a 16-byte stub that pushes a uniform frame (an error
//! code of 0 where the CPU pushes none, then the vector number) and jumps to
//! `trap_common`, which saves the general registers into a [`TrapFrame`] and
//! calls [`trap_dispatch`]. Faults in kernel code either hit an entry of the
//! exception table (the checked user-memory copies and the probes, which
//! then return an error) or are reported with the CPU number, the registers
//! and the faulting address, and stop the machine.

use core::{
    arch::{asm, global_asm},
    fmt,
    mem::size_of,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{cpu_index, gdt};

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0xf0;
/// Vector of the "reschedule / wake up" IPI.
pub const WAKE_VECTOR: u8 = 0xf1;
/// Vector of the "run this function" IPI.
pub const CALL_VECTOR: u8 = 0xf2;
/// Vector of the TLB shoot-down IPI.
pub const TLB_VECTOR: u8 = 0xf3;
/// Vector of the "stop, the machine is going down" IPI.
pub const STOP_VECTOR: u8 = 0xf4;
/// Vector of the "stop here for the debugger" IPI.
pub const DEBUG_VECTOR: u8 = 0xf5;
/// Vector the local APIC delivers spurious interrupts to.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// First vector of the (masked) legacy PIC, remapped away from exceptions.
pub const PIC_BASE_VECTOR: u8 = 0x20;

/// The registers saved on every trap, in the order `trap_common` pushes them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector that was raised.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// All zeros (for statics).
    pub const fn zeroed() -> Self {
        Self {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0,
            vector: 0,
            error_code: 0,
            rip: 0,
            cs: 0,
            rflags: 0,
            rsp: 0,
            ss: 0,
        }
    }

    /// True when the trap interrupted user mode (ring 3).
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x} error={:#x}",
            self.rip, self.cs, self.rflags, self.rsp, self.ss, self.error_code
        )?;
        writeln!(f, "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", self.rax, self.rbx, self.rcx, self.rdx)?;
        writeln!(f, "  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", self.rsi, self.rdi, self.rbp, self.r8)?;
        writeln!(f, "  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", self.r9, self.r10, self.r11, self.r12)?;
        write!(f, "  r13={:#018x} r14={:#018x} r15={:#018x}", self.r13, self.r14, self.r15)
    }
}

/// The CPU exceptions, by vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    DivideError,
    Debug,
    Nmi,
    Breakpoint,
    Overflow,
    BoundRange,
    InvalidOpcode,
    DeviceNotAvailable,
    DoubleFault,
    InvalidTss,
    SegmentNotPresent,
    StackSegment,
    GeneralProtection,
    PageFault,
    X87Floating,
    AlignmentCheck,
    MachineCheck,
    SimdFloating,
    Virtualization,
    ControlProtection,
    Other(u8),
}

impl Exception {
    /// The exception raised on `vector` (< 32).
    pub fn from_vector(vector: u8) -> Self {
        match vector {
            0 => Self::DivideError,
            1 => Self::Debug,
            2 => Self::Nmi,
            3 => Self::Breakpoint,
            4 => Self::Overflow,
            5 => Self::BoundRange,
            6 => Self::InvalidOpcode,
            7 => Self::DeviceNotAvailable,
            8 => Self::DoubleFault,
            10 => Self::InvalidTss,
            11 => Self::SegmentNotPresent,
            12 => Self::StackSegment,
            13 => Self::GeneralProtection,
            14 => Self::PageFault,
            16 => Self::X87Floating,
            17 => Self::AlignmentCheck,
            18 => Self::MachineCheck,
            19 => Self::SimdFloating,
            20 => Self::Virtualization,
            21 => Self::ControlProtection,
            other => Self::Other(other),
        }
    }

    /// The mnemonic (`#PF`).
    pub fn mnemonic(self) -> &'static str {
        match self {
            Self::DivideError => "#DE divide error",
            Self::Debug => "#DB debug",
            Self::Nmi => "NMI",
            Self::Breakpoint => "#BP breakpoint",
            Self::Overflow => "#OF overflow",
            Self::BoundRange => "#BR bound range",
            Self::InvalidOpcode => "#UD invalid opcode",
            Self::DeviceNotAvailable => "#NM device not available",
            Self::DoubleFault => "#DF double fault",
            Self::InvalidTss => "#TS invalid TSS",
            Self::SegmentNotPresent => "#NP segment not present",
            Self::StackSegment => "#SS stack segment",
            Self::GeneralProtection => "#GP general protection",
            Self::PageFault => "#PF page fault",
            Self::X87Floating => "#MF x87 floating point",
            Self::AlignmentCheck => "#AC alignment check",
            Self::MachineCheck => "#MC machine check",
            Self::SimdFloating => "#XM SIMD floating point",
            Self::Virtualization => "#VE virtualisation",
            Self::ControlProtection => "#CP control protection",
            Self::Other(_) => "reserved exception",
        }
    }
}

/// The access a page fault's error code describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFaultAccess {
    /// The page was present (a protection violation), not missing.
    pub present: bool,
    /// The access was a write.
    pub write: bool,
    /// The access came from user mode.
    pub user: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// A reserved bit was set in a paging entry.
    pub reserved_bit: bool,
}

impl PageFaultAccess {
    /// Decodes a #PF error code.
    pub fn from_error_code(code: u64) -> Self {
        Self {
            present: code & 1 != 0,
            write: code & 2 != 0,
            user: code & 4 != 0,
            reserved_bit: code & 8 != 0,
            fetch: code & 16 != 0,
        }
    }
}

impl fmt::Display for PageFaultAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let access = if self.fetch {
            "instruction fetch"
        } else if self.write {
            "write"
        } else {
            "read"
        };
        let cause = if self.reserved_bit {
            "reserved bit set"
        } else if self.present {
            "protection violation"
        } else {
            "page not present"
        };
        let mode = if self.user { "user" } else { "kernel" };
        write!(f, "{mode} {access}, {cause}")
    }
}

/// A fault that a probe or checked copy caught instead of the kernel dying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtFault {
    /// Which exception.
    pub exception: Exception,
    /// The faulting address (CR2) for page faults, otherwise 0.
    pub address: u64,
    /// The page-fault error code, or the CPU's error code.
    pub error_code: u64,
    /// True when the address lies in the guard page of a kernel stack.
    pub guard_page: bool,
}

/// One entry of the exception table: a kernel instruction that may fault on
/// purpose and where to resume if it does.
#[repr(C)]
pub struct ExceptionTableEntry {
    /// Address of the instruction that may fault.
    pub instruction: u64,
    /// Where to continue; the fault is recorded for [`last_caught_fault`].
    pub fixup: u64,
}

unsafe extern "C" {
    static __extable_start: ExceptionTableEntry;
    static __extable_end: ExceptionTableEntry;
    static trap_stubs: u8;
}

fn exception_table() -> &'static [ExceptionTableEntry] {
    // SAFETY: the linker script gathers every `.extable` entry between these
    // two symbols; the entries are 16 bytes each and immutable.
    unsafe {
        let start = &raw const __extable_start;
        let end = &raw const __extable_end;
        let count = (end as usize - start as usize) / size_of::<ExceptionTableEntry>();
        core::slice::from_raw_parts(start, count)
    }
}

/// Per-CPU record of the last fault the exception table caught.
static CAUGHT: [spin::Mutex<Option<CaughtFault>>; super::cpu::MAX_CPUS] =
    [const { spin::Mutex::new(None) }; super::cpu::MAX_CPUS];

/// Takes the record of the last fault a probe or checked copy on this CPU
/// caught.
pub fn last_caught_fault() -> Option<CaughtFault> {
    CAUGHT[cpu_index()].lock().take()
}

/// A function that says whether an address is a kernel stack's guard page
/// (installed by the memory manager).
static GUARD_PAGE_CHECK: AtomicUsize = AtomicUsize::new(0);

/// Installs the guard-page classifier used in fault reports.
pub fn set_guard_page_check(check: fn(u64) -> bool) {
    GUARD_PAGE_CHECK.store(check as usize, Ordering::Release);
}

fn is_guard_page(address: u64) -> bool {
    match GUARD_PAGE_CHECK.load(Ordering::Acquire) {
        0 => false,
        function => {
            // SAFETY: the only values stored are `fn(u64) -> bool` pointers.
            let check = unsafe { core::mem::transmute::<usize, fn(u64) -> bool>(function) };
            check(address)
        }
    }
}

/// Handlers of the non-exception vectors, installed by their owners.
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Installs `handler` for `vector` (32..=255). The handler runs with
/// interrupts off and must acknowledge the interrupt itself.
pub fn set_handler(vector: u8, handler: fn(&mut TrapFrame)) {
    assert!(vector >= 32, "vector {vector} is a CPU exception");
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

/// Called after an interrupt handler when the interrupted kernel code had
/// interrupts enabled (so it holds no spin lock): the scheduler's preemption
/// point.
static PREEMPT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the preemption hook.
pub fn set_preempt_hook(hook: fn()) {
    PREEMPT_HOOK.store(hook as usize, Ordering::Release);
}

/// Takes `#BP` in kernel mode (an `int3` placed in kernel code) when a
/// debugger is attached; returns false to let it be reported as a fault.
static BREAKPOINT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs the kernel-mode breakpoint hook.
pub fn set_breakpoint_hook(hook: fn(&mut TrapFrame) -> bool) {
    BREAKPOINT_HOOK.store(hook as usize, Ordering::Release);
}

/// Interrupt handlers running on each CPU (nesting depth).
static INTERRUPT_DEPTH: [AtomicUsize; super::cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; super::cpu::MAX_CPUS];

/// True while this CPU runs an interrupt handler.
pub fn in_interrupt() -> bool {
    INTERRUPT_DEPTH[cpu_index()].load(Ordering::Relaxed) != 0
}

/// Handles a trap from user mode; installed by the user-mode layer.
static USER_TRAP: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler for every trap that interrupts user mode. It must
/// not return into the user context (it hands the trap back to the
/// dispatcher that entered the context).
pub fn set_user_trap_handler(handler: fn(&mut TrapFrame) -> !) {
    USER_TRAP.store(handler as usize, Ordering::Release);
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([IdtEntry; 256]);

struct IdtCell(core::cell::UnsafeCell<Idt>);

// SAFETY: the IDT is written once by the bootstrap CPU before any other CPU
// runs or loads it, and only read (by the CPUs' trap logic) afterwards.
unsafe impl Sync for IdtCell {}

const EMPTY_GATE: IdtEntry =
    IdtEntry { offset_low: 0, selector: 0, ist: 0, attributes: 0, offset_middle: 0, offset_high: 0, reserved: 0 };

static IDT: IdtCell = IdtCell(core::cell::UnsafeCell::new(Idt([EMPTY_GATE; 256])));

/// Fills the IDT (once, on the bootstrap CPU) and loads it on this CPU.
pub fn init_idt() {
    // `trap_stubs` is the first of 256 16-byte stubs in `.text`.
    let stubs = &raw const trap_stubs as u64;
    // SAFETY: called on the bootstrap CPU before any other CPU runs and before
    // interrupts are enabled, so nothing reads the IDT while it is written.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, entry) in idt.0.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        let ist = match vector {
            8 => gdt::IST_DOUBLE_FAULT,
            2 => gdt::IST_NMI,
            18 => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        // Interrupt gates, so handlers start with interrupts off. Only the
        // breakpoint may be raised from user mode with `int3`.
        let dpl = if vector == 3 { 3 } else { 0 };
        *entry = IdtEntry {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CODE,
            ist,
            attributes: 0x8e | (dpl << 5),
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    load_idt();
}

/// Loads the (already filled) IDT on this CPU.
pub fn load_idt() {
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(IDT.0.get() as u64),
    };
    // SAFETY: the IDT is static, filled before the first CPU loads it, and
    // every entry points at a valid stub.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags)) };
}

global_asm!(
    r#"
    .pushsection .text.traps, "ax"
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if vector == 8 || vector == 10 || vector == 11 || vector == 12 || vector == 13 || vector == 14 || vector == 17 || vector == 21 || vector == 29 || vector == 30
    .else
    push 0
    .endif
    push vector
    jmp trap_common
    .set vector, vector + 1
    .endr

    .balign 16
trap_common:
    /* [rsp]: vector, +8 error, +16 rip, +24 cs, +32 rflags, +40 rsp, +48 ss */
    test byte ptr [rsp + 24], 3
    jz 1f
    swapgs
    /* From user mode: a user-set RFLAGS.AC would switch SMAP off in the
       kernel; clear it (clac exists only where SMAP does). */
    cmp byte ptr [rip + SMAP_ON], 0
    je 1f
    clac
1:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call {dispatch}
    .global trap_return
trap_return:
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    test byte ptr [rsp + 24], 3
    jz 2f
    swapgs
2:
    add rsp, 16
    iretq
    .popsection
    "#,
    dispatch = sym trap_dispatch,
);

/// Reads CR2, the address of the last page fault.
fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// True once SMAP is on (read by the trap stub, which then clears AC).
#[unsafe(no_mangle)]
static SMAP_ON: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Records that SMAP is on, so traps from user mode clear RFLAGS.AC.
pub fn note_smap_enabled() {
    SMAP_ON.store(true, Ordering::Release);
}

/// Runs the handler installed for an interrupt vector (without the
/// preemption point: for traps from user mode, where the dispatcher decides
/// what runs next). An NMI stops the CPU if the machine is going down.
pub fn run_interrupt_handler(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector == 2 {
        if super::apic::stop_requested() {
            super::cpu::halt_forever();
        }
        return;
    }
    let depth = &INTERRUPT_DEPTH[cpu_index()];
    depth.fetch_add(1, Ordering::Relaxed);
    match HANDLERS[usize::from(vector)].load(Ordering::Acquire) {
        0 => super::apic::end_of_interrupt(),
        handler => {
            // SAFETY: only `fn(&mut TrapFrame)` pointers are stored.
            let handler = unsafe { core::mem::transmute::<usize, fn(&mut TrapFrame)>(handler) };
            handler(frame)
        }
    }
    depth.fetch_sub(1, Ordering::Relaxed);
}

/// The address of the last page fault on this CPU (CR2).
pub fn fault_address() -> u64 {
    cr2()
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector == 2 && super::apic::stop_requested() {
        // Before anything that uses GS: an NMI may land between `swapgs` and
        // `sysretq`, with the user's GS.
        super::cpu::halt_forever();
    }
    if frame.from_user() {
        match USER_TRAP.load(Ordering::Acquire) {
            0 => {}
            handler => {
                // SAFETY: only `fn(&mut TrapFrame) -> !` pointers are stored.
                let handler = unsafe { core::mem::transmute::<usize, fn(&mut TrapFrame) -> !>(handler) };
                handler(frame)
            }
        }
    }
    if vector >= 32 {
        let depth = &INTERRUPT_DEPTH[cpu_index()];
        depth.fetch_add(1, Ordering::Relaxed);
        match HANDLERS[usize::from(vector)].load(Ordering::Acquire) {
            0 => {
                log::warn!("unexpected interrupt vector {vector:#x} on cpu{}", cpu_index());
                super::apic::end_of_interrupt();
            }
            handler => {
                // SAFETY: only `fn(&mut TrapFrame)` pointers are stored.
                let handler = unsafe { core::mem::transmute::<usize, fn(&mut TrapFrame)>(handler) };
                handler(frame)
            }
        }
        depth.fetch_sub(1, Ordering::Relaxed);
        // Preempt only code that could take an interrupt anyway: with
        // interrupts on it holds no spin lock.
        const INTERRUPT_FLAG: u64 = 1 << 9;
        if frame.rflags & INTERRUPT_FLAG != 0 {
            match PREEMPT_HOOK.load(Ordering::Acquire) {
                0 => {}
                hook => {
                    // SAFETY: only `fn()` pointers are stored.
                    let hook = unsafe { core::mem::transmute::<usize, fn()>(hook) };
                    hook();
                }
            }
        }
        return;
    }
    let exception = Exception::from_vector(vector);
    let address = if exception == Exception::PageFault { cr2() } else { 0 };
    if exception == Exception::Nmi && super::apic::stop_requested() {
        super::cpu::halt_forever();
    }
    // A kernel instruction listed in the exception table may fault on
    // purpose: resume at its fixup and record what happened.
    if !frame.from_user()
        && let Some(entry) = exception_table().iter().find(|entry| entry.instruction == frame.rip)
    {
        *CAUGHT[cpu_index()].lock() = Some(CaughtFault {
            exception,
            address,
            error_code: frame.error_code,
            guard_page: exception == Exception::PageFault && is_guard_page(address),
        });
        frame.rip = entry.fixup;
        return;
    }
    if exception == Exception::Breakpoint && !frame.from_user() {
        match BREAKPOINT_HOOK.load(Ordering::Acquire) {
            0 => {}
            hook => {
                // SAFETY: only `fn(&mut TrapFrame) -> bool` pointers are stored.
                let hook = unsafe { core::mem::transmute::<usize, fn(&mut TrapFrame) -> bool>(hook) };
                if hook(frame) {
                    return;
                }
            }
        }
    }
    report_and_die(exception, address, frame);
}

fn report_and_die(exception: Exception, address: u64, frame: &TrapFrame) -> ! {
    super::apic::stop_other_cpus();
    let cpu = cpu_index();
    let mode = if frame.from_user() { "user" } else { "kernel" };
    crate::console::write_fmt_panicking(format_args!(
        "\nCPU EXCEPTION on cpu{cpu}: {} in {mode} mode\n",
        exception.mnemonic()
    ));
    if exception == Exception::PageFault || exception == Exception::DoubleFault {
        let fault_address = if exception == Exception::DoubleFault { cr2() } else { address };
        if is_guard_page(fault_address) {
            crate::console::write_fmt_panicking(format_args!(
                "  kernel stack overflow: guard page hit at {fault_address:#x}\n"
            ));
        }
        if exception == Exception::PageFault {
            crate::console::write_fmt_panicking(format_args!(
                "  address {address:#x}: {}\n",
                PageFaultAccess::from_error_code(frame.error_code)
            ));
        } else {
            crate::console::write_fmt_panicking(format_args!("  last page-fault address {fault_address:#x}\n"));
        }
    }
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    crate::console::write_fmt_panicking(format_args!("{frame}\n  cr3={cr3:#x}\n"));
    super::qemu::exit(super::qemu::ExitCode::Failure)
}

/// Reads one byte at `address`, turning a fault into an error instead of a
/// kernel crash. For tests and diagnostics (not for user memory, which goes
/// through the checked copies).
pub fn probe_read(address: u64) -> Result<u8, CaughtFault> {
    let value: u64;
    let faulted: u64;
    // SAFETY: the load is listed in the exception table, so a fault resumes
    // at the fixup with `faulted` set instead of crashing; no memory is
    // written.
    unsafe {
        asm!(
            "xor {faulted:e}, {faulted:e}",
            "2: movzx {value:e}, byte ptr [{address}]",
            "jmp 4f",
            "3: mov {faulted:e}, 1",
            "xor {value:e}, {value:e}",
            "4:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            address = in(reg) address,
            value = out(reg) value,
            faulted = out(reg) faulted,
            options(nostack, readonly),
        );
    }
    if faulted != 0 { Err(last_caught_fault().expect("fixup without a record")) } else { Ok(value as u8) }
}

/// Writes one byte at `address`, turning a fault into an error.
///
/// # Safety
/// If the write succeeds it changes memory: `address` must not hold anything
/// whose owner relies on it.
pub unsafe fn probe_write(address: u64, value: u8) -> Result<(), CaughtFault> {
    let faulted: u64;
    // SAFETY: the store is listed in the exception table, so a fault resumes
    // at the fixup; the caller vouches for the memory if the store succeeds.
    unsafe {
        asm!(
            "xor {faulted:e}, {faulted:e}",
            "2: mov byte ptr [{address}], {value}",
            "jmp 4f",
            "3: mov {faulted:e}, 1",
            "4:",
            ".pushsection .extable, \"a\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            address = in(reg) address,
            value = in(reg_byte) value,
            faulted = out(reg) faulted,
            options(nostack),
        );
    }
    if faulted != 0 { Err(last_caught_fault().expect("fixup without a record")) } else { Ok(()) }
}
