//! Random system calls from user programs (`user/programs/fuzz`): whatever
//! the arguments, the kernel answers, never panics, and once the programs
//! and everything they created are gone, every frame, heap allocation and
//! process record is back.

use alloc::format;

use orrery_abi::ExitStatus;

use super::processes::Footprint;
use crate::{
    arch::{smp, tsc},
    ktest,
    proc::{self, Process, loader},
    task,
};

/// Runs the fuzzer with `seed` for `calls` calls, with the supervisor's
/// rights (so it also creates, sets up, starts and kills children), for at
/// most `budget_ms` of guest time; then ends it and everything it created.
/// Returns how it ended.
fn fuzz(seed: u32, calls: u32, budget_ms: u64) -> Result<ExitStatus, alloc::string::String> {
    let program = loader::program("fuzz").ok_or("no fuzz program")?;
    let argument = u64::from(seed) | u64::from(calls) << 32;
    let process = Process::create_with_supervisor_rights(program, "fuzz", argument).map_err(|e| format!("{e:?}"))?;
    process.start().map_err(|e| format!("start: {e}"))?;
    let deadline = tsc::now() + tsc::hz() / 1000 * budget_ms;
    while !process.is_finished() && tsc::now() < deadline {
        task::sleep_for_nanos(1_000_000);
    }
    // Its children outlive it unless ended too (they may spin or wait for
    // ever); so may theirs.
    let descendants = proc::descendants_of(process.id());
    process.end(ExitStatus::Killed(77));
    task::join(process.task());
    for child in proc::descendants_of(process.id()).into_iter().chain(descendants) {
        child.end(ExitStatus::Killed(78));
        task::join(child.task());
    }
    process.exit_status().ok_or_else(|| "no exit status".into())
}

ktest!(random_system_calls_leave_the_kernel_whole, || {
    const SEEDS: u32 = 16;
    const CALLS: u32 = 2000;
    // Warm-up: the allocators' caches and tables grow to their working size.
    fuzz(0, CALLS, 300)?;
    let before = Footprint::settled();
    let mut finished = 0;
    for seed in 1..=SEEDS {
        match fuzz(seed, CALLS, 300)? {
            ExitStatus::Exited(_) => finished += 1,
            ExitStatus::Killed(77) | ExitStatus::Faulted { .. } => {}
            other => return Err(format!("seed {seed}: ended {other:?}")),
        }
    }
    let after = before.check_nothing_left(&format!("{SEEDS} fuzzing runs"))?;
    crate::println!(
        "ktest-info: {SEEDS} runs of {CALLS} random system calls on {} CPUs: {finished} finished, the rest were \
         ended; free frames {} -> {}, heap allocations {} -> {}",
        smp::cpu_count(),
        before.free_frames,
        after.free_frames,
        before.allocations,
        after.allocations
    );
    Ok(())
});
