//! The local APIC: interrupts acknowledgement, the per-CPU timer and IPIs.
//!
//! x2APIC (MSR access) is used when the CPU has it, xAPIC (memory-mapped
//! registers through the physical window) otherwise; QEMU's TCG offers only
//! the latter, KVM both. The timer runs in TSC-deadline mode when available,
//! so a deadline is one `wrmsr` of an absolute TSC value; otherwise it runs
//! one-shot with a count converted from TSC ticks at a rate measured at
//! boot.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::{instructions::port::Port, registers::model_specific::Msr};

use super::{cpu::features, paging::phys_to_virt, traps};

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const X2APIC_MSR_BASE: u32 = 0x800;

// Register offsets (xAPIC byte offsets; x2APIC MSR = 0x800 + offset / 16).
const ID: u32 = 0x20;
const TASK_PRIORITY: u32 = 0x80;
const EOI: u32 = 0xb0;
const SPURIOUS: u32 = 0xf0;
const ERROR_STATUS: u32 = 0x280;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const LVT_LINT0: u32 = 0x350;
const LVT_LINT1: u32 = 0x360;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
const DELIVERY_STATUS: u32 = 1 << 12;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// APIC timer ticks per TSC tick, as a 32.32 fixed-point number (one-shot mode).
static TIMER_PER_TSC: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn read(register: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the register MSRs exist.
        unsafe { Msr::new(X2APIC_MSR_BASE + register / 16).read() as u32 }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
        // SAFETY: the xAPIC page is mapped uncached in the physical window,
        // and registers are read with 32-bit accesses as required.
        unsafe { core::ptr::read_volatile(address as *const u32) }
    }
}

fn write(register: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the register MSRs exist.
        unsafe { Msr::new(X2APIC_MSR_BASE + register / 16).write(u64::from(value)) };
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) };
    }
}

/// True when the APIC runs in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Masks the legacy 8259 PICs (after moving them off the exception vectors,
/// so a spurious legacy interrupt cannot look like a CPU exception).
pub fn disable_legacy_pic() {
    let mut command1 = Port::<u8>::new(0x20);
    let mut data1 = Port::<u8>::new(0x21);
    let mut command2 = Port::<u8>::new(0xa0);
    let mut data2 = Port::<u8>::new(0xa1);
    // SAFETY: these are the 8259 ports; the initialisation sequence below is
    // the standard one and leaves every line masked.
    unsafe {
        command1.write(0x11);
        command2.write(0x11);
        data1.write(traps::PIC_BASE_VECTOR);
        data2.write(traps::PIC_BASE_VECTOR + 8);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}

/// Enables this CPU's local APIC: x2APIC mode if available, spurious vector,
/// all local interrupt lines masked, timer masked until armed.
pub fn init_local() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the global
    // enable bit (11) and, with x2APIC support, the x2APIC bit (10) is the
    // documented way to switch modes.
    unsafe {
        let mut base = Msr::new(IA32_APIC_BASE);
        let value = base.read();
        if features().x2apic {
            base.write(value | (1 << 11) | (1 << 10));
            X2APIC.store(true, Ordering::Relaxed);
        } else {
            base.write(value | (1 << 11));
            XAPIC_BASE.store(phys_to_virt(value & 0xf_ffff_f000), Ordering::Relaxed);
        }
    }
    write(TASK_PRIORITY, 0);
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, LVT_MASKED);
    write(LVT_ERROR, LVT_MASKED);
    write(LVT_TIMER, LVT_MASKED | u32::from(traps::TIMER_VECTOR));
    write(ERROR_STATUS, 0);
    write(SPURIOUS, (1 << 8) | u32::from(traps::SPURIOUS_VECTOR));
    end_of_interrupt();
    if features().tsc_deadline {
        write(LVT_TIMER, TIMER_TSC_DEADLINE | u32::from(traps::TIMER_VECTOR));
    } else {
        write(TIMER_DIVIDE, 0b1011); // divide by 1
        write(LVT_TIMER, u32::from(traps::TIMER_VECTOR));
    }
}

/// This CPU's APIC id.
pub fn local_id() -> u32 {
    if is_x2apic() { read(ID) } else { read(ID) >> 24 }
}

