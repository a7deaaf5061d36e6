//! Orrery: an x86_64 kernel whose heart is its task system.
//!
//! Boot order: [`boot_main`] runs on the bootstrap CPU from the PVH entry in
//! [`arch::boot`]; it brings up the console, traps, memory, the local APIC
//! and the other CPUs (which enter [`ap_main`]), then hands over to the mode
//! the command line asks for: run, test or bench.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod arch;
pub mod bench;
mod benches;
pub mod console;
pub mod debug;
pub mod ktest;
pub mod mm;
pub mod proc;
pub mod sync;
pub mod task;
pub mod tests;
pub mod time;

use alloc::{string::String, vec::Vec};
use core::{panic::PanicInfo, sync::atomic::AtomicBool};

use arch::{apic, cpu, gdt, paging, qemu, smp, start_info::BootInfo, traps, tsc};
use mm::stacks::{self, KernelStack};
use orrery_cmdline::{BootOptions, LogLevel, Mode};

/// Set when the command line says the TSC counts instructions (`icount`).
pub static OPTIONS_ICOUNT: AtomicBool = AtomicBool::new(false);

/// The scheduling period from the command line (`slice_us=`), for tests.
pub static OPTIONS_SLICE_US: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The stacks each CPU uses for traps, made before the CPU starts.
static TRAP_STACKS: sync::SpinLock<Vec<gdt::TrapStacks>> = sync::SpinLock::new(Vec::new());
/// Stacks owned by the application processors for as long as they run.
static AP_STACKS: sync::SpinLock<Vec<KernelStack>> = sync::SpinLock::new(Vec::new());

