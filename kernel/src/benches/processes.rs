//! Figures of user processes: the null system call, mailbox call+reply,
//! process create+run+exit+wait, kernel memory per blocked user thread.

use alloc::{format, sync::Arc};

use orrery_abi::ExitStatus;

use crate::{
    arch::{smp, tsc},
    bench::{Figure, privileged},
    kbench,
    proc::{self, Process, loader, mailbox::MailboxObject},
    task::{self, CpuSet},
};

fn create(name: &str, argument: u64) -> Result<Arc<Process>, alloc::string::String> {
    let program = loader::program(name).ok_or_else(|| format!("no program {name}"))?;
    Process::create(program, name, 0, argument).map_err(|e| format!("{e:?}"))
}

fn exit_code(process: &Process) -> Result<u64, alloc::string::String> {
    task::join(process.task());
    match process.exit_status() {
        Some(ExitStatus::Exited(code)) => Ok(u64::from(code)),
        other => Err(format!("{} ended {other:?}", process.name())),
    }
}

kbench!(null_syscall, |context| {
    let process = create("null-bench", 16_000)?;
    process.start_on(CpuSet::only(0)).map_err(|e| format!("{e}"))?;
    let ticks = exit_code(&process)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "null system call measured from user space (median of 16 batches): syscall entry, dispatch, sysretq, \
             loop and rdtsc overhead; {}",
            privileged(&["SYSCALL", "SWAPGS x2", "SYSRET"])
        ),
    ))
});

fn mailbox_round_trip(server_cpu: usize, client_cpu: usize) -> Result<u64, alloc::string::String> {
    let mailbox = MailboxObject::new(8).map_err(|e| format!("{e}"))?;
    let server = create("echo-server", 0)?;
    let client = create("echo-client", (1 << 32) | 2000)?;
    server.grant_mailbox(&mailbox, true).map_err(|e| format!("{e}"))?;
    client.grant_mailbox(&mailbox, false).map_err(|e| format!("{e}"))?;
    server.start_on(CpuSet::only(server_cpu)).map_err(|e| format!("{e}"))?;
    client.start_on(CpuSet::only(client_cpu)).map_err(|e| format!("{e}"))?;
    let ticks = exit_code(&client);
    server.end(ExitStatus::Killed(0));
    task::join(server.task());
    match ticks? {
        ticks if ticks == u64::from(u32::MAX) => Err("the echo client got a wrong answer".into()),
        ticks => Ok(ticks),
    }
}

kbench!(mailbox_call_reply, |context| {
    let ticks = mailbox_round_trip(0, 0)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "32-byte echo request and reply between two processes on one CPU through a slotted mailbox: client \
             post + mailbox_call, server take + reply + mailbox_reply_wait, client reads the reply; two hand-offs \
             between address spaces; {}",
            privileged(&["SYSCALL/SYSRET x2", "SWAPGS x4", "MOV CR3 x2", "cli/sti"])
        ),
    ))
});

kbench!(mailbox_call_reply_across_cpus, |context| {
    if smp::cpu_count() < 2 {
        return Err("needs 2 CPUs: cargo run -- --bench mailbox_call_reply_across_cpus --smp 2".into());
    }
    let ticks = mailbox_round_trip(0, 1)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "as mailbox_call_reply, server on cpu0 and client on cpu1: each ring wakes the other CPU; {}",
            privileged(&["SYSCALL/SYSRET x2", "wake IPI x2", "HLT wake-ups", "EOI", "IRETQ"])
        ),
    ))
});

kbench!(process_create_run_exit_wait, |context| {
    const COUNT: u64 = 100;
    // Warm up the allocators and the stack cache.
    for _ in 0..5 {
        let process = proc::spawn("true", 0).map_err(|e| format!("{e}"))?;
        task::join(process.task());
    }
    let start = tsc::now();
    for _ in 0..COUNT {
        let process = create("true", 0)?;
        process.start_on(CpuSet::only(0)).map_err(|e| format!("{e}"))?;
        exit_code(&process)?;
    }
    let ticks = tsc::now() - start;
    Ok(context.per_operation(
        ticks,
        COUNT,
        format!(
            "create a process from a loaded program (page tables, shared text, private data and stack), start it, \
             it exits at once, the reaper frees its memory, the parent's wait returns; {}",
            privileged(&["MOV CR3", "SYSCALL/SYSRET", "IRETQ (first entry)", "cli/sti"])
        ),
    ))
});

kbench!(blocked_user_thread_bytes, |_context| {
    // A process whose thread waits in `sleep_until`.
    let process = create("spinner", 1)?;
    process.start().map_err(|e| format!("{e}"))?;
    let deadline = tsc::now() + tsc::hz();
    while process.state() != orrery_proc::ProcState::Waiting && tsc::now() < deadline {
        task::sleep_for_nanos(200_000);
    }
    let thread = process.thread().and_then(task::thread::get).ok_or("no thread")?;
    let bytes = task::user::thread_bytes(&thread);
    drop(thread);
    process.end(ExitStatus::Killed(0));
    task::join(process.task());
    Ok(Figure {
        value: bytes as f64,
        unit: "bytes",
        detail: format!(
            "kernel heap held by one user thread blocked in a system call: its thread record ({} B, descriptor \
             included) and user state (registers, the parked system-call future, waker); no kernel stack and no \
             vector-register area (dead at a system call by the ABI)",
            core::mem::size_of::<task::Thread>()
        ),
    })
});
