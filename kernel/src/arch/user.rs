//! Entering and leaving user mode: a user context is data, and the CPU
//! enters it with [`execute`], which returns why it came back.
//!
//! This is Hermit's first design (issue #787): the dispatcher of each CPU
//! calls `execute(&mut context)`; the context runs in ring 3 until it traps —
//! a `syscall`, an interrupt, or a fault — and `execute` returns the
//! [`Trap`]. No kernel stack stays behind a user context while it does not
//! run: its registers live in its [`UserContext`], and `execute` runs on the
//! dispatcher's stack.
//!
//! Mechanics. `execute` saves the dispatcher's callee-saved registers on its
//! stack and records the stack pointer and the context in the per-CPU block
//! (offsets 24 and 32, see [`super::cpu::ArchCpu`]); it then loads the
//! user registers and leaves with `sysretq` (after a system call: `rcx` and
//! `r11` are the caller's to lose) or `iretq` (after an interrupt or fault,
//! where every register must come back). The `syscall` entry stores the user
//! registers straight into the context and returns from `execute`; a trap
//! from ring 3 goes through the IDT stub onto the per-CPU entry stack (TSS
//! RSP0), and [`user_trap`] copies the frame into the context, runs the
//! interrupt's handler, and returns from `execute` the same way.
//!
//! The SYSRET hazards: `sysretq` to a non-canonical `rcx` faults in ring 0 on
//! the user's stack, so only user-half addresses ever reach it (a context
//! whose `rip` is not one is refused); RFLAGS comes from the context and is
//! sanitised (interrupts on, IOPL 0, no trap, nested-task, resume or AC
//! flag); the user's RSP is loaded with interrupts off right before the
//! `sysretq`. On every entry from user mode the kernel clears RFLAGS.AC
//! (`clac`), so a user-set AC cannot switch SMAP off for the kernel.

use core::{arch::global_asm, mem::offset_of};

use super::{
    gdt,
    traps::{self, Exception, TrapFrame},
};

/// The registers of a user context, and why it last left user mode.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct UserContext {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    /// How the context left user mode last: [`ENTERED_BY_SYSCALL`] lets the
    /// next entry use `sysretq`.
    pub entry: u64,
    /// Vector of the last interrupt or exception.
    pub vector: u64,
    /// Its error code.
    pub error_code: u64,
    /// CR2 of the last page fault.
    pub fault_address: u64,
}

/// `UserContext::entry` after a `syscall`.
pub const ENTERED_BY_SYSCALL: u64 = 1;
/// `UserContext::entry` after an interrupt, a fault, or before the first run.
pub const ENTERED_BY_TRAP: u64 = 0;

/// Why [`execute`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// The context made a system call: number in `rax`, arguments in `rdi`,
    /// `rsi`, `rdx`, `r10`, `r8`, `r9`; the result goes back in `rax`.
    Syscall,
    /// An interrupt arrived (its handler has already run).
    Interrupt(u8),
    /// The context faulted.
    Exception {
        /// Which exception.
        exception: Exception,
        /// The CPU's error code.
        error_code: u64,
        /// CR2 for page faults, else 0.
        address: u64,
    },
}

const TRAP_SYSCALL: u64 = 0;
const TRAP_INTERRUPT: u64 = 1;

/// First address above user space (a `rip` at or above it is refused).
pub const USER_END: u64 = 0x0000_8000_0000_0000;

const RFLAGS_INTERRUPT: u64 = 1 << 9;
/// Flags a user context may set: CF, PF, AF, ZF, SF, DF, OF, and ID (bit 21).
const RFLAGS_USER_MASK: u64 = 0b1 | (1 << 2) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 10) | (1 << 11) | (1 << 21);
/// Bit 1 of RFLAGS always reads 1.
const RFLAGS_RESERVED: u64 = 1 << 1;

impl UserContext {
    /// A context that starts at `entry` with stack pointer `stack` and
    /// `argument` in `rdi`.
    pub fn new(entry: u64, stack: u64, argument: u64) -> Self {
        Self { rip: entry, rsp: stack, rdi: argument, rflags: RFLAGS_INTERRUPT | RFLAGS_RESERVED, ..Self::default() }
    }

    /// The system-call number and arguments.
    pub fn syscall_arguments(&self) -> (u64, [u64; 6]) {
        (self.rax, [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9])
    }

    /// Sets the system call's result.
    pub fn set_return(&mut self, value: u64) {
        self.rax = value;
    }
}

