//! Tests of user processes: the dispatcher's `execute`, system calls and
//! their checks, faults, isolation, mailboxes, the loader, lifetime.

use alloc::{format, sync::Arc, vec::Vec};

use orrery_abi::{ExitStatus, FaultKind, USER_MAP_BASE, USER_SHARED_BASE, USER_STACK_TOP};
use orrery_proc::ProcState;

use crate::{
    arch::{paging, smp, traps},
    check, check_eq, ktest,
    mm::{frames, heap, stacks},
    proc::{self, Handle, Process, loader, mailbox::MailboxObject},
    task::{self, CpuSet, scheduler},
};

fn run(name: &str, argument: u64) -> Result<Option<ExitStatus>, alloc::string::String> {
    let process = proc::spawn(name, argument).map_err(|e| format!("spawn {name}: {e}"))?;
    task::join(process.task());
    Ok(process.exit_status())
}

/// Creates a process from the program `name`, CREATED, the kernel its parent.
pub(super) fn create(name: &str, argument: u64) -> Result<Arc<Process>, alloc::string::String> {
    let program = loader::program(name).ok_or_else(|| format!("no program {name}"))?;
    Process::create(program, name, 0, argument).map_err(|e| format!("create {name}: {e:?}"))
}

ktest!(user_program_runs_and_exits, || {
    check_eq!(run("hello", 0)?, Some(ExitStatus::Exited(0)));
    Ok(())
});

ktest!(bad_pointers_get_errors_not_faults, || {
    // The program checks each call's error itself and exits with the
    // number of mismatches; the kernel must survive every call.
    check_eq!(run("bad-pointers", 0)?, Some(ExitStatus::Exited(0)));
    Ok(())
});

ktest!(untouched_stack_pages_can_be_shared, || {
    // `bad-pointers` in its sharing mode shares the lowest two pages of its
    // stack, which nothing has touched, into a child it holds at handle 0,
    // checks process_share's errors with that real handle, starts the child
    // and waits for it (see the program).
    const CHILD_KILLED: u32 = 7;
    let program = loader::program("bad-pointers").ok_or("no program bad-pointers")?;
    let stack_bottom = USER_STACK_TOP - program.stack_size.max(paging::PAGE_SIZE);
    let child = create("spinner", 1)?;
    let parent = create("bad-pointers", stack_bottom)?;
    let physical =
        |process: &Process, address: u64| process.task().with_address_space(|space| space.translate(address)).flatten();
    let outcome = (|| {
        check_eq!(parent.add_handle(Handle::Process(child.clone())), Ok(0), "the child's handle");
        for page in [stack_bottom, stack_bottom + paging::PAGE_SIZE] {
            check!(physical(&parent, page).is_none(), "stack page {page:#x} mapped before the program ran");
        }
        parent.start().map_err(|e| format!("{e}"))?;
        // The parent starts its child once it has shared, then waits for it
        // (its only call that waits): the child is not to be killed before
        // its start has returned.
        let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 20;
        while parent.state() != ProcState::Waiting && !parent.is_finished() && crate::arch::tsc::now() < deadline {
            task::sleep_for_nanos(1_000_000);
        }
        check_eq!(parent.state(), ProcState::Waiting, "the parent {:?}", parent.exit_status());
        check!(child.state() != ProcState::Created, "the child was not started");
        for page in 0..2 {
            let (own, _) = physical(&parent, stack_bottom + page * paging::PAGE_SIZE).ok_or("stack page not mapped")?;
            let (shared, bits) =
                physical(&child, USER_SHARED_BASE + page * paging::PAGE_SIZE).ok_or("shared page not mapped")?;
            check_eq!(shared, own, "page {page} is the parent's stack frame");
            check!(
                bits & paging::flags::USER != 0 && bits & paging::flags::WRITABLE != 0,
                "page {page} bits {bits:#x}"
            );
        }
        Ok(())
    })();
    // The child goes first: it maps the parent's frames.
    end_and_join(&child, ExitStatus::Killed(CHILD_KILLED));
    task::join(parent.task());
    outcome?;
    check_eq!(parent.exit_status(), Some(ExitStatus::Exited(0)), "the parent's failed checks");
    Ok(())
});

ktest!(faults_end_only_the_faulting_process, || {
    let survivor = proc::spawn("spinner", 1).map_err(|e| format!("{e}"))?;
    let expected = [
        (0, FaultKind::PageFault),
        (1, FaultKind::GeneralProtection),
        (2, FaultKind::InvalidOpcode),
        (3, FaultKind::DivideError),
        (4, FaultKind::PageFault),
    ];
    for (argument, kind) in expected {
        match run("fault-demo", argument)? {
            Some(ExitStatus::Faulted { kind: got, address }) => {
                check_eq!(got, kind, "fault demo {argument}");
                if argument == 0 {
                    check_eq!(address, 0xdead_0000, "the faulting address is reported");
                }
            }
            other => return Err(format!("fault demo {argument} ended {other:?}")),
        }
    }
    check_eq!(run("fault-demo", 5)?, Some(ExitStatus::Exited(orrery_runtime_panic_status())));
    check!(!survivor.task().is_killed(), "another process died with the faulting ones");
    check!(survivor.end(ExitStatus::Killed(3)));
    task::join(survivor.task());
    check_eq!(survivor.exit_status(), Some(ExitStatus::Killed(3)));
    Ok(())
});

