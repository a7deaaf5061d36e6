//! Figures of the task system: the raw switch, yield, switches across
//! address spaces, cross-CPU wake-up, pick-next, spawn+exit+join, fairness.

use alloc::{format, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use orrery_sched::{Config, EnqueueReason, Entity, PolicyKind, ThreadId};

use crate::{
    arch::{interrupts, smp, switch, tsc},
    bench::{Figure, median, privileged},
    kbench,
    mm::stacks::KernelStack,
    task::{self, Builder, CpuSet, WaitQueue},
};

const ROUNDS: u64 = 10_000;

kbench!(switch_raw, |context| {
    // Two contexts on one CPU hand control back and forth with the bare
    // register-and-stack switch, no scheduler involved.
    static MAIN_RSP: AtomicU64 = AtomicU64::new(0);
    static OTHER_RSP: AtomicU64 = AtomicU64::new(0);
    extern "C" fn other() -> ! {
        loop {
            // SAFETY: both saved stack pointers were produced by
            // `switch_context` on stacks that stay alive for the benchmark.
            unsafe { switch::switch_context(OTHER_RSP.as_ptr(), MAIN_RSP.load(Ordering::Relaxed)) };
        }
    }
    let stack = KernelStack::new().map_err(|e| format!("{e:?}"))?;
    // SAFETY: a fresh stack nobody else uses.
    OTHER_RSP.store(unsafe { switch::initial_stack(stack.top(), other) }, Ordering::Relaxed);
    let ticks = interrupts::without(|| {
        let start = tsc::now();
        for _ in 0..ROUNDS {
            // SAFETY: `other` only switches straight back; interrupts are off.
            unsafe { switch::switch_context(MAIN_RSP.as_ptr(), OTHER_RSP.load(Ordering::Relaxed)) };
        }
        tsc::now() - start
    });
    Ok(context.per_operation(
        ticks,
        2 * ROUNDS,
        format!(
            "one direction of a round trip between two stacks (6 pushes, 6 pops, 2 moves, ret); {}",
            privileged(&[])
        ),
    ))
});

/// Two threads on CPU 0 yield to each other `ROUNDS` times each; returns
/// TSC ticks per yield.
fn yield_ping_pong(own_spaces: bool) -> Result<u64, alloc::string::String> {
    yield_ping_pong_with(own_spaces, false)
}

fn yield_ping_pong_with(own_spaces: bool, fpu: bool) -> Result<u64, alloc::string::String> {
    let start = Arc::new(AtomicU64::new(0));
    let end = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (start, end, ready) = (start.clone(), end.clone(), ready.clone());
        let mut builder = Builder::new("yielder").cpus(CpuSet::only(0));
        if own_spaces {
            builder = builder.own_address_space();
        }
        if fpu {
            builder = builder.fpu();
        }
        handles.push(
            builder
                .spawn(move || {
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < 2 {
                        task::yield_now();
                    }
                    let _ = start.compare_exchange(0, tsc::now(), Ordering::SeqCst, Ordering::SeqCst);
                    for _ in 0..ROUNDS {
                        task::yield_now();
                    }
                    end.store(tsc::now(), Ordering::SeqCst);
                })
                .map_err(|e| format!("{e:?}"))?,
        );
    }
    for handle in &handles {
        handle.join();
    }
    Ok((end.load(Ordering::SeqCst) - start.load(Ordering::SeqCst)) / (2 * ROUNDS))
}

kbench!(yield_same_space, |context| {
    let ticks = yield_ping_pong(false)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "yield_now from one kernel thread to another on the same CPU, fair policy charge+enqueue+pick included, same address space; {}",
            privileged(&["pushfq/cli/sti (interrupt masking)", "one-shot timer write (xAPIC MMIO; WRMSR with TSC-deadline)"])
        ),
    ))
});

kbench!(yield_across_spaces, |context| {
    let ticks = yield_ping_pong(true)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "as yield_same_space, the two threads in tasks with their own page tables; {}",
            privileged(&["MOV CR3 (with PCID and the no-flush bit when the CPU has PCID)", "cli/sti", "timer write"])
        ),
    ))
});

kbench!(yield_round_robin, |context| {
    // The same ping-pong with CPU 0 under round robin: the policy's share
    // of a yield is a list rotation instead of a tree re-insert.
    let before = task::scheduler::policy_of(0);
    task::scheduler::set_policy(0, PolicyKind::RoundRobin).map_err(|e| format!("{e}"))?;
    let ticks = yield_ping_pong(false);
    task::scheduler::set_policy(0, before).map_err(|e| format!("{e}"))?;
    Ok(context.per_operation(
        ticks?,
        1,
        format!(
            "as yield_same_space with CPU 0 under the round-robin policy; {}",
            privileged(&[
                "pushfq/cli/sti (interrupt masking)",
                "one-shot timer write (xAPIC MMIO; WRMSR with TSC-deadline)"
            ])
        ),
    ))
});

