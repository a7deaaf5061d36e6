//! Per-CPU global descriptor tables and task-state segments.
//!
//! Long mode ignores segment bases and limits, so the GDT only carries the
//! privilege levels of the code and data segments, in the order SYSCALL and
//! SYSRET require (see [`USER_BASE_SELECTOR`]), and the TSS, whose job here
//! is to name the stacks the CPU switches to: RSP0 for traps from user mode
//! and the interrupt-stack-table entries for faults that must not run on a
//! possibly broken stack (double fault, NMI, machine check).

use core::{arch::asm, cell::UnsafeCell, mem::size_of};

use x86_64::{VirtAddr, structures::tss::TaskStateSegment};

use super::cpu::MAX_CPUS;

/// Kernel code segment selector.
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DATA: u16 = 0x10;
/// Base for SYSRET: it loads SS from base + 8 and CS from base + 16.
pub const USER_BASE_SELECTOR: u16 = 0x18;
/// User data segment selector (RPL 3).
pub const USER_DATA: u16 = 0x20 | 3;
/// User 64-bit code segment selector (RPL 3).
pub const USER_CODE: u16 = 0x28 | 3;
/// TSS selector.
pub const TSS: u16 = 0x30;

/// IST slot (1-based, as the IDT names it) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

#[repr(C, align(16))]
struct Gdt([u64; 8]);

struct CpuTables {
    gdt: UnsafeCell<Gdt>,
    tss: UnsafeCell<TaskStateSegment>,
}

// SAFETY: each CPU's tables are written by that CPU during its start-up (or
// by the bootstrap CPU before it starts), and afterwards only by the owner.
unsafe impl Sync for CpuTables {}

static TABLES: [CpuTables; MAX_CPUS] =
    [const { CpuTables { gdt: UnsafeCell::new(Gdt([0; 8])), tss: UnsafeCell::new(TaskStateSegment::new()) } };
        MAX_CPUS];

/// The stacks one CPU's TSS names (top addresses; 0 leaves a slot unset).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapStacks {
    /// Stack for traps and interrupts from user mode.
    pub privilege0: u64,
    /// Stack for double faults.
    pub double_fault: u64,
    /// Stack for NMIs.
    pub nmi: u64,
    /// Stack for machine checks.
    pub machine_check: u64,
}

/// Builds and loads CPU `index`'s GDT and TSS, reloads the segment registers
/// and the task register.
///
/// # Safety
/// Must run on CPU `index`, once, before interrupts are enabled on it; the
/// stacks must stay mapped for as long as the CPU runs.
pub unsafe fn load(index: usize, stacks: TrapStacks) {
    let tables = &TABLES[index];
    // SAFETY: per the contract only this CPU touches its tables now.
    let (gdt, tss) = unsafe { (&mut *tables.gdt.get(), &mut *tables.tss.get()) };
    tss.privilege_stack_table[0] = VirtAddr::new(stacks.privilege0);
    tss.interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)] = VirtAddr::new(stacks.double_fault);
    tss.interrupt_stack_table[usize::from(IST_NMI - 1)] = VirtAddr::new(stacks.nmi);
    tss.interrupt_stack_table[usize::from(IST_MACHINE_CHECK - 1)] = VirtAddr::new(stacks.machine_check);
    // No I/O permission bitmap: the offset points past the segment limit.
    tss.iomap_base = size_of::<TaskStateSegment>() as u16;

    let tss_address = tss as *const TaskStateSegment as u64;
    let limit = (size_of::<TaskStateSegment>() - 1) as u64;
    let tss_low = limit
        | ((tss_address & 0xff_ffff) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((tss_address >> 24) & 0xff) << 56);
    gdt.0 = [
        0,
        0x00af_9a00_0000_ffff, // 0x08 kernel code, 64-bit
        0x00cf_9200_0000_ffff, // 0x10 kernel data
        0x00cf_fa00_0000_ffff, // 0x18 user code, 32-bit (unused; keeps SYSRET's layout)
        0x00cf_f200_0000_ffff, // 0x20 user data
        0x00af_fa00_0000_ffff, // 0x28 user code, 64-bit
        tss_low,               // 0x30 TSS
        tss_address >> 32,
    ];
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (size_of::<Gdt>() - 1) as u16,
        base: VirtAddr::new(gdt as *const Gdt as u64),
    };
    // SAFETY: the GDT is static and its entries are valid; CS is reloaded
    // with a far return to the kernel code selector, the data segments with
    // the kernel data selector, and the TSS descriptor is present and not
    // busy (it was just written).
    unsafe {
        asm!("lgdt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));
        asm!(
            "push {code}",
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            code = const KERNEL_CODE as u64,
            data = in(reg) u64::from(KERNEL_DATA),
            scratch = out(reg) _,
        );
        asm!("ltr {:x}", in(reg) TSS, options(nostack, preserves_flags));
    }
}

/// Sets the stack that traps from user mode on this CPU arrive on.
pub fn set_privilege0_stack(top: u64) {
    let tables = &TABLES[super::cpu_index()];
    // SAFETY: only the owning CPU writes its TSS after start-up, and the CPU
    // reads RSP0 only when a trap arrives, which cannot interleave with this
    // store on the same CPU in a way that matters (either value is a valid
    // stack of this CPU).
    unsafe { (*tables.tss.get()).privilege_stack_table[0] = VirtAddr::new(top) };
}