/// The status the runtime's panic handler exits with.
fn orrery_runtime_panic_status() -> u32 {
    101
}

ktest!(processes_are_isolated, || {
    // One process maps memory; another reads that address, and the kernel's.
    let owner = create("spinner", 1)?;
    let address = owner.map_memory(4096, true).map_err(|e| format!("{e}"))?;
    check!(address >= USER_MAP_BASE);
    owner.start().map_err(|e| format!("{e}"))?;
    for target in [address, paging::KERNEL_OFFSET + 0x10_0000, paging::PHYSMAP_BASE + 0x10_0000] {
        match run("reader", target)? {
            Some(ExitStatus::Faulted { kind: FaultKind::PageFault, address: at }) => {
                check_eq!(at, target, "the fault names the address read")
            }
            other => return Err(format!("reading {target:#x} ended {other:?}")),
        }
    }
    check!(!owner.task().is_killed(), "the owner died with the reader");
    owner.end(ExitStatus::Killed(1));
    task::join(owner.task());
    Ok(())
});

ktest!(text_is_shared_and_data_private, || {
    let first = create("spinner", 1)?;
    let second = create("spinner", 1)?;
    let program = first.program().clone();
    let text = program.text.address;
    let physical =
        |process: &Process, address: u64| process.task().with_address_space(|space| space.translate(address)).flatten();
    let (first_text, bits) = physical(&first, text).ok_or("text not mapped")?;
    let (second_text, _) = physical(&second, text).ok_or("text not mapped")?;
    check_eq!(first_text, second_text, "one physical copy of the text");
    check!(bits & paging::flags::WRITABLE == 0, "text is writable");
    check!(bits & paging::flags::USER != 0, "text is not user");
    if let Some(data) = &program.data_template {
        let (first_data, bits) = physical(&first, data.address).ok_or("data not mapped")?;
        let (second_data, _) = physical(&second, data.address).ok_or("data not mapped")?;
        check!(first_data != second_data, "data is shared");
        check!(bits & paging::flags::NO_EXECUTE != 0 || !crate::arch::cpu::features().nx, "data is executable");
    }
    if let Some(rodata) = &program.rodata {
        let (first_rodata, bits) = physical(&first, rodata.address).ok_or("rodata not mapped")?;
        check_eq!(Some(first_rodata), physical(&second, rodata.address).map(|(p, _)| p));
        check!(bits & paging::flags::WRITABLE == 0);
    }
    for process in [first, second] {
        process.end(ExitStatus::Killed(0));
        task::join(process.task());
    }
    Ok(())
});

ktest!(loader_memory_was_given_back, || {
    let programs = loader::programs();
    check!(programs.len() >= 5, "only {} programs loaded", programs.len());
    for name in ["init", "hello", "echo-server", "echo-client", "fault-demo"] {
        check!(loader::program(name).is_some(), "no program {name}");
    }
    // The embedded ELF files' pages are unmapped and free.
    unsafe extern "C" {
        static __user_images_start: u8;
        static __user_images_end: u8;
    }
    let start = &raw const __user_images_start as u64;
    let end = &raw const __user_images_end as u64;
    check!(end > start, "no embedded programs");
    let mut address = start;
    while address < end {
        check!(paging::translate_in(paging::kernel_root(), address).is_none(), "ELF page {address:#x} still mapped");
        let frame = orrery_frames::Frame::containing(address - paging::KERNEL_OFFSET);
        let in_use_elsewhere = !frames::is_free(frame);
        // Freed frames may have been reused since; they must be managed by
        // the allocator either way (free, or handed out again).
        let _ = in_use_elsewhere;
        address += paging::PAGE_SIZE;
    }
    check!(traps::probe_read(start).is_err(), "the ELF files can still be read");
    Ok(())
});

ktest!(process_states_follow_akaros, || {
    let process = create("spinner", 1)?;
    check_eq!(process.state(), ProcState::Created);
    check!(process.restrict(orrery_abi::ALL_SYSCALLS).is_ok());
    check!(process.set_name("renamed").is_ok());
    process.start().map_err(|e| format!("{e}"))?;
    check!(matches!(process.state(), ProcState::RunnableS | ProcState::RunningS | ProcState::Waiting));
    check_eq!(process.start(), Err(orrery_abi::Error::WrongState), "a second start is refused");
    check_eq!(process.restrict(0), Err(orrery_abi::Error::WrongState), "restricting after start is refused");
    check_eq!(process.set_name("late"), Err(orrery_abi::Error::WrongState));
    // The sleeper waits in a system call most of the time.
    let waited = {
        let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 20;
        loop {
            if process.state() == ProcState::Waiting {
                break true;
            }
            if crate::arch::tsc::now() > deadline {
                break false;
            }
            task::sleep_for_nanos(500_000);
        }
    };
    check!(waited, "never saw the process WAITING (state {:?})", process.state());
    check!(process.end(ExitStatus::Killed(4)));
    check!(!process.end(ExitStatus::Killed(5)), "a second end is refused");
    check_eq!(process.state(), ProcState::Dying);
    task::join(process.task());
    check_eq!(process.exit_status(), Some(ExitStatus::Killed(4)));
    Ok(())
});