kbench!(yield_fpu, |context| {
    let ticks = yield_ping_pong_with(false, true)?;
    Ok(context.per_operation(
        ticks,
        1,
        format!(
            "as yield_same_space, both threads using the FPU (eager switching: the outgoing thread's \
             FPU/SSE/AVX state saved, the incoming one's restored); {}",
            privileged(&["XSAVEOPT (or XSAVE/FXSAVE)", "XRSTOR (or FXRSTOR)", "cli/sti", "timer write"])
        ),
    ))
});

kbench!(spawn_exit_join, |context| {
    const COUNT: u64 = 500;
    // Warm the stack cache and the heap.
    for _ in 0..20 {
        Builder::new("warm").cpus(CpuSet::only(0)).spawn(|| {}).map_err(|e| format!("{e:?}"))?.join();
    }
    let start = tsc::now();
    for _ in 0..COUNT {
        let handle = Builder::new("child").cpus(CpuSet::only(0)).spawn(|| {}).map_err(|e| format!("{e:?}"))?;
        handle.join();
    }
    let ticks = tsc::now() - start;
    Ok(context.per_operation(
        ticks,
        COUNT,
        format!(
            "Builder::spawn of a new task with one kernel thread, its run, exit, the reaper's clean-up and join; {}",
            privileged(&["cli/sti", "timer writes", "no CR3 write (kernel space)"])
        ),
    ))
});

kbench!(pick_next, |context| {
    // The policies alone, with synthetic entities: 100,000 kernel threads
    // would need 3 GiB of stacks. Each step is what a switch asks of the
    // policy: pick, charge, enqueue again.
    let mut main = None;
    for (kind, name) in [(PolicyKind::Fair, "fair"), (PolicyKind::RoundRobin, "round-robin")] {
        for count in [10u64, 1_000, 100_000] {
            let mut policy =
                orrery_sched::new_policy(kind, Config::for_tsc_hz(tsc::hz())).map_err(|e| format!("{e:?}"))?;
            policy.reserve(count as usize).map_err(|e| format!("{e:?}"))?;
            for id in 0..count {
                policy.enqueue(Entity::new(ThreadId(id)), EnqueueReason::New).map_err(|e| format!("{e:?}"))?;
            }
            let steps = 2_000u64;
            let (pick, full) = interrupts::without(|| {
                let mut pick_ticks = 0;
                let start = tsc::now();
                for _ in 0..steps {
                    let before = tsc::now();
                    let mut entity = policy.pick_next().expect("queued");
                    pick_ticks += tsc::now() - before;
                    policy.charge(&mut entity, 1_000_000);
                    let _ = policy.enqueue(entity, EnqueueReason::Preempted);
                }
                (pick_ticks, tsc::now() - start)
            });
            let figure = context.per_operation(
                pick,
                steps,
                format!("{name} policy, {count} runnable: pick_next alone (plus one rdtsc); pick+charge+enqueue {} per step", full / steps),
            );
            if kind == PolicyKind::Fair && count == 100_000 {
                main = Some(figure);
            } else {
                context.extra(&format!("{name}-{count}"), &figure);
            }
        }
    }
    main.ok_or_else(|| "no figure".into())
});