/// Acknowledges the interrupt being handled.
#[inline]
pub fn end_of_interrupt() {
    write(EOI, 0);
}

/// Measures the one-shot timer rate against the TSC (not needed in
/// TSC-deadline mode). Call on the bootstrap CPU after the TSC is calibrated.
pub fn calibrate_timer() {
    if features().tsc_deadline {
        return;
    }
    write(LVT_TIMER, LVT_MASKED | u32::from(traps::TIMER_VECTOR));
    write(TIMER_INITIAL, u32::MAX);
    let start = super::tsc::now();
    let wait = super::tsc::hz() / 500;
    while super::tsc::now() - start < wait {
        core::hint::spin_loop();
    }
    let elapsed_tsc = super::tsc::now() - start;
    let counted = u64::from(u32::MAX - read(TIMER_CURRENT));
    write(TIMER_INITIAL, 0);
    TIMER_PER_TSC.store((counted << 32) / elapsed_tsc.max(1), Ordering::Relaxed);
    write(LVT_TIMER, u32::from(traps::TIMER_VECTOR));
}

/// Arms this CPU's timer to fire at TSC value `deadline` (at once if it has
/// passed). Replaces any earlier deadline.
pub fn set_deadline(deadline: u64) {
    if features().tsc_deadline {
        // SAFETY: TSC-deadline mode is on; writing the MSR arms the timer.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(deadline.max(1)) };
    } else {
        let delta = deadline.saturating_sub(super::tsc::now()).max(1);
        let count = ((u128::from(delta) * u128::from(TIMER_PER_TSC.load(Ordering::Relaxed))) >> 32) as u64;
        write(TIMER_INITIAL, count.clamp(1, u64::from(u32::MAX)) as u32);
    }
}

/// Disarms this CPU's timer.
pub fn cancel_deadline() {
    if features().tsc_deadline {
        // SAFETY: writing 0 disarms the TSC-deadline timer.
        unsafe { Msr::new(IA32_TSC_DEADLINE).write(0) };
    } else {
        write(TIMER_INITIAL, 0);
    }
}

/// Interrupt-command delivery modes.
#[derive(Clone, Copy)]
enum Delivery {
    Fixed(u8),
    Nmi,
    Init,
    Startup(u8),
}

fn send(destination: u32, delivery: Delivery, all_but_self: bool) {
    let mut low = match delivery {
        Delivery::Fixed(vector) => u32::from(vector),
        Delivery::Nmi => 0b100 << 8,
        Delivery::Init => (0b101 << 8) | (1 << 14),
        Delivery::Startup(page) => (0b110 << 8) | u32::from(page),
    };
    if all_but_self {
        low |= 0b11 << 18;
    }
    super::interrupts::without(|| {
        if is_x2apic() {
            // SAFETY: x2APIC mode: the ICR is one 64-bit MSR and the write
            // sends the IPI.
            unsafe { Msr::new(X2APIC_MSR_BASE + ICR_LOW / 16).write((u64::from(destination) << 32) | u64::from(low)) };
        } else {
            while read(ICR_LOW) & DELIVERY_STATUS != 0 {
                core::hint::spin_loop();
            }
            write(ICR_HIGH, destination << 24);
            write(ICR_LOW, low);
        }
    });
}

/// Sends interrupt `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(apic_id, Delivery::Fixed(vector), false);
}

/// Sends interrupt `vector` to every other CPU.
pub fn send_ipi_all_others(vector: u8) {
    send(0, Delivery::Fixed(vector), true);
}

/// Sends INIT to a CPU (the first step of starting it).
pub fn send_init(apic_id: u32) {
    send(apic_id, Delivery::Init, false);
}

/// Sends a STARTUP IPI: the CPU starts in real mode at `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    send(apic_id, Delivery::Startup(page), false);
}

/// Stops every other CPU with an NMI (used when the kernel goes down, so
/// the report is not interleaved with other output).
pub fn stop_other_cpus() {
    if STOP.swap(true, Ordering::AcqRel) || super::cpu::online_count() <= 1 {
        return;
    }
    if XAPIC_BASE.load(Ordering::Relaxed) != 0 || is_x2apic() {
        send(0, Delivery::Nmi, true);
    }
}

/// True once some CPU asked the others to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Acquire)
}