ktest!(restricted_calls_are_refused_on_every_path, || {
    use orrery_abi::Syscall;
    // Unrestricted: every probe gets its ordinary answer.
    check_eq!(run("restricted", 0)?, Some(ExitStatus::Exited(0)));
    // Two calls of the fast path and one of the dispatcher's taken away:
    // each fails with `Restricted`, the others still work.
    let taken = Syscall::ProcessId.bit() | Syscall::CpuId.bit() | Syscall::MailboxSlots.bit();
    let process = create("restricted", 0)?;
    process.restrict(orrery_abi::ALL_SYSCALLS & !taken).map_err(|e| format!("{e}"))?;
    process.start().map_err(|e| format!("{e}"))?;
    task::join(process.task());
    check_eq!(
        process.exit_status(),
        Some(ExitStatus::Exited(0b1_1100)),
        "bits: 2 process_id, 3 cpu_id, 4 mailbox_slots"
    );
    Ok(())
});

ktest!(mailbox_round_trips_across_cpus_under_load, || {
    let cpus = smp::cpu_count();
    let mailbox = MailboxObject::new(8).map_err(|e| format!("{e}"))?;
    // The server initialises the mailbox itself (it serves one it did not
    // create here): the kernel made it, so the first user to open it must
    // see a valid header. The echo server opens it as a server; give it a
    // moment: clients wait for the header via a retry in the runtime.
    let server = create("echo-server", 0)?;
    server.grant_mailbox(&mailbox, true).map_err(|e| format!("{e}"))?;
    let mut clients = Vec::new();
    for index in 0..3 {
        let client = create("echo-client", 300)?;
        client.grant_mailbox(&mailbox, false).map_err(|e| format!("{e}"))?;
        clients.push((index, client));
    }
    // Load: CPU-bound processes on every CPU.
    let hogs: Vec<_> =
        (0..cpus).map(|_| proc::spawn("spinner", 0)).collect::<Result<_, _>>().map_err(|e| format!("{e}"))?;
    server.start().map_err(|e| format!("{e}"))?;
    for (index, client) in &clients {
        client.start().map_err(|e| format!("{e}"))?;
        // Spread the clients over the CPUs.
        if let Some(thread) = client.thread().and_then(task::thread::get) {
            scheduler::set_affinity(&thread, CpuSet::only((index + 1) % cpus));
        }
    }
    for (index, client) in &clients {
        task::join(client.task());
        check_eq!(client.exit_status(), Some(ExitStatus::Exited(0)), "client {index}");
    }
    for process in hogs.iter().chain(core::iter::once(&server)) {
        process.end(ExitStatus::Killed(0));
        task::join(process.task());
    }
    Ok(())
});

ktest!(mailbox_calls_hand_off_the_cpu_without_starving_others, || {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const ROUNDS: u64 = 300;
    let cpu = 1 % smp::cpu_count();
    let mailbox = MailboxObject::new(8).map_err(|e| format!("{e}"))?;
    let server = create("echo-server", 0)?;
    let client = create("echo-client", ROUNDS)?;
    server.grant_mailbox(&mailbox, true).map_err(|e| format!("{e}"))?;
    client.grant_mailbox(&mailbox, false).map_err(|e| format!("{e}"))?;
    // A CPU-bound kernel thread on the same CPU: the pair calling each
    // other hands the CPU back and forth, but only within one time slice,
    // so this thread still gets its share.
    let spins = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (spins, stop) = (spins.clone(), stop.clone());
        task::Builder::new("spinner")
            .cpus(CpuSet::only(cpu))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    spins.fetch_add(1, Ordering::Relaxed);
                    core::hint::spin_loop();
                }
            })
            .map_err(|e| format!("{e:?}"))?
    };
    let hand_offs = scheduler::hand_off_count(cpu);
    server.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
    client.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
    let spins_before = spins.load(Ordering::Relaxed);
    let started = crate::arch::tsc::now();
    task::join(client.task());
    let spins_during = spins.load(Ordering::Relaxed) - spins_before;
    let elapsed_us = crate::arch::tsc::ticks_to_nanos(crate::arch::tsc::now() - started) / 1000;
    let made = scheduler::hand_off_count(cpu) - hand_offs;
    stop.store(true, Ordering::Relaxed);
    spinner.join();
    server.end(ExitStatus::Killed(0));
    task::join(server.task());
    check_eq!(client.exit_status(), Some(ExitStatus::Exited(0)), "every answer checked");
    crate::println!(
        "ktest-info: {ROUNDS} calls on cpu{cpu} in {elapsed_us} us: {made} hand-offs; the spinner ran {spins_during} loops meanwhile"
    );
    // Each round trip is two hand-offs (call, reply) unless the spinner's
    // turn came in between; most must be.
    check!(made >= ROUNDS, "only {made} hand-offs in {ROUNDS} round trips");
    // The pair shares one slice (at most the 3 ms period) however often it
    // hands the CPU back and forth; over several periods the spinner must
    // have had turns. (Under TCG the calls take tens of milliseconds; on
    // hardware they may finish inside one slice, which proves nothing.)
    let slice_us = u64::from(crate::OPTIONS_SLICE_US.load(Ordering::Relaxed));
    if elapsed_us >= 3 * slice_us {
        check!(spins_during > 0, "the spinner was starved for {elapsed_us} us");
    }
    Ok(())
});