/// Entry of the bootstrap CPU in 64-bit mode, on the boot stack, with the
/// boot page tables. `start_info` is the physical address of the PVH
/// `hvm_start_info` block.
pub extern "C" fn boot_main(start_info: u32) -> ! {
    let boot_apic_id =
        raw_cpuid::CpuId::new().get_feature_info().map_or(0, |info| u32::from(info.initial_local_apic_id()));
    // SAFETY: this is the bootstrap CPU's first Rust code; index 0 is its.
    unsafe { cpu::install_percpu(0, boot_apic_id) };
    console::init();
    cpu::enable_features();
    // Traps first, so that anything going wrong below is reported.
    // SAFETY: CPU 0, once, before interrupts are enabled; the static stacks
    // live for ever.
    unsafe {
        gdt::load(
            0,
            gdt::TrapStacks {
                privilege0: 0,
                double_fault: stacks::BOOT_DOUBLE_FAULT_STACK.top(),
                nmi: stacks::BOOT_NMI_STACK.top(),
                machine_check: stacks::BOOT_MACHINE_CHECK_STACK.top(),
            },
        )
    };
    traps::init_idt();
    let (hz, source) = tsc::calibrate();
    // SAFETY: `start_info` came from the loader in %ebx and the boot page
    // tables map the first 4 GiB at the physical window.
    let boot_info = match unsafe { BootInfo::read(u64::from(start_info), paging::PHYSMAP_BASE) } {
        Ok(info) => info,
        Err(error) => panic!("bad PVH start info: {error:?}"),
    };
    let options = BootOptions::parse(boot_info.cmdline());
    OPTIONS_ICOUNT.store(options.icount, core::sync::atomic::Ordering::Relaxed);
    OPTIONS_SLICE_US.store(options.slice_us, core::sync::atomic::Ordering::Relaxed);
    console::init_log(match options.log_level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
    log::info!(
        "Orrery booting on cpu0 (APIC id {boot_apic_id}); TSC {}.{:03} MHz ({source:?})",
        hz / 1_000_000,
        hz / 1000 % 1000
    );
    log::info!("command line: {:?}", boot_info.cmdline());
    for problem in options.problems() {
        log::warn!("{problem}; ignored");
    }
    if options.dropped_problems > 0 {
        log::warn!("{} more command-line problems not shown", options.dropped_problems);
    }
    if boot_info.truncated_cmdline > 0 || boot_info.dropped_regions > 0 {
        log::warn!(
            "start info truncated: {} command-line bytes and {} memory regions dropped",
            boot_info.truncated_cmdline,
            boot_info.dropped_regions
        );
    }

    // Memory.
    let layout = paging::image_layout();
    let image_start = layout.boot.0;
    let image_end = layout.data.1 - paging::KERNEL_OFFSET;
    let memory = mm::frames::init(boot_info.regions().copied(), image_start, image_end);
    // SAFETY: CPU 0, once, with the frame allocator ready and nothing else running.
    match unsafe { paging::init_kernel_space(memory.physical_end, &stacks::static_guard_pages()) } {
        Ok(()) => {}
        Err(paging::MapError::OutOfFrames) => {
            stop_for_memory(MIN_FREE_FRAMES, format_args!("the kernel's page tables"))
        }
        Err(error) => panic!("cannot build the kernel address space: {error:?}"),
    }
    // Before anything takes from the heap, whose first growth needs 64
    // frames in a row.
    require_frames(MIN_FREE_FRAMES, format_args!("the kernel's heap and boot"));
    arch::pcid::note_current(paging::kernel_root());
    traps::set_guard_page_check(stacks::is_guard_page);
    log::info!(
        "memory: {} MiB usable, {} free frames, bitmap {} frames, physical end {:#x}",
        (memory.usable_frames * 4096) >> 20,
        mm::frames::free_count(),
        memory.bitmap_frames,
        memory.physical_end
    );
    let features = cpu::features();
    log::info!(
        "cpu features: nx={} smep={} smap={} pcid={} invpcid={} x2apic={} tsc-deadline={} xsave={} avx={} ({} B state)",
        features.nx,
        features.smep,
        features.smap,
        features.pcid,
        features.invpcid,
        features.x2apic,
        features.tsc_deadline,
        features.xsave,
        features.avx,
        cpu::xsave_area_size()
    );

    // Interrupts.
    apic::disable_legacy_pic();
    apic::init_local();
    apic::calibrate_timer();
    time::init();
    smp::init_calls();

    // The other CPUs.
    let mut listed = Vec::new();
    if let Err(error) = arch::acpi::for_each_processor(boot_info.rsdp, |entry| listed.push(entry.apic_id)) {
        log::warn!("no CPU list from ACPI ({error:?}); running on the bootstrap CPU only");
    }
    smp::register_cpus(&listed, boot_apic_id);
    // The CPUs' stacks, and what processes may not take from the kernel.
    let needed = MIN_FREE_FRAMES + mm::frames::reserve() + FRAMES_PER_OTHER_CPU * (smp::cpu_count() as u64 - 1);
    require_frames(needed, format_args!("{} CPUs", smp::cpu_count()));
    start_other_cpus();
    let boot_ticks = smp::all_online_tsc().saturating_sub(tsc::boot_tsc());
    log::info!(
        "{} of {} CPUs online {} us after the first instruction",
        (0..smp::cpu_count()).filter(|cpu| smp::is_online(*cpu)).count(),
        smp::cpu_count(),
        tsc::ticks_to_nanos(boot_ticks) / 1000
    );
    // The 32-bit boot code and boot page tables are no longer used by any CPU.
    let boot_frames = (layout.boot.1 - layout.boot.0) / 4096;
    let released = mm::frames::release_boot_frames(orrery_frames::Frame::containing(layout.boot.0), boot_frames);
    log::info!("released {released} frames of boot code and boot page tables");
    // The task system: every CPU's boot context becomes its dispatcher.
    let mut config = orrery_sched::Config::for_tsc_hz(tsc::hz());
    config.slice_tsc = tsc::nanos_to_ticks(u64::from(options.slice_us) * 1000).max(1);
    let policy = match options.policy {
        orrery_cmdline::PolicyChoice::Fair => orrery_sched::PolicyKind::Fair,
        orrery_cmdline::PolicyChoice::RoundRobin => orrery_sched::PolicyKind::RoundRobin,
    };
    // The bootstrap CPU's stack for traps from user mode.
    {
        let stack = KernelStack::new().expect("memory for the user-trap stack");
        gdt::set_privilege0_stack(stack.top());
        arch::user::set_syscall_stack(stack.top());
        AP_STACKS.lock().push(stack);
    }
    arch::user::init_this_cpu();
    task::init(config, policy, options.trace);
    apic::send_ipi_all_others(traps::WAKE_VECTOR);
    let scheduling = task::wait_for_cpus();
    arch::interrupts::enable();
    log::info!(
        "scheduler running on {scheduling} of {} CPUs: {} policy, {} us slices",
        smp::cpu_count(),
        policy.name(),
        options.slice_us
    );

    // The command line lives on this stack; the main thread gets a copy.
    let (is_test, names) = match options.mode {
        Mode::Test(selection) => (Some(true), String::from(selection.as_str())),
        Mode::Bench(selection) => (Some(false), String::from(selection.as_str())),
        Mode::Run => (None, String::new()),
    };
    let trace = options.trace;
    if options.gdb {
        debug::gdb::init();
    }
    let report = proc::init();
    log::info!(
        "loader: {} programs loaded ({} refused) into {} frames; {} frames of ELF files given back",
        report.loaded,
        report.refused,
        report.program_frames,
        report.released_frames
    );
    task::run_main(move || {
        // With `gdb`: the machine stops here for the debugger, every CPU up
        // and the scheduler running.
        debug::breakpoint();
        let selection = orrery_cmdline::Selection::new(&names);
        let code = match is_test {
            Some(true) => ktest::run(selection),
            Some(false) => bench::run(selection),
            None => run_supervisor(),
        };
        if trace {
            task::trace::dump(smp::cpu_count());
        }
        qemu::exit(code)
    })
}

/// Starts the supervisor (the `init` program) and waits for it; its exit
/// status decides how the run ends.
fn run_supervisor() -> qemu::ExitCode {
    let Some(program) = proc::loader::program("init") else {
        log::error!("no init program in the kernel image");
        return qemu::ExitCode::Failure;
    };
    let supervisor = match proc::Process::create_supervisor(program).map_err(orrery_abi::Error::from) {
        Ok(process) => process,
        Err(error) => {
            log::error!("cannot create the supervisor: {error}");
            return qemu::ExitCode::Failure;
        }
    };
    if let Err(error) = supervisor.start() {
        log::error!("cannot start the supervisor: {error}");
        return qemu::ExitCode::Failure;
    }
    let status = task::join(supervisor.task());
    let exit = supervisor.exit_status();
    log::info!("supervisor ended: {exit:?} ({status:?})");
    if exit == Some(orrery_abi::ExitStatus::Exited(0)) { qemu::ExitCode::Success } else { qemu::ExitCode::Failure }
}

/// Free frames the kernel needs at the start of the other CPUs, besides
/// [`FRAMES_PER_OTHER_CPU`]: the heap's next growth (64 frames), the
/// loader's images and the supervisor's first process. (Measured: the boot
/// goes through with 82 on one CPU; with fewer the loader refuses programs.)
const MIN_FREE_FRAMES: u64 = 96;
/// Frames each CPU besides the first takes at boot: its five guarded
/// stacks of 8 frames (trap, double fault, NMI, machine check, start-up),
/// and a share of their page tables.
const FRAMES_PER_OTHER_CPU: u64 = 44;

/// Stops with a clear error unless `needed` frames are free for `what`: too
/// little memory is the machine's configuration, not a kernel fault, and is
/// said so rather than failing an allocation further on.
fn require_frames(needed: u64, what: core::fmt::Arguments<'_>) {
    if mm::frames::free_count() < needed {
        stop_for_memory(needed, what);
    }
}

/// Reports that `what` needs `needed` frames, more than are free, and stops.
fn stop_for_memory(needed: u64, what: core::fmt::Arguments<'_>) -> ! {
    let free = mm::frames::free_count();
    log::error!(
        "not enough memory: {free} frames ({} KiB) free, {what} need at least {needed} ({} KiB) to start; give \
         the machine more memory",
        free * 4,
        needed * 4
    );
    qemu::exit(qemu::ExitCode::Failure)
}

/// Records CPU 0 as online, prepares the other CPUs' stacks and starts them.
fn start_other_cpus() {
    let count = smp::cpu_count();
    let place = smp::location(0);
    log::info!("cpu0 online: APIC id {}, {place}", smp::apic_id(0));
    smp::mark_online();
    if count <= 1 {
        return;
    }
    let mut trap_stacks = TRAP_STACKS.lock();
    let mut owned = AP_STACKS.lock();
    let mut new_stack = || {
        let stack = KernelStack::new().expect("memory for a CPU's stacks");
        let top = stack.top();
        owned.push(stack);
        top
    };
    trap_stacks.push(gdt::TrapStacks::default());
    for _ in 1..count {
        trap_stacks.push(gdt::TrapStacks {
            privilege0: new_stack(),
            double_fault: new_stack(),
            nmi: new_stack(),
            machine_check: new_stack(),
        });
    }
    let entry_stacks: Vec<u64> = (1..count).map(|_| new_stack()).collect();
    drop(owned);
    drop(trap_stacks);
    let report = smp::start_application_processors(ap_entry, &entry_stacks);
    if report.online < report.listed {
        log::error!("only {} of {} CPUs came online", report.online, report.listed);
    }
}

/// First Rust code of an application processor, on a guarded stack, with
/// the start-up page tables; `_arrival` is its place in the arrival order.
extern "C" fn ap_entry(_arrival: u64) -> ! {
    let apic_id = raw_cpuid::CpuId::new().get_feature_info().map_or(0, |info| u32::from(info.initial_local_apic_id()));
    let Some(index) = smp::index_of_apic_id(apic_id) else { cpu::halt_forever() };
    // SAFETY: the index is this CPU's by its APIC id, used by no other CPU.
    unsafe { cpu::install_percpu(index, apic_id) };
    // SAFETY: this code and stack are mapped in the kernel space.
    unsafe { paging::activate_kernel_space() };
    arch::pcid::note_current(paging::kernel_root());
    cpu::enable_features();
    let stacks = TRAP_STACKS.lock()[index];
    // SAFETY: on CPU `index`, once, interrupts off; the stacks are owned by
    // `AP_STACKS` for ever.
    unsafe { gdt::load(index, stacks) };
    traps::load_idt();
    arch::user::init_this_cpu();
    arch::user::set_syscall_stack(stacks.privilege0);
    apic::init_local();
    log::info!("cpu{index} online: APIC id {apic_id}, {}", smp::location(index));
    smp::mark_online();
    ap_main()
}

/// The application processor's life after start-up: wait for the task
/// system, then run its dispatcher.
fn ap_main() -> ! {
    task::start_application_processor()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    arch::interrupts::disable();
    apic::stop_other_cpus();
    console::write_fmt_panicking(format_args!("\nKERNEL PANIC on cpu{}: {info}\n", arch::cpu_index()));
    print_return_addresses();
    qemu::exit(qemu::ExitCode::Failure)
}

/// Prints the return addresses on the panicking stack, by the frame-pointer
/// chain (the kernel keeps frame pointers), for `addr2line -e` on the
/// kernel image. Stops at the first frame pointer that is not a plausible
/// kernel stack address, so a corrupt chain ends the list, not the report.
fn print_return_addresses() {
    let mut frame: u64;
    // SAFETY: reads the frame-pointer register only.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) frame, options(nomem, nostack, preserves_flags)) };
    console::write_fmt_panicking(format_args!("return addresses:"));
    for _ in 0..24 {
        let plausible = frame.is_multiple_of(8)
            && (paging::KERNEL_STACKS_BASE..paging::KERNEL_STACKS_BASE + paging::KERNEL_STACKS_SIZE).contains(&frame)
            || (paging::KERNEL_OFFSET..u64::MAX - 16).contains(&frame);
        if !plausible {
            break;
        }
        // SAFETY: `frame` is an aligned address in the kernel-stack region
        // or the kernel image (the boot stacks), where this CPU's frames
        // are; a guard page there would fault into the double-fault
        // handler, which reports and stops as this does.
        let (next, ret) = unsafe { (*(frame as *const u64), *((frame + 8) as *const u64)) };
        if ret < paging::KERNEL_OFFSET {
            break;
        }
        console::write_fmt_panicking(format_args!(" {ret:#x}"));
        frame = next;
    }
    console::write_fmt_panicking(format_args!("\n"));
}