/// A thread on CPU 1 waits on a queue; one on CPU 0 wakes it `samples`
/// times and measures how long until it runs again. With `loaded`, a
/// CPU-bound thread shares CPU 1 with the sleeper, so each wake-up has to
/// preempt it. Returns the sorted samples in TSC ticks.
fn cross_cpu_wakeups(samples: u64, loaded: bool) -> Result<Vec<u64>, alloc::string::String> {
    if smp::cpu_count() < 2 {
        return Err("needs 2 CPUs: cargo run -- --bench cross_cpu_wakeup,cross_cpu_wakeup_loaded --smp 2".into());
    }
    struct Shared {
        queue: WaitQueue,
        turn: crate::sync::SpinLock<u64>,
        woke_at: AtomicU64,
        stop: AtomicBool,
        samples: crate::sync::SpinLock<Vec<u64>>,
    }
    let shared = Arc::new(Shared {
        queue: WaitQueue::new(),
        turn: crate::sync::SpinLock::new(0),
        woke_at: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        samples: crate::sync::SpinLock::new(Vec::new()),
    });
    let spinner = if loaded {
        let shared = shared.clone();
        let spinner = Builder::new("spinner").cpus(CpuSet::only(1)).spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        });
        Some(spinner.map_err(|e| format!("{e:?}"))?)
    } else {
        None
    };
    let sleeper_shared = shared.clone();
    let sleeper = Builder::new("sleeper")
        .cpus(CpuSet::only(1))
        .spawn(move || {
            let shared = sleeper_shared;
            let mut seen = 0;
            while seen < samples {
                let guard = shared.queue.wait_while(&shared.turn, None, |turn| *turn == seen).expect("no kill");
                seen = *guard;
                drop(guard);
                shared.woke_at.store(tsc::now(), Ordering::SeqCst);
            }
        })
        .map_err(|e| format!("{e:?}"))?;
    let waker_shared = shared.clone();
    let waker = Builder::new("waker")
        .cpus(CpuSet::only(0))
        .spawn(move || {
            let shared = waker_shared;
            let mut measured = Vec::new();
            for round in 1..=samples {
                // Let the sleeper get back to sleep.
                task::sleep_for_nanos(200_000);
                shared.woke_at.store(0, Ordering::SeqCst);
                let start = tsc::now();
                *shared.turn.lock() = round;
                shared.queue.wake_all();
                while shared.woke_at.load(Ordering::SeqCst) == 0 {
                    core::hint::spin_loop();
                }
                measured.push(shared.woke_at.load(Ordering::SeqCst).saturating_sub(start));
            }
            measured.sort_unstable();
            *shared.samples.lock() = measured;
            shared.stop.store(true, Ordering::SeqCst);
        })
        .map_err(|e| format!("{e:?}"))?;
    waker.join();
    sleeper.join();
    if let Some(spinner) = spinner {
        spinner.join();
    }
    let samples = core::mem::take(&mut *shared.samples.lock());
    Ok(samples)
}

kbench!(cross_cpu_wakeup, |context| {
    const SAMPLES: u64 = 500;
    let mut samples = cross_cpu_wakeups(SAMPLES, false)?;
    Ok(context.per_operation(
        median(&mut samples),
        1,
        format!(
            "median of {SAMPLES}: waker on cpu0 publishes and wakes, sleeper halted on cpu1 runs again; {}",
            privileged(&["wake IPI (ICR write)", "HLT wake-up", "EOI", "IRETQ", "timer writes"])
        ),
    ))
});

kbench!(cross_cpu_wakeup_loaded, |context| {
    const SAMPLES: u64 = 200;
    let mut samples = cross_cpu_wakeups(SAMPLES, true)?;
    let worst = samples.last().copied().unwrap_or(0);
    let p90 = samples.get(samples.len() * 9 / 10).copied().unwrap_or(0);
    let micros = |ticks: u64| tsc::ticks_to_nanos(ticks) / 1000;
    Ok(context.per_operation(
        median(&mut samples),
        1,
        format!(
            "median of {SAMPLES} (90th percentile {} us, worst {} us): as cross_cpu_wakeup with a CPU-bound thread \
             on cpu1, which the woken sleeper must preempt; {}",
            micros(p90),
            micros(worst),
            privileged(&["wake IPI (ICR write)", "EOI", "IRETQ", "timer writes"])
        ),
    ))
});

kbench!(wakeup_latency_loaded, |context| {
    // On CPU 0, a CPU-bound thread and a sleeper: the sleeper sleeps to a
    // deadline 200 times and notes how late it runs. Its timer interrupts
    // the spinner; whether the sleeper runs at once, after the minimum
    // granularity, or only when the spinner's slice ends is the policy's
    // wake-up preemption at work. (One CPU, so under icount the figures
    // are exact.)
    const SAMPLES: usize = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let spinning = stop.clone();
    let spinner = Builder::new("spinner")
        .cpus(CpuSet::only(0))
        .spawn(move || {
            while !spinning.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        })
        .map_err(|e| format!("{e:?}"))?;
    let lateness = Arc::new(crate::sync::SpinLock::new(Vec::with_capacity(SAMPLES)));
    let noted = lateness.clone();
    let sleeper = Builder::new("sleeper")
        .cpus(CpuSet::only(0))
        .spawn(move || {
            // Sleeps of 0.1 to 1.6 ms: some end before the spinner has run
            // the granularity since the sleeper left it the CPU, some after.
            for sample in 0..SAMPLES as u64 {
                let deadline = tsc::now() + tsc::nanos_to_ticks(100_000 + sample * 173_000 % 1_500_000);
                task::sleep_until(deadline);
                let late = tsc::now().saturating_sub(deadline);
                noted.lock().push(late);
            }
        })
        .map_err(|e| format!("{e:?}"))?;
    sleeper.join();
    stop.store(true, Ordering::Relaxed);
    spinner.join();
    let mut samples = core::mem::take(&mut *lateness.lock());
    samples.sort_unstable();
    let micros = |ticks: u64| tsc::ticks_to_nanos(ticks) / 1000;
    let p90 = samples.get(samples.len() * 9 / 10).copied().unwrap_or(0);
    let worst = samples.last().copied().unwrap_or(0);
    Ok(context.per_operation(
        median(&mut samples),
        1,
        format!(
            "median of {SAMPLES} (90th percentile {} us, worst {} us of TSC time): how late a sleeper runs after its \
             deadline on a CPU where a CPU-bound thread runs (fair policy: 6 ms period, 0.75 ms granularity); {}",
            micros(p90),
            micros(worst),
            privileged(&["timer interrupt (EOI, IRETQ)", "timer writes"])
        ),
    ))
});