/// Live heap allocations that may come and go between two measurements
/// without anything leaking: see the leak tests.
pub(super) fn allocation_slack() -> usize {
    8 + 2 * smp::cpu_count()
}

/// Makes the kernel take a megabyte of heap, as the small blocks its
/// records are (a block of 4 KiB at most), and gives it back: what its own
/// work needs while processes hold the rest of memory. (One block of a
/// megabyte would also need that much contiguous memory, which processes
/// holding frames all over it may not leave.)
fn check_kernel_heap_grows() -> Result<(), alloc::string::String> {
    let blocks: Vec<alloc::boxed::Box<[u8; 4096]>> = (0..256).map(|_| alloc::boxed::Box::new([0u8; 4096])).collect();
    check_eq!(blocks.len(), 256);
    Ok(())
}

/// Waits for the reaper and empties the stack cache.
fn settle() {
    // The reaper's queue empty, and no thread dead but not yet freed: a
    // dead thread's stack and record go right after the switch away from
    // it, which on a loaded host its CPU may make a while after its joiner
    // went on (a stack freed then, after a measurement, would count as
    // frames that appeared).
    // No thread of a killed task still to run to its end either (one
    // killed before it first ran waits in a queue, holding its process
    // record and address space, until its CPU gets to it). And no thread
    // record outliving its place in the table: whoever holds the last
    // reference to one (a waker on another CPU) also holds its task, and
    // with it the task's page-table root. Either would be freed after the
    // measurement.
    let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 20;
    while (task::reaper::backlog() != 0 || unfinished_threads() != 0 || stray_thread_records())
        && crate::arch::tsc::now() < deadline
    {
        task::sleep_for_nanos(200_000);
    }
    task::sleep_for_nanos(1_000_000);
    stacks::trim_cache();
}

/// True while a thread removed from the table is still held somewhere.
fn stray_thread_records() -> bool {
    task::thread::records() > task::thread::count()
}

/// Threads that died and wait for the switch that frees them, or whose task
/// was killed and that have yet to stop.
fn unfinished_threads() -> usize {
    let mut unfinished = 0;
    task::thread::for_each(|thread| {
        unfinished += usize::from(thread.state() == task::ThreadState::Dead || thread.must_stop());
    });
    unfinished
}

fn create_kill_cycles(count: usize) -> Result<(), alloc::string::String> {
    let mut batch = Vec::new();
    for cycle in 0..count {
        let process = proc::spawn("spinner", (cycle % 2) as u64).map_err(|e| format!("{e}"))?;
        batch.push(process);
        if batch.len() == 16 || cycle == count - 1 {
            for process in &batch {
                process.end(ExitStatus::Killed(9));
            }
            for process in batch.drain(..) {
                task::join(process.task());
                if process.exit_status() != Some(ExitStatus::Killed(9)) {
                    return Err(format!("cycle {cycle}: {:?}", process.exit_status()));
                }
            }
        }
    }
    Ok(())
}

/// What a leak of processes shows in: free frames, kernel heap capacity,
/// live heap allocations, process records.
pub(super) struct Footprint {
    pub(super) free_frames: u64,
    capacity_frames: u64,
    pub(super) allocations: usize,
    processes: u64,
}

impl Footprint {
    /// Waits for the reaper, then measures.
    pub(super) fn settled() -> Self {
        settle();
        Self::now()
    }

    fn now() -> Self {
        Self {
            free_frames: frames::free_count(),
            capacity_frames: crate::mm::capacity_frames(),
            allocations: heap::allocation_count(),
            processes: proc::live_processes(),
        }
    }

    /// Waits for the reaper, then fails if anything of `what` is left over
    /// since `self` was measured; returns the new figures.
    pub(super) fn check_nothing_left(&self, what: &str) -> Result<Self, alloc::string::String> {
        self.check_nothing_left_beyond(what, 0)
    }

