//! Tests of kernel futures on the per-CPU executors: they run on the CPU
//! they were spawned on, timers and other CPUs wake them, busy threads do
//! not starve them, cancelled ones are dropped, kernel threads wait for them.

use alloc::{format, sync::Arc, vec::Vec};
use core::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    task::Poll,
};

use crate::{
    arch::{cpu_index, smp, tsc},
    check, check_eq, ktest,
    task::{
        self, Builder, CpuSet,
        futures::{self, Cancelled, Signal},
        scheduler,
    },
    time,
};

/// Pins the calling test thread where it runs and returns another CPU (the
/// same one on a one-CPU machine).
fn other_cpu() -> usize {
    let here = cpu_index();
    scheduler::set_affinity(scheduler::current(), CpuSet::only(here));
    (here + 1) % smp::cpu_count()
}

ktest!(kernel_futures_run_on_their_cpus_executor, || {
    let handles: Vec<_> = (0..smp::cpu_count())
        .map(|cpu| {
            futures::spawn_on(cpu, async move {
                // A timer wakes it: the timer interrupt of the CPU polling it.
                futures::sleep_for_nanos(1_000_000).await;
                let first = cpu_index();
                futures::sleep_for_nanos(500_000).await;
                (first, cpu_index())
            })
        })
        .collect();
    for (cpu, handle) in handles.into_iter().enumerate() {
        let ran = task::futures::block_on(handle).ok_or("killed")?;
        check_eq!(ran, Ok((cpu, cpu)), "future spawned on cpu{cpu}");
    }
    Ok(())
});

ktest!(block_on_sleeps_until_the_future_is_done, || {
    let start = tsc::now();
    let deadline = start + tsc::nanos_to_ticks(2_000_000);
    check_eq!(futures::block_on(futures::sleep_until(deadline)), Some(()));
    check!(tsc::now() >= deadline, "woke before the deadline");
    // A ready future needs no sleep at all.
    check_eq!(futures::block_on(async { 42 }), Some(42));
    Ok(())
});

ktest!(busy_threads_do_not_starve_kernel_futures, || {
    let cpu = other_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    // Two CPU-bound threads on the future's CPU: its run queue is never
    // empty, so the dispatcher never runs for want of work.
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (stop, spins) = (stop.clone(), spins.clone());
            Builder::new("spinner")
                .cpus(CpuSet::only(cpu))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        spins.fetch_add(1, Ordering::Relaxed);
                        core::hint::spin_loop();
                    }
                })
                .map_err(|e| format!("{e:?}"))
        })
        .collect::<Result<_, _>>()?;
    let before = spins.load(Ordering::Relaxed);
    let handle = futures::spawn_on(cpu, async move {
        for _ in 0..10 {
            futures::sleep_for_nanos(300_000).await;
        }
        cpu_index()
    });
    let result = futures::block_on(handle);
    let during = spins.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for spinner in spinners {
        spinner.join();
    }
    check_eq!(result, Some(Ok(cpu)));
    check!(during > 0, "the threads did not run meanwhile");
    Ok(())
});

/// Ready again at once: pending on its first poll, having woken itself.
struct YieldOnce(bool);

impl core::future::Future for YieldOnce {
    type Output = ();

    fn poll(mut self: core::pin::Pin<&mut Self>, context: &mut core::task::Context<'_>) -> core::task::Poll<()> {
        if self.0 {
            return core::task::Poll::Ready(());
        }
        self.0 = true;
        context.waker().wake_by_ref();
        core::task::Poll::Pending
    }
}

ktest!(more_ready_futures_than_one_turn_polls_still_finish_beside_a_busy_thread, || {
    let cpu = other_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    // One CPU-bound thread alone: nothing queued behind it would preempt it,
    // so only the futures left over from a turn can get the CPU back.
    let spinner = {
        let stop = stop.clone();
        Builder::new("spinner")
            .cpus(CpuSet::only(cpu))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    core::hint::spin_loop();
                }
            })
            .map_err(|e| format!("{e:?}"))?
    };
    task::sleep_for_nanos(1_000_000);
    // Several dispatcher turns' worth (a turn polls at most 32).
    let handles: Vec<_> = (0..100).map(|_| futures::spawn_on(cpu, YieldOnce(false))).collect();
    let deadline = tsc::now() + tsc::hz() * 20;
    while !handles.iter().all(|handle| handle.is_finished()) && tsc::now() < deadline {
        task::sleep_for_nanos(1_000_000);
    }
    let finished = handles.iter().filter(|handle| handle.is_finished()).count();
    stop.store(true, Ordering::Relaxed);
    spinner.join();
    check_eq!(finished, 100, "futures left waiting behind a busy thread");
    Ok(())
});

ktest!(futures_are_woken_from_other_cpus, || {
    let cpu = other_cpu();
    let signal = Arc::new(Signal::new());
    let awaited = signal.clone();
    let handle = futures::spawn_on(cpu, async move {
        awaited.wait().await;
        cpu_index()
    });
    // Set from a kernel thread on this CPU (another one, with several).
    let setter = signal.clone();
    Builder::new("setter")
        .cpus(CpuSet::only(cpu_index()))
        .spawn(move || {
            task::sleep_for_nanos(1_000_000);
            setter.set();
        })
        .map_err(|e| format!("{e:?}"))?
        .join();
    check_eq!(futures::block_on(handle), Some(Ok(cpu)));
    Ok(())
});

ktest!(dropped_sleeps_take_their_timers_back, || {
    // Sleeps with a far deadline, each polled once (which queues its timer)
    // and dropped: the timers, and the wakers they hold, must go with them.
    const SLEEPS: usize = 300;
    let cpu = other_cpu();
    let handle = futures::spawn_on(cpu, async move {
        let before = time::pending_waker_timers();
        let far = tsc::now() + tsc::hz() * 3600;
        let mut pending = 0;
        for _ in 0..SLEEPS {
            let mut sleep = core::pin::pin!(futures::sleep_until(far));
            let polled = core::future::poll_fn(|context| Poll::Ready(sleep.as_mut().poll(context))).await;
            pending += usize::from(polled.is_pending());
        }
        (pending, before, time::pending_waker_timers())
    });
    let (pending, before, after) = futures::block_on(handle).ok_or("killed")?.map_err(|e| format!("{e:?}"))?;
    check_eq!(pending, SLEEPS, "a sleep with a far deadline was ready");
    check!(after <= before, "{} timers left queued by {SLEEPS} dropped sleeps", after.saturating_sub(before));
    Ok(())
});

ktest!(cancelled_futures_are_dropped, || {
    let cpu = other_cpu();
    let live_before = futures::live(cpu);
    let owned = Arc::new(());
    let held = owned.clone();
    let never = Arc::new(Signal::new());
    let waits = never.clone();
    let handle = futures::spawn_on(cpu, async move {
        let _held = held;
        waits.wait().await;
    });
    // Let it run to its wait, then cancel it.
    task::sleep_for_nanos(2_000_000);
    check_eq!(Arc::strong_count(&owned), 2, "the future holds its data while it waits");
    handle.cancel();
    let deadline = tsc::now() + tsc::hz() * 20;
    while !handle.is_released() && tsc::now() < deadline {
        task::sleep_for_nanos(200_000);
    }
    check!(handle.is_released(), "the executor kept a cancelled future");
    check_eq!(Arc::strong_count(&owned), 1, "a cancelled future is dropped");
    check_eq!(handle.try_take(), Some(Err(Cancelled)));
    check_eq!(futures::live(cpu), live_before);
    Ok(())
});