kbench!(fairness, |context| {
    // Four CPU-bound threads share CPU 0 for 2 s of guest time.
    let seconds = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let start = tsc::now();
    for _ in 0..4 {
        let stop = stop.clone();
        handles.push(
            Builder::new("hog")
                .cpus(CpuSet::only(0))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        core::hint::spin_loop();
                    }
                })
                .map_err(|e| format!("{e:?}"))?,
        );
    }
    let threads: Vec<_> = handles.iter().filter_map(|h| task::thread::get(h.thread_id())).collect();
    task::sleep_until(start + tsc::hz() * seconds);
    stop.store(true, Ordering::Relaxed);
    for handle in &handles {
        handle.join();
    }
    // Each thread was charged its last run when it exited; the `Arc`s keep
    // the records readable after the reaper removed the threads.
    let ran: Vec<u64> = threads.iter().map(|thread| task::scheduler::entity_of(thread).sum_exec_tsc).collect();
    let total: u64 = ran.iter().sum();
    let shares: Vec<f64> = ran.iter().map(|r| *r as f64 * 100.0 / total as f64).collect();
    let deviation = shares.iter().map(|share| (share - 25.0).abs()).fold(0.0, f64::max);
    let _ = context;
    Ok(Figure {
        value: deviation,
        unit: "percentage points (largest deviation from 25%)",
        detail: format!(
            "4 CPU-bound threads on one CPU for {seconds} s of guest time, fair policy, TSC accounting; shares {:.3}%, {:.3}%, {:.3}%, {:.3}%",
            shares[0], shares[1], shares[2], shares[3]
        ),
    })
});

kbench!(future_wake_poll, |context| {
    // A kernel thread wakes a future on its own CPU and yields; the switch
    // goes to the dispatcher, which polls the future and picks the thread
    // again. Per round: the wake (executor queue push, notification), the
    // switch to the dispatcher and back, one poll.
    struct Ping {
        sent: AtomicU64,
        seen: AtomicU64,
        waker: crate::sync::SpinLock<Option<core::task::Waker>>,
    }
    let ping =
        Arc::new(Ping { sent: AtomicU64::new(0), seen: AtomicU64::new(0), waker: crate::sync::SpinLock::new(None) });
    let polled = ping.clone();
    let handle = task::futures::spawn_on(
        0,
        core::future::poll_fn(move |waker_context| {
            let sent = polled.sent.load(Ordering::Acquire);
            polled.seen.store(sent, Ordering::Release);
            if sent >= ROUNDS {
                return core::task::Poll::Ready(());
            }
            *polled.waker.lock() = Some(waker_context.waker().clone());
            core::task::Poll::Pending
        }),
    );
    let pinger = ping.clone();
    let result = Arc::new(AtomicU64::new(0));
    let out = result.clone();
    Builder::new("pinger")
        .cpus(CpuSet::only(0))
        .spawn(move || {
            // Let the future make its first poll.
            while pinger.waker.lock().is_none() {
                task::yield_now();
            }
            let start = tsc::now();
            for round in 1..=ROUNDS {
                pinger.sent.store(round, Ordering::Release);
                if let Some(waker) = pinger.waker.lock().take() {
                    waker.wake();
                }
                task::yield_now();
                if pinger.seen.load(Ordering::Acquire) != round {
                    // The future did not run before the thread came back.
                    return;
                }
            }
            out.store(tsc::now() - start, Ordering::Release);
        })
        .map_err(|e| format!("{e:?}"))?
        .join();
    let _ = task::futures::block_on(handle);
    let ticks = result.load(Ordering::Acquire);
    if ticks == 0 {
        return Err("the future was not polled before the waker ran again".into());
    }
    Ok(context.per_operation(
        ticks,
        ROUNDS,
        format!(
            "a kernel thread wakes a future on its CPU's executor and yields: queue push, switch to the dispatcher, \
             one poll, switch back; {}",
            privileged(&["pushfq/cli/sti", "no IPI (same CPU)"])
        ),
    ))
});