    /// [`check_nothing_left`](Self::check_nothing_left), allowing `grown`
    /// more live allocations for structures the work grew and that stay
    /// grown (chunks of the thread table).
    pub(super) fn check_nothing_left_beyond(&self, what: &str, grown: usize) -> Result<Self, alloc::string::String> {
        settle();
        // A process record goes with its thread's record, freed by the next
        // thread on that CPU right after the last switch; on a loaded host
        // that CPU may come a little after the joiner.
        // Likewise the last reference to a task (its page-table root, one
        // frame) may go with a thread record a moment after the process
        // record. A leak stays, and shows once the deadline passes.
        let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 20;
        while crate::arch::tsc::now() < deadline {
            let now = Self::now();
            if now.processes == self.processes && now.frames_back_to(self) {
                break;
            }
            task::sleep_for_nanos(1_000_000);
        }
        let after = Self::now();
        if after.processes != self.processes || !after.frames_back_to(self) {
            crate::println!("ktest-info: reaper backlog {}", task::reaper::backlog());
            proc::dump_processes();
            task::dump_threads();
        }
        check_eq!(after.processes, self.processes, "process records left over {what}");
        // The heap may have grown (its per-CPU caches fill on more CPUs than
        // a warm-up used); its frames are capacity, not a leak, and a leaked
        // object shows as a live allocation.
        // Fewer free frames is a leak; more is something from before the
        // measurement that the settle did not wait for.
        check!(
            after.frames_back_to(self),
            "free frames changed over {what}: {} free, {} before (heap and kernel tables grew {})",
            after.free_frames,
            self.free_frames,
            after.grown_since(self)
        );
        // A leaked object is one more live allocation per process. What
        // comes and goes with the moment of measuring is bounded: a few
        // shared buffers, and per CPU a block of its futures' ready queue and
        // of its timer heap.
        check!(
            after.allocations <= self.allocations + allocation_slack() + grown,
            "live heap allocations went from {} to {} over {what}",
            self.allocations,
            after.allocations
        );
        Ok(after)
    }

    /// True when every frame free at `before` is free again or became
    /// capacity (heap, kernel tables).
    fn frames_back_to(&self, before: &Self) -> bool {
        self.free_frames + self.grown_since(before) == before.free_frames
    }

    /// Frames the heap and kernel tables grew by since `before`.
    fn grown_since(&self, before: &Self) -> u64 {
        self.capacity_frames - before.capacity_frames
    }
}

ktest!(create_kill_cycles_leak_nothing, || {
    const CYCLES: usize = 1000;
    create_kill_cycles(100)?;
    let before = Footprint::settled();
    create_kill_cycles(CYCLES)?;
    let after = before.check_nothing_left(&format!("{CYCLES} create/kill cycles"))?;
    crate::println!(
        "ktest-info: {CYCLES} process create/kill cycles on {} CPUs: free frames {} -> {} (heap and kernel tables grew {} frames), heap allocations {} -> {}",
        smp::cpu_count(),
        before.free_frames,
        after.free_frames,
        after.grown_since(&before),
        before.allocations,
        after.allocations
    );
    Ok(())
});

/// Waits up to `seconds` for `process` to finish; false if it has not.
pub(super) fn finish_within(process: &Process, seconds: u64) -> bool {
    let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * seconds;
    while !process.is_finished() {
        if crate::arch::tsc::now() > deadline {
            return false;
        }
        task::sleep_for_nanos(1_000_000);
    }
    true
}

/// Ends `process` if it still runs, and waits for it.
pub(super) fn end_and_join(process: &Process, status: ExitStatus) {
    process.end(status);
    task::join(process.task());
}

/// Ends every process in `processes`, then waits for them all (ending
/// them one at a time and waiting for each would take as many scheduling
/// rounds as there are processes), and empties the list.
fn end_all_and_join(processes: &mut Vec<Arc<Process>>) {
    for process in processes.iter() {
        process.end(ExitStatus::Killed(0));
    }
    for process in processes.drain(..) {
        task::join(process.task());
    }
}

/// Runs the program `name` on `cpu` alone; how it ended.
fn run_on(name: &str, argument: u64, cpu: usize) -> Result<Option<ExitStatus>, alloc::string::String> {
    let process = create(name, argument)?;
    process.start_on(CpuSet::only(cpu)).map_err(|e| format!("start {name}: {e}"))?;
    task::join(process.task());
    Ok(process.exit_status())
}

