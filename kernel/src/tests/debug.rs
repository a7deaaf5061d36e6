//! The GDB stub. Without the `gdb` word a breakpoint costs a flag test and
//! nothing else; with it (the harness's `the_gdb_stub_shows_threads_and_their_address_spaces`
//! attaches a debugger) a thread with its own address space stops at one,
//! with a marker in its task-set area that only its space maps, while one
//! user process (`spinner`) waits in a system call and another
//! (`busy-spinner`) runs in user mode on the last CPU.

use alloc::format;

use orrery_proc::ProcState;

use super::processes::{create, end_and_join};
use crate::{
    arch::{smp, tsc},
    check, check_eq, debug, ktest,
    proc::{Process, loader},
    task::{self, Builder, CpuSet, ExitStatus, TaskSet, domain::TASK_SET_AREA},
};

/// What the stopped thread leaves in its task-set area for the debugger.
pub const MARKER: &[u8; 16] = b"orrery-gdb-stub!";

ktest!(breakpoints_stop_only_for_a_debugger, || {
    // A user thread for the debugger to see: `spinner` sleeping in a loop.
    let spinner = create("spinner", 1)?;
    spinner.start().map_err(|e| format!("{e}"))?;
    let deadline = tsc::now() + tsc::hz() * 10;
    while spinner.state() != ProcState::Waiting && tsc::now() < deadline {
        task::sleep_for_nanos(1_000_000);
    }
    check_eq!(spinner.state(), ProcState::Waiting, "spinner waits in a system call");
    // And one running in user mode on the last CPU when the machine stops
    // (from CPU 0): `spinner` in its busy loop.
    let last = smp::cpu_count() - 1;
    let program = loader::program("spinner").ok_or("no spinner program")?;
    let busy = Process::create(program, "busy-spinner", 0, 0).map_err(|e| format!("{e:?}"))?;
    busy.start_on(CpuSet::only(last)).map_err(|e| format!("{e}"))?;
    while busy.state() != ProcState::RunningS && tsc::now() < deadline {
        task::sleep_for_nanos(1_000_000);
    }
    let set = TaskSet::new(1).map_err(|e| format!("{e:?}"))?;
    let target = Builder::new("gdb-target")
        .own_address_space()
        .task_set(set)
        .cpus(CpuSet::only(0))
        .spawn(|| {
            let area = TASK_SET_AREA as *mut [u8; 16];
            // SAFETY: the task-set area is mapped, writable, in this task's
            // space, and nothing else of this test uses it.
            unsafe { area.write_volatile(*MARKER) };
            // Stops the machine with this thread's space selected when the
            // stub is on; returns at once when it is off.
            debug::breakpoint();
            // SAFETY: as above.
            let after = unsafe { area.read_volatile() };
            if after != *MARKER {
                task::exit_task(1);
            }
        })
        .map_err(|e| format!("{e:?}"))?;
    // Without a debugger, reaching this line is the check: a breakpoint
    // raised then would be reported as a kernel fault and end the run.
    check_eq!(target.join(), ExitStatus::Exited(0), "the thread that stopped went on and found its marker");
    if debug::gdb::enabled() {
        // The debugger interrupts the running machine once more (Ctrl-C).
        let stops = debug::gdb::stops();
        let deadline = tsc::now() + tsc::hz() * 60;
        while debug::gdb::stops() == stops && tsc::now() < deadline {
            task::sleep_for_nanos(1_000_000);
        }
        check!(debug::gdb::stops() > stops, "the debugger's Ctrl-C stopped the machine");
    }
    end_and_join(&spinner, orrery_abi::ExitStatus::Killed(0));
    end_and_join(&busy, orrery_abi::ExitStatus::Killed(0));
    Ok(())
});