unsafe extern "C" {
    fn execute_raw(context: *mut UserContext) -> u64;
}

/// Runs `context` in user mode until it traps; returns why.
///
/// Interrupts must be off on entry (the dispatcher calls this with them
/// off); they are on while the context runs and off again on return.
pub fn execute(context: &mut UserContext) -> Trap {
    if context.rip >= USER_END {
        // Only the kernel writes `rip` besides the CPU, and the CPU never
        // leaves a user context there; refuse rather than `sysretq` to it.
        return Trap::Exception { exception: Exception::GeneralProtection, error_code: 0, address: context.rip };
    }
    context.rflags = (context.rflags & RFLAGS_USER_MASK) | RFLAGS_INTERRUPT | RFLAGS_RESERVED;
    // SAFETY: the context's instruction pointer is in the user half and its
    // flags are sanitised, so neither `sysretq` nor `iretq` can fault in
    // ring 0; `execute_raw` returns on this stack when the context traps
    // (the per-CPU block records where), with the context updated.
    let kind = unsafe { execute_raw(context) };
    match kind {
        TRAP_SYSCALL => Trap::Syscall,
        TRAP_INTERRUPT => Trap::Interrupt(context.vector as u8),
        _ => Trap::Exception {
            exception: Exception::from_vector(context.vector as u8),
            error_code: context.error_code,
            address: context.fault_address,
        },
    }
}

// `execute_raw(context)`: save the dispatcher's state, enter the context.
global_asm!(
    r#"
    .pushsection .text.user, "ax"
    .balign 16
    .global execute_raw
execute_raw:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov gs:[24], rsp
    mov gs:[32], rdi
    cmp qword ptr [rdi + {entry}], {by_syscall}
    jne 2f

    /* sysretq: rcx = rip, r11 = rflags; rcx and r11 themselves are lost. */
    mov rcx, [rdi + {rip}]
    mov r11, [rdi + {rflags}]
    mov rax, [rdi + {rax}]
    mov rbx, [rdi + {rbx}]
    mov rdx, [rdi + {rdx}]
    mov rsi, [rdi + {rsi}]
    mov rbp, [rdi + {rbp}]
    mov r8, [rdi + {r8}]
    mov r9, [rdi + {r9}]
    mov r10, [rdi + {r10}]
    mov r12, [rdi + {r12}]
    mov r13, [rdi + {r13}]
    mov r14, [rdi + {r14}]
    mov r15, [rdi + {r15}]
    mov rsp, [rdi + {rsp}]
    mov rdi, [rdi + {rdi}]
    swapgs
    sysretq

2:  /* iretq: every register comes back. */
    push {user_data}
    push qword ptr [rdi + {rsp}]
    push qword ptr [rdi + {rflags}]
    push {user_code}
    push qword ptr [rdi + {rip}]
    mov rax, [rdi + {rax}]
    mov rbx, [rdi + {rbx}]
    mov rcx, [rdi + {rcx}]
    mov rdx, [rdi + {rdx}]
    mov rsi, [rdi + {rsi}]
    mov rbp, [rdi + {rbp}]
    mov r8, [rdi + {r8}]
    mov r9, [rdi + {r9}]
    mov r10, [rdi + {r10}]
    mov r11, [rdi + {r11}]
    mov r12, [rdi + {r12}]
    mov r13, [rdi + {r13}]
    mov r14, [rdi + {r14}]
    mov r15, [rdi + {r15}]
    mov rdi, [rdi + {rdi}]
    swapgs
    iretq

    /* The `syscall` entry (IA32_LSTAR). Interrupts are off (FMASK), GS is
       the user's, RSP the user's. */
    .balign 16
    .global syscall_entry
syscall_entry:
    swapgs
    mov gs:[16], rsp
    /* Fast path: the calls in FAST_SYSCALLS need neither the dispatcher
       nor the saved context; they are answered here, on the per-CPU entry
       stack, and return with sysretq at once. The ABI lets a system call
       clobber every caller-saved register, so only rcx and r11 (rip and
       rflags) are kept; the others are zeroed before the return, so no
       kernel value reaches user mode. A return address that is not
       canonical (sysretq would fault in ring 0) takes the slow path, which
       refuses it. */
    mov rsp, gs:[40]
    push rcx
    push r11
    cmp rax, 63
    ja 2f
    mov r11, rcx
    shr r11, 47
    jnz 2f
    mov r11, [rip + FAST_SYSCALLS]
    bt r11, rax
    jnc 2f
    mov r8, rax
    mov rcx, r10
    call {fast}
    pop r11
    pop rcx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    mov rsp, gs:[16]
    swapgs
    sysretq
2:  pop r11
    pop rcx
    mov rsp, gs:[32]
    mov [rsp + {rax}], rax
    mov [rsp + {rdx}], rdx
    mov [rsp + {rsi}], rsi
    mov [rsp + {rdi}], rdi
    mov [rsp + {r8}], r8
    mov [rsp + {r9}], r9
    mov [rsp + {r10}], r10
    mov [rsp + {rbx}], rbx
    mov [rsp + {rbp}], rbp
    mov [rsp + {r12}], r12
    mov [rsp + {r13}], r13
    mov [rsp + {r14}], r14
    mov [rsp + {r15}], r15
    mov [rsp + {rip}], rcx
    mov [rsp + {rflags}], r11
    mov [rsp + {rcx}], rcx
    mov [rsp + {r11}], r11
    mov rax, gs:[16]
    mov [rsp + {rsp}], rax
    mov qword ptr [rsp + {entry}], {by_syscall}
    mov eax, {trap_syscall}
    jmp return_from_user

    /* Back onto the dispatcher's stack, out of `execute_raw`. */
    .balign 16
    .global return_from_user
return_from_user:
    mov rsp, gs:[24]
    mov qword ptr gs:[32], 0
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .popsection
    "#,
    rax = const offset_of!(UserContext, rax),
    rbx = const offset_of!(UserContext, rbx),
    rcx = const offset_of!(UserContext, rcx),
    rdx = const offset_of!(UserContext, rdx),
    rsi = const offset_of!(UserContext, rsi),
    rdi = const offset_of!(UserContext, rdi),
    rbp = const offset_of!(UserContext, rbp),
    rsp = const offset_of!(UserContext, rsp),
    r8 = const offset_of!(UserContext, r8),
    r9 = const offset_of!(UserContext, r9),
    r10 = const offset_of!(UserContext, r10),
    r11 = const offset_of!(UserContext, r11),
    r12 = const offset_of!(UserContext, r12),
    r13 = const offset_of!(UserContext, r13),
    r14 = const offset_of!(UserContext, r14),
    r15 = const offset_of!(UserContext, r15),
    rip = const offset_of!(UserContext, rip),
    rflags = const offset_of!(UserContext, rflags),
    entry = const offset_of!(UserContext, entry),
    by_syscall = const ENTERED_BY_SYSCALL,
    trap_syscall = const TRAP_SYSCALL,
    fast = sym fast_syscall,
    user_data = const gdt::USER_DATA as u64,
    user_code = const gdt::USER_CODE as u64,
);