ktest!(no_memory_for_vector_registers_ends_only_that_process, || {
    // Two CPU-bound processes share a CPU, so the timer preempts them. The
    // victim's first interrupt finds no memory to save its vector registers
    // in: it must end with a status saying so, while the kernel, the other
    // process and later ones go on, and nothing leaks.
    let cpu = 1 % smp::cpu_count();
    // Warm up what grows once (caches of this CPU), then measure.
    let warm = create("spinner", 0)?;
    warm.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
    check_eq!(run_on("hello", 0, cpu)?, Some(ExitStatus::Exited(0)));
    end_and_join(&warm, ExitStatus::Killed(0));
    drop(warm);
    let before = Footprint::settled();

    let survivor = create("spinner", 0)?;
    let victim = create("spinner", 0)?;
    let outcome = (|| {
        survivor.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
        task::user::fail_next_fpu_saves(victim.task().id(), 1);
        victim.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
        check!(finish_within(&victim, 20), "the victim still runs ({:?})", victim.state());
        let text = &victim.program().text;
        let text_range = text.address..text.address + text.frames.len() as u64 * paging::PAGE_SIZE;
        match victim.exit_status() {
            Some(ExitStatus::Faulted { kind: FaultKind::OutOfMemory, address }) => {
                check!(text_range.contains(&address), "it ended at {address:#x}, outside its text {text_range:x?}")
            }
            other => return Err(format!("the victim ended {other:?}")),
        }
        check!(!survivor.task().is_killed(), "the other process died with the victim");
        // The CPU goes on running processes: a new one finishes normally
        // beside the spinner, which is still there to be killed.
        check_eq!(run_on("hello", 0, cpu)?, Some(ExitStatus::Exited(0)));
        check!(!survivor.task().is_killed(), "the other process died after the victim");
        check!(survivor.end(ExitStatus::Killed(6)), "the other process had ended");
        task::join(survivor.task());
        check_eq!(survivor.exit_status(), Some(ExitStatus::Killed(6)));
        Ok(())
    })();
    task::user::fail_next_fpu_saves(victim.task().id(), 0);
    end_and_join(&victim, ExitStatus::Killed(0));
    end_and_join(&survivor, ExitStatus::Killed(0));
    outcome?;
    drop((victim, survivor));
    before.check_nothing_left("a process ended for want of memory").map(drop)
});

/// The three kills [`a_kill_inside_start_makes_it_fail_with_wrong_state`]
/// makes, one process each: before the start, just after the process left
/// CREATED, and just after its thread was made.
fn kill_inside_starts() -> Result<(), alloc::string::String> {
    use orrery_abi::Error;
    use proc::StartKillPoint;
    const REASON: u32 = 23;
    for at in [None, Some(StartKillPoint::BeforeStartInfo), Some(StartKillPoint::AfterThread)] {
        let process = create("spinner", 0)?;
        let outcome = (|| {
            match at {
                None => check!(process.end(ExitStatus::Killed(REASON)), "the process had ended"),
                Some(at) => proc::kill_inside_next_start(process.id(), at, REASON),
            }
            check_eq!(process.start(), Err(Error::WrongState), "killed at {at:?}");
            check_eq!(process.exit_status(), Some(ExitStatus::Killed(REASON)), "killed at {at:?}");
            check_eq!(process.state(), ProcState::Dying, "killed at {at:?}");
            check_eq!(
                process.thread().is_some(),
                at == Some(StartKillPoint::AfterThread),
                "a thread was made, killed at {at:?}"
            );
            check!(finish_within(&process, 20), "killed at {at:?}, it did not finish ({:?})", process.state());
            check_eq!(
                task::join(process.task()),
                task::ExitStatus::Killed(ExitStatus::Killed(REASON).encode()),
                "killed at {at:?}"
            );
            check_eq!(process.task().live_thread_count(), 0, "killed at {at:?}, a thread lives on");
            Ok(())
        })();
        end_and_join(&process, ExitStatus::Killed(0));
        outcome?;
    }
    Ok(())
}

ktest!(a_kill_inside_start_makes_it_fail_with_wrong_state, || {
    // A kill may land on another CPU while a start runs: after the process
    // left CREATED and before its thread exists, or after the thread was
    // made and before the process records it. `kill_inside_next_start`
    // makes it land there for certain. The start must fail with
    // `WrongState`, the status must be the kill's, no thread may run on,
    // the process must finish (what `process_wait` waits for), and nothing
    // may be left behind. A kill before the start is the same to the caller.
    // A first round warms up what a start touches (whichever CPUs its
    // threads land on); the second is measured.
    kill_inside_starts()?;
    let before = Footprint::settled();
    kill_inside_starts()?;
    before.check_nothing_left("starts killed on the way").map(drop)
});

ktest!(a_start_that_fails_ends_the_process, || {
    // A start that fails for another reason after the process left CREATED
    // ends it: here its `StartInfo` cannot be written (the page it goes in
    // is gone). The process must not stay RUNNABLE_S without a thread,
    // which nothing would ever finish.
    let warm = proc::spawn("spinner", 0).map_err(|e| format!("{e}"))?;
    end_and_join(&warm, ExitStatus::Killed(0));
    drop(warm);
    let before = Footprint::settled();
    // Its `StartInfo` page gone, or (when there is a CPU number no CPU
    // has) its thread kept to no running CPU.
    let no_cpu = smp::cpu_count() < crate::arch::cpu::MAX_CPUS;
    for (case, expected) in [(0, orrery_abi::Error::BadAddress), (1, orrery_abi::Error::BadFlags)] {
        if case == 1 && !no_cpu {
            continue;
        }
        let process = create("spinner", 0)?;
        let outcome = (|| {
            let started = if case == 0 {
                let top = USER_STACK_TOP - paging::PAGE_SIZE;
                check!(
                    process.task().with_address_space(|space| space.unmap(top)).flatten().is_some(),
                    "no stack page"
                );
                process.start()
            } else {
                process.start_on(CpuSet::only(smp::cpu_count()))
            };
            check_eq!(started, Err(expected));
            check!(process.thread().is_none(), "a thread was made ({expected:?})");
            check_eq!(process.exit_status(), Some(ExitStatus::Killed(0)), "{expected:?}");
            check_eq!(process.state(), ProcState::Dying, "{expected:?}");
            check!(finish_within(&process, 20), "it did not finish ({:?}, {expected:?})", process.state());
            Ok(())
        })();
        end_and_join(&process, ExitStatus::Killed(0));
        outcome?;
    }
    before.check_nothing_left("failed starts").map(drop)
});