/// A fast system-call handler: `(arguments, number, allowed, owner)`, with
/// the running context's allowed set and owner id (see
/// [`set_fast_context`]); returns the value for `rax`. Runs with interrupts
/// off on the entry stack: it must not block or fault.
pub type FastHandler = fn([u64; 4], u64, u64, u64) -> u64;

static FAST_HANDLER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The system-call numbers (one bit each, below 64) the fast path answers;
/// read by the entry stub.
#[unsafe(no_mangle)]
static FAST_SYSCALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Installs the fast system-call handler for the calls in `numbers` (a bit
/// set).
pub fn set_fast_handler(handler: FastHandler, numbers: u64) {
    FAST_HANDLER.store(handler as usize, core::sync::atomic::Ordering::Release);
    FAST_SYSCALLS.store(numbers, core::sync::atomic::Ordering::Release);
}

extern "C" fn fast_syscall(a0: u64, a1: u64, a2: u64, a3: u64, number: u64) -> u64 {
    let handler = FAST_HANDLER.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: only `FastHandler` pointers are stored, before any number is
    // in FAST_SYSCALLS (so the stub never calls here before).
    let handler = unsafe { core::mem::transmute::<usize, FastHandler>(handler) };
    let (allowed, owner): (u64, u64);
    // SAFETY: GS is the kernel's here; offsets 48 and 56 of the per-CPU block
    // hold the running context's allowed set and owner.
    unsafe {
        core::arch::asm!("mov {}, gs:[48]", out(reg) allowed, options(nostack, readonly, preserves_flags));
        core::arch::asm!("mov {}, gs:[56]", out(reg) owner, options(nostack, readonly, preserves_flags));
    }
    handler([a0, a1, a2, a3], number, allowed, owner)
}

/// Records, for the fast path, what the context about to be executed on
/// this CPU may call and who owns it.
pub fn set_fast_context(allowed: u64, owner: u64) {
    let cpu = &super::cpu::ARCH_CPUS[super::cpu_index()];
    // SAFETY: only this CPU writes its block, with interrupts off (the
    // dispatcher calls this right before `execute`).
    unsafe {
        *cpu.fast_allowed.get() = allowed;
        *cpu.fast_owner.get() = owner;
    }
}

/// Sets the stack the fast path runs on (the CPU's entry stack).
pub fn set_syscall_stack(top: u64) {
    let cpu = &super::cpu::ARCH_CPUS[super::cpu_index()];
    // SAFETY: this CPU's block, written at start-up before any user context
    // runs here.
    unsafe { *cpu.syscall_stack_top.get() = top };
}

unsafe extern "C" {
    fn syscall_entry();
    fn return_from_user_with(kind: u64) -> !;
}

// `return_from_user_with(kind)`: for traps taken through the IDT.
global_asm!(
    r#"
    .pushsection .text.user, "ax"
    .balign 16
    .global return_from_user_with
return_from_user_with:
    mov rax, rdi
    jmp return_from_user
    .popsection
    "#
);

/// Handles every trap that interrupted user mode: copies the frame into the
/// running context, runs an interrupt's handler, and returns from `execute`.
fn user_trap(frame: &mut TrapFrame) -> ! {
    let context = current_context();
    // SAFETY: the per-CPU block holds the context `execute` entered, which
    // lives on the dispatcher's side until `execute` returns; this CPU is the
    // only one touching it now.
    let context = unsafe { &mut *context };
    context.rax = frame.rax;
    context.rbx = frame.rbx;
    context.rcx = frame.rcx;
    context.rdx = frame.rdx;
    context.rsi = frame.rsi;
    context.rdi = frame.rdi;
    context.rbp = frame.rbp;
    context.r8 = frame.r8;
    context.r9 = frame.r9;
    context.r10 = frame.r10;
    context.r11 = frame.r11;
    context.r12 = frame.r12;
    context.r13 = frame.r13;
    context.r14 = frame.r14;
    context.r15 = frame.r15;
    context.rip = frame.rip;
    context.rsp = frame.rsp;
    context.rflags = frame.rflags;
    context.entry = ENTERED_BY_TRAP;
    context.vector = frame.vector;
    context.error_code = frame.error_code;
    let vector = frame.vector as u8;
    let kind = if vector >= 32 || vector == 2 {
        traps::run_interrupt_handler(frame);
        TRAP_INTERRUPT
    } else {
        context.fault_address = if vector == 14 { traps::fault_address() } else { 0 };
        2
    };
    // SAFETY: `execute` is waiting for this CPU on the dispatcher's stack,
    // recorded in the per-CPU block; the entry stack this runs on is
    // abandoned, which is fine: the next trap starts it afresh.
    unsafe { return_from_user_with(kind) }
}

fn current_context() -> *mut UserContext {
    let pointer: u64;
    // SAFETY: GS is the kernel's (the trap stub swapped it); offset 32 of
    // the per-CPU block is the context being executed.
    unsafe { core::arch::asm!("mov {}, gs:[32]", out(reg) pointer, options(nostack, readonly, preserves_flags)) };
    pointer as *mut UserContext
}

/// Sets up SYSCALL/SYSRET on this CPU and installs the user-trap handler.
pub fn init_this_cpu() {
    use x86_64::registers::model_specific::Msr;
    const STAR: u32 = 0xc000_0081;
    const LSTAR: u32 = 0xc000_0082;
    const FMASK: u32 = 0xc000_0084;
    // Cleared on `syscall`: TF, IF, DF, NT, AC.
    let mask: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18);
    let star = (u64::from(gdt::USER_BASE_SELECTOR) << 48) | (u64::from(gdt::KERNEL_CODE) << 32);
    // SAFETY: these MSRs configure `syscall`; the entry point is the stub
    // above and the selectors match the GDT layout SYSRET expects.
    unsafe {
        Msr::new(STAR).write(star);
        Msr::new(LSTAR).write(syscall_entry as *const () as usize as u64);
        Msr::new(FMASK).write(mask);
    }
    traps::set_user_trap_handler(user_trap);
}