ktest!(a_process_that_takes_all_memory_leaves_the_kernel_its_own, || {
    // `hog` maps memory until the kernel refuses, and holds it. The kernel
    // must refuse it with `OutOfMemory` while keeping memory for itself:
    // its heap, threads and stacks, and the clean-up of the hog, go on.
    let warm = create("hello", 0)?;
    warm.start().map_err(|e| format!("{e}"))?;
    task::join(warm.task());
    drop(warm);
    let before = Footprint::settled();
    let hog = create("hog", 0)?;
    // Takes everything too, then grows its stack, which the kernel cannot
    // give it either: it ends with an out-of-memory fault there.
    let second = create("hog", 1 << 32)?;
    let outcome = (|| {
        hog.start().map_err(|e| format!("{e}"))?;
        // It sleeps, holding everything, once the kernel has said no.
        let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 60;
        while hog.state() != ProcState::Waiting && !hog.is_finished() && crate::arch::tsc::now() < deadline {
            task::sleep_for_nanos(1_000_000);
        }
        check!(!hog.is_finished(), "the hog ended: {:?}", hog.exit_status());
        check_eq!(hog.state(), ProcState::Waiting, "the hog never stopped taking memory");
        let free = frames::free_count();
        crate::println!("ktest-info: the hog left {free} frames free of {}", frames::total_count());
        // The kernel's own needs are met: its heap, and a kernel thread on
        // every CPU (a stack each).
        check_kernel_heap_grows()?;
        for cpu in 0..smp::cpu_count() {
            let handle = task::Builder::new("needs-a-stack")
                .cpus(CpuSet::only(cpu))
                .spawn(|| {})
                .map_err(|e| format!("spawn with the memory taken: {e:?}"))?;
            handle.join();
        }
        // A new process, or the start of one made before, is refused with
        // an error, or runs.
        match proc::spawn("hello", 0) {
            Ok(process) => {
                task::join(process.task());
                check_eq!(process.exit_status(), Some(ExitStatus::Exited(0)));
            }
            Err(error) => check_eq!(error, orrery_abi::Error::OutOfMemory),
        }
        end_and_join(&hog, ExitStatus::Killed(0));
        second.start().map_err(|e| format!("{e}"))?;
        task::join(second.task());
        let stack = USER_STACK_TOP - second.program().stack_size..USER_STACK_TOP;
        match second.exit_status() {
            Some(ExitStatus::Faulted { kind: FaultKind::OutOfMemory, address }) => {
                check!(stack.contains(&address), "it ended at {address:#x}, outside its stack {stack:x?}")
            }
            other => check!(false, "the second hog ended {other:?}"),
        }
        Ok(())
    })();
    end_and_join(&second, ExitStatus::Killed(0));
    end_and_join(&hog, ExitStatus::Killed(0));
    drop((hog, second));
    outcome?;
    before.check_nothing_left("a process that took all memory")?;
    Ok(())
});

ktest!(mailbox_pairs_killed_mid_call_leave_nothing, || {
    // An echo server and a client on one CPU call each other with hand-offs
    // (each call blocks one side and hands the CPU to the other, whose wait
    // the ring ended); a kill lands at a varying moment, on the server or
    // the client first. Whatever it interrupts, both must end, with the
    // status the kill gave where it came first, and leave nothing behind.
    let cpus = smp::cpu_count();
    let pair = |round: usize| -> Result<(), alloc::string::String> {
        let cpu = round % cpus;
        let mailbox = MailboxObject::new(4).map_err(|e| format!("{e}"))?;
        let server = create("echo-server", 0)?;
        let client = create("echo-client", (1 << 32) | 1_000_000)?;
        server.grant_mailbox(&mailbox, true).map_err(|e| format!("{e}"))?;
        client.grant_mailbox(&mailbox, false).map_err(|e| format!("{e}"))?;
        drop(mailbox);
        server.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
        client.start_on(CpuSet::only(cpu)).map_err(|e| format!("{e}"))?;
        // From a few microseconds to a couple of milliseconds of calls.
        task::sleep_for_nanos(5_000 + (round as u64 * 370_000) % 2_000_000);
        let (first, second) = if round.is_multiple_of(2) { (&server, &client) } else { (&client, &server) };
        check!(first.end(ExitStatus::Killed(1)), "round {round}: the first victim had ended");
        task::join(first.task());
        check_eq!(first.exit_status(), Some(ExitStatus::Killed(1)), "round {round}");
        second.end(ExitStatus::Killed(2));
        task::join(second.task());
        check!(second.is_finished(), "round {round}: the second did not finish");
        Ok(())
    };
    let hand_offs = || (0..cpus).map(scheduler::hand_off_count).sum::<u64>();
    pair(0)?;
    let before = Footprint::settled();
    let hand_offs_before = hand_offs();
    for round in 1..24 {
        pair(round)?;
    }
    let made = hand_offs() - hand_offs_before;
    crate::println!("ktest-info: {made} hand-offs in 23 pairs");
    check!(made >= 23, "only {made} hand-offs: the pairs did not call each other");
    before.check_nothing_left("killed mailbox pairs")?;
    Ok(())
});

ktest!(creating_processes_until_memory_runs_out_leaves_the_kernel_its_own, || {
    // What a supervisor that creates processes in a loop does: each takes
    // frames for its pages and page tables, and kernel heap for its
    // records. Creation must end in `OutOfMemory` at the reserve, with the
    // kernel still able to grow its heap and spawn threads, and everything
    // must come back when the processes go.
    let before = Footprint::settled();
    let mut made = Vec::new();
    let outcome = (|| {
        let refused = loop {
            match create("hello", 0) {
                Ok(process) => made.push(process),
                Err(error) => break error,
            }
            check!(made.len() < 1_000_000, "no end to process creation");
        };
        check!(refused.contains("OutOfMemory"), "creation ended with {refused}");
        crate::println!(
            "ktest-info: {} processes made before OutOfMemory, {} frames left free",
            made.len(),
            frames::free_count()
        );
        check_kernel_heap_grows()?;
        for cpu in 0..smp::cpu_count() {
            task::Builder::new("needs-a-stack")
                .cpus(CpuSet::only(cpu))
                .spawn(|| {})
                .map_err(|e| format!("spawn with memory gone: {e:?}"))?
                .join();
        }
        Ok(())
    })();
    end_all_and_join(&mut made);
    outcome?;
    before.check_nothing_left("processes made until memory ran out")?;
    Ok(())
});

ktest!(a_process_mapping_page_by_page_until_memory_runs_out_leaves_the_kernel_its_own, || {
    // Mapping one page per call until refused: besides the pages, each call
    // adds to the process's own records of what it mapped.
    let before = Footprint::settled();
    let process = create("spinner", 1)?;
    let outcome = (|| {
        let mut pages = 0u64;
        let refused = loop {
            match process.map_memory(4096, true) {
                Ok(_) => pages += 1,
                Err(error) => break error,
            }
        };
        crate::println!("ktest-info: {pages} pages mapped one by one, then {refused:?}");
        check!(
            matches!(refused, orrery_abi::Error::OutOfMemory | orrery_abi::Error::LimitReached),
            "mapping ended with {refused:?}"
        );
        check_kernel_heap_grows()?;
        Ok(())
    })();
    end_and_join(&process, ExitStatus::Killed(0));
    drop(process);
    outcome?;
    before.check_nothing_left("a process mapped page by page")?;
    Ok(())
});

ktest!(starting_every_process_that_fit_leaves_the_kernel_its_own, || {
    // Processes created until memory runs out, then all started: each start
    // makes a thread record and user state, kernel memory that the frames
    // the processes took did not pay for. Starts past what the kernel can
    // hold must fail with an error, never take the kernel's last memory.
    // About 19,000 processes: on more than 8 emulated CPUs sharing the
    // build machine's 2 cores, their teardown alone outlasts the per-test
    // watchdog, so the test runs on up to 8 CPUs.
    if smp::cpu_count() > 8 {
        crate::println!("ktest-info: skipped on {} CPUs (runs on up to 8)", smp::cpu_count());
        return Ok(());
    }
    // The thread table grows by chunks it keeps: one allocation each.
    let round = || -> Result<(), alloc::string::String> {
        let mut made = Vec::new();
        let outcome = (|| {
            while let Ok(process) = create("spinner", 1) {
                made.push(process);
            }
            let mut started = 0usize;
            let mut refused = 0usize;
            for process in &made {
                match process.start() {
                    Ok(()) => started += 1,
                    Err(orrery_abi::Error::OutOfMemory) => refused += 1,
                    Err(error) => check!(false, "a start failed with {error:?}"),
                }
            }
            crate::println!(
                "ktest-info: {} processes made, {started} started, {refused} refused; {} frames free",
                made.len(),
                frames::free_count()
            );
            check_kernel_heap_grows()
        })();
        end_all_and_join(&mut made);
        outcome
    };
    let before = Footprint::settled();
    let chunks = task::thread::table_chunks();
    round()?;
    let grown = task::thread::table_chunks() - chunks;
    before.check_nothing_left_beyond("every process that fit, started", grown)?;
    Ok(())
});
