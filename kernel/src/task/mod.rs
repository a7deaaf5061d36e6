//! The task system: kernel tasks and threads, scheduling, waiting, lifetime
//! and task sets.
//!
//! The API follows Alux's scheduler contract in Rust terms:
//!
//! | Alux | here |
//! |---|---|
//! | create thread, add to task, add to scheduler | [`Builder::spawn`], [`Builder::spawn_in`] |
//! | `Resign` | [`yield_now`] |
//! | `SetTimeout(deadline, unlock)` | [`sleep_until`], [`sleep_until_releasing`] |
//! | `SetInfiniteTimeout(unlock)` | [`block_releasing`], [`WaitQueue`] |
//! | `ClearTimeout(thread)` | [`wake`] |
//! | `ExitThread` | [`exit_thread`] |
//! | `ExitTask(status)` | [`exit_task`] |
//! | `Kill(status)` from anywhere | [`kill`], [`JoinHandle::kill`] |
//! | retain / hold, `HoldScope` | [`domain::Task`] lifetime, [`HoldScope`] |
//! | critical section | [`PreemptGuard`] |
//! | garbage thread | the reaper |
//!
//! plus [`JoinHandle::join`] for a task's exit status.

pub mod domain;
pub mod futures;
pub mod hold;
pub mod reaper;
pub mod scheduler;
pub mod thread;
pub mod trace;
pub mod user;
pub mod wait;

use alloc::{borrow::Cow, boxed::Box, sync::Arc};
use core::sync::atomic::{AtomicBool, Ordering};

pub use hold::HoldScope;
use orrery_sched::{DEFAULT_WEIGHT, PolicyKind};

pub use domain::{ExitStatus, Task, TaskError, TaskId, TaskSet};
pub use scheduler::{PreemptGuard, yield_now};
pub use thread::{Affine, CpuSet, Thread, ThreadId, ThreadKind, ThreadState, WakeReason};
pub use wait::{WaitQueue, block_releasing, sleep_for_nanos, sleep_until, sleep_until_releasing};

use crate::{
    arch::{cpu_index, fpu::FpuState, interrupts, switch},
    mm::stacks::KernelStack,
};

/// Why a spawn failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// No memory for the task, thread, stack or FPU area.
    OutOfMemory,
    /// The thread table is full.
    TooManyThreads,
    /// The task to add a thread to has been killed.
    TaskKilled(TaskId),
    /// The affinity set names no CPU that is running.
    NoCpu,
    /// Setting up the task failed.
    Task(TaskError),
}

impl From<thread::ThreadError> for SpawnError {
    fn from(error: thread::ThreadError) -> Self {
        match error {
            thread::ThreadError::OutOfMemory => SpawnError::OutOfMemory,
            thread::ThreadError::TooManyThreads => SpawnError::TooManyThreads,
        }
    }
}

/// Options for a new task or thread.
pub struct Builder {
    name: Cow<'static, str>,
    allowed: CpuSet,
    affine: Affine,
    weight: u32,
    fpu: bool,
    own_address_space: bool,
    task_set: Option<Arc<TaskSet>>,
}

impl Builder {
    /// A kernel thread called `name`, on any CPU, default weight, no FPU,
    /// sharing the kernel address space.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            allowed: CpuSet::ALL,
            affine: Affine::Any,
            weight: DEFAULT_WEIGHT,
            fpu: false,
            own_address_space: false,
            task_set: None,
        }
    }

    /// Runs only on these CPUs.
    pub fn cpus(mut self, allowed: CpuSet) -> Self {
        self.allowed = allowed;
        self
    }

    /// Sets the affine partner (Hypatia's co-scheduling constraint).
    pub fn affine(mut self, affine: Affine) -> Self {
        self.affine = affine;
        self
    }

    /// Share weight for the fair policy (1024 is the default).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// The thread uses FPU/SSE/AVX registers: save and restore them.
    pub fn fpu(mut self) -> Self {
        self.fpu = true;
        self
    }

    /// The new task gets a page table of its own (kernel half shared).
    pub fn own_address_space(mut self) -> Self {
        self.own_address_space = true;
        self
    }

    /// The new task joins `set` (its area is mapped into the task, which
    /// needs its own address space for that).
    pub fn task_set(mut self, set: Arc<TaskSet>) -> Self {
        self.task_set = Some(set);
        self
    }

    /// Creates a new task running `entry` in its first thread.
    pub fn spawn(self, entry: impl FnOnce() + Send + 'static) -> Result<JoinHandle, SpawnError> {
        let task =
            Task::new(self.name.clone(), self.own_address_space, self.task_set.clone()).map_err(SpawnError::Task)?;
        let result = self.spawn_thread(&task, Box::new(entry));
        // The creator's retain (from `Task::new`) passes to the thread.
        match task.lifetime.release() {
            Ok(Some(cleanup)) => reaper::clean_up_task(task.clone(), cleanup),
            Ok(None) => {}
            Err(error) => panic!("spawn of {task:?}: {error}"),
        }
        let thread = result?;
        Ok(JoinHandle { task, thread })
    }

    /// Adds a thread running `entry` to an existing task.
    pub fn spawn_in(self, task: &Arc<Task>, entry: impl FnOnce() + Send + 'static) -> Result<ThreadId, SpawnError> {
        self.spawn_thread(task, Box::new(entry))
    }

    fn spawn_thread(self, task: &Arc<Task>, entry: Box<dyn FnOnce() + Send>) -> Result<ThreadId, SpawnError> {
        require_a_cpu(self.allowed)?;
        task.lifetime.retain().map_err(|_| SpawnError::TaskKilled(task.id()))?;
        let release_on_error = |error: SpawnError| {
            if let Ok(Some(cleanup)) = task.lifetime.release() {
                reaper::clean_up_task(task.clone(), cleanup);
            }
            error
        };
        let stack = KernelStack::new().map_err(|_| release_on_error(SpawnError::OutOfMemory))?;
        let top = stack.top();
        let fpu = if self.fpu {
            Some(FpuState::new().ok_or_else(|| release_on_error(SpawnError::OutOfMemory))?)
        } else {
            None
        };
        let thread = thread::create(thread::ThreadSpec {
            name: self.name,
            kind: ThreadKind::Kernel,
            task: task.clone(),
            stack: Some(stack),
            fpu,
            entry: Some(entry),
            user: None,
            allowed: self.allowed,
            affine: self.affine,
            weight: self.weight,
            cpu: cpu_index(),
        })
        .map_err(|error| release_on_error(error.into()))?;
        // SAFETY: the stack is fresh and owned by the thread; the thread is
        // not queued yet, so nobody else reads its saved stack pointer.
        unsafe { *thread.descriptor.saved_rsp.get() = switch::initial_stack(top, thread_start) };
        task.threads.lock().push(thread.id());
        task.live_threads.fetch_add(1, Ordering::AcqRel);
        trace::note_thread(thread.id().0, &thread.name);
        trace::record(trace::EventKind::Spawn, thread.id().0, current_id_or_zero());
        scheduler::enqueue_new(&thread);
        Ok(thread.id())
    }
}

/// The calling thread's id, or 0 before the scheduler runs here.
fn current_id_or_zero() -> u64 {
    if scheduler::is_running() { scheduler::current().id().0 } else { 0 }
}

/// First code of every kernel thread.
extern "C" fn thread_start() -> ! {
    scheduler::finish_switch();
    interrupts::enable();
    let me = scheduler::current();
    // SAFETY: only the thread itself takes its entry, once, here.
    let entry = unsafe { (*me.entry.get()).take() };
    // Killed before it ever ran: the entry is dropped unrun.
    if let Some(entry) = entry.filter(|_| !me.must_stop()) {
        entry();
    }
    scheduler::exit_current()
}

/// A task's handle: join it, kill it, look at it.
pub struct JoinHandle {
    task: Arc<Task>,
    thread: ThreadId,
}

impl JoinHandle {
    /// The task.
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// Its first thread.
    pub fn thread_id(&self) -> ThreadId {
        self.thread
    }

    /// Waits until the task has ended and been cleaned up; returns how it
    /// ended.
    pub fn join(&self) -> ExitStatus {
        join(&self.task)
    }

    /// Like [`JoinHandle::join`], but gives up at `deadline_tsc` (`None`).
    pub fn join_until(&self, deadline_tsc: u64) -> Option<ExitStatus> {
        let task = &self.task;
        task.joiners.wait_while(task.finished_lock(), Some(deadline_tsc), |finished| !*finished).ok()?;
        task.exit_status()
    }

    /// Kills the task with `reason`; returns false if it was already dead
    /// or dying.
    pub fn kill(&self, reason: u64) -> bool {
        kill(&self.task, reason)
    }
}

/// Waits until `task` has ended and been cleaned up.
pub fn join(task: &Arc<Task>) -> ExitStatus {
    let _ = task.joiners.wait_while(task.finished_lock(), None, |finished| !*finished);
    task.exit_status().expect("a finished task has a status")
}

/// Kills `task` with `reason` (from any CPU, any thread). Its threads stop
/// at their next preemption point, or when they leave their hold scopes.
/// Returns false if it had already been killed or had exited.
pub fn kill(task: &Arc<Task>, reason: u64) -> bool {
    kill_task(task, ExitStatus::Killed(reason))
}

/// Ends `task` with `status` (the common path of kill and exit).
pub(crate) fn kill_task(task: &Arc<Task>, status: ExitStatus) -> bool {
    let outcome = task.lifetime.kill(status.encode());
    if !outcome.is_first() {
        return false;
    }
    // Pairs with the fence in `wait::prepare` (see `schedule`'s Block case).
    core::sync::atomic::fence(Ordering::SeqCst);
    let threads = task.threads.lock().to_vec();
    for id in threads {
        if let Some(thread) = thread::get(id) {
            stop(&thread);
        }
    }
    if let Some(cleanup) = outcome.into_cleanup() {
        reaper::clean_up_task(task.clone(), cleanup);
    }
    reaper::kick_if_pending();
    true
}

/// Makes a thread of a killed task stop as soon as it may: a waiting thread
/// is woken (its wait returns `Killed`, or it stops if it holds nothing), a
/// running one is told to reschedule (it stops at that preemption point).
fn stop(thread: &Thread) {
    loop {
        match thread.state() {
            ThreadState::Blocking | ThreadState::Blocked => {
                if scheduler::wake(thread, WakeReason::Killed) {
                    return;
                }
            }
            // A queued thread runs once more and stops where it resumes,
            // after undoing whatever wait it was in; reaping it from the
            // queue would leave its registrations behind.
            ThreadState::Runnable => return,
            ThreadState::Running => {
                if !thread.is_holding() {
                    scheduler::resched(thread.descriptor.cpu());
                }
                return;
            }
            ThreadState::New | ThreadState::Waking => core::hint::spin_loop(),
            ThreadState::Dead => return,
        }
    }
}

/// Makes a task without threads (a process before it starts): with
/// `own_address_space` it gets its own page table. The caller holds the
/// creator's retain and must pass it on ([`release_creator`]).
pub fn new_task(name: Cow<'static, str>, own_address_space: bool) -> Result<Arc<Task>, TaskError> {
    Task::new(name, own_address_space, None)
}

/// Gives up the creator's retain of a task made with [`new_task`].
pub fn release_creator(task: &Arc<Task>) {
    match task.lifetime.release() {
        Ok(Some(cleanup)) => reaper::clean_up_task(task.clone(), cleanup),
        Ok(None) => {}
        Err(error) => panic!("creator release of {task:?}: {error}"),
    }
}

/// Adds a user thread to `task`, starting from `state`, and makes it
/// runnable.
pub fn spawn_user_thread(
    task: &Arc<Task>,
    name: Cow<'static, str>,
    state: user::UserState,
    allowed: CpuSet,
) -> Result<ThreadId, SpawnError> {
    require_a_cpu(allowed)?;
    task.lifetime.retain().map_err(|_| SpawnError::TaskKilled(task.id()))?;
    let thread = thread::create(thread::ThreadSpec {
        name,
        kind: ThreadKind::User,
        task: task.clone(),
        stack: None,
        fpu: None,
        entry: None,
        user: Some(alloc::boxed::Box::new(state)),
        allowed,
        affine: Affine::Any,
        weight: DEFAULT_WEIGHT,
        cpu: cpu_index(),
    });
    let thread = match thread {
        Ok(thread) => thread,
        Err(error) => {
            release_creator(task);
            return Err(error.into());
        }
    };
    task.threads.lock().push(thread.id());
    task.live_threads.fetch_add(1, Ordering::AcqRel);
    trace::note_thread(thread.id().0, &thread.name);
    trace::record(trace::EventKind::Spawn, thread.id().0, current_id_or_zero());
    scheduler::enqueue_new(&thread);
    Ok(thread.id())
}

/// `NoCpu` unless `allowed` names a CPU that is running.
fn require_a_cpu(allowed: CpuSet) -> Result<(), SpawnError> {
    let count = crate::arch::smp::cpu_count();
    if (0..count).any(|cpu| allowed.contains(cpu)) { Ok(()) } else { Err(SpawnError::NoCpu) }
}

/// Registers `thread` (a user thread's system-call future) to be woken when
/// `task` has finished; the future must look at `is_finished` again after.
pub fn register_joiner(task: &Arc<Task>, thread: Arc<Thread>) {
    task.joiners.register(thread);
}

/// Takes a registration of [`register_joiner`] back.
pub fn unregister_joiner(task: &Arc<Task>, thread: &Thread) {
    task.joiners.remove(thread);
}

/// Ends `task` with `status` from anywhere (the process layer's exit, kill
/// and fault paths). Returns false if it had already ended.
pub fn kill_with_status(task: &Arc<Task>, status: ExitStatus) -> bool {
    kill_task(task, status)
}

/// Prints every thread's state (for diagnosing hangs).
pub fn dump_threads() {
    thread::for_each(|thread| {
        crate::println!(
            "thread {:>12} {:<20} {:?} cpu{} task {} reason {:?} holds {}",
            thread.id().0,
            thread.name,
            thread.state(),
            thread.descriptor.cpu(),
            thread.task.id().0,
            thread.wake_reason(),
            thread.hold_depth.load(Ordering::Relaxed)
        );
    });
    for cpu in 0..crate::arch::smp::cpu_count() {
        crate::println!("cpu{cpu}: {} queued, {} switches", scheduler::queued(cpu), scheduler::switch_count(cpu));
    }
}

/// Ends the calling thread.
pub fn exit_thread() -> ! {
    scheduler::exit_current()
}

/// Ends the calling thread's task with `status`, and the thread with it.
pub fn exit_task(status: u64) -> ! {
    let task = scheduler::current().task.clone();
    kill_task(&task, ExitStatus::Exited(status));
    drop(task);
    scheduler::exit_current()
}

/// Wakes the thread `id` from a sleep or block. Returns false if it was not
/// waiting.
pub fn wake(id: ThreadId) -> bool {
    thread::lookup(id).is_some_and(|thread| scheduler::wake(thread, WakeReason::Woken))
}

/// The calling thread's id.
pub fn current_id() -> ThreadId {
    scheduler::current().id()
}

static KERNEL_TASK: spin::Once<Arc<Task>> = spin::Once::new();
static STARTED: AtomicBool = AtomicBool::new(false);

fn kernel_task() -> &'static Arc<Task> {
    KERNEL_TASK.call_once(|| Task::new("kernel".into(), false, None).expect("memory for the kernel task"))
}

/// Turns the calling context into this CPU's dispatcher and starts
/// scheduling here.
fn become_dispatcher() {
    let cpu = cpu_index();
    let dispatcher = thread::create(thread::ThreadSpec {
        name: alloc::format!("dispatcher{cpu}").into(),
        kind: ThreadKind::Dispatcher,
        task: kernel_task().clone(),
        stack: None,
        fpu: None,
        entry: None,
        user: None,
        allowed: CpuSet::only(cpu),
        affine: Affine::Any,
        weight: DEFAULT_WEIGHT,
        cpu,
    })
    .expect("memory for a dispatcher");
    trace::note_thread(dispatcher.id().0, &dispatcher.name);
    scheduler::start_cpu(dispatcher);
}

/// Starts the task system on the bootstrap CPU: the scheduler, its
/// dispatcher, the reaper. Application processors join with
/// [`start_application_processor`].
pub fn init(config: orrery_sched::Config, policy: PolicyKind, trace_enabled: bool) {
    scheduler::init(config, policy);
    futures::init();
    user::init();
    if trace_enabled {
        trace::enable(crate::arch::smp::cpu_count());
    }
    become_dispatcher();
    STARTED.store(true, Ordering::Release);
    reaper::start();
}

/// Waits (up to a second) until every online CPU schedules; returns how
/// many do.
pub fn wait_for_cpus() -> usize {
    let count = crate::arch::smp::cpu_count();
    let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz();
    loop {
        let ready = (0..count).filter(|cpu| scheduler::is_running_on(*cpu)).count();
        if ready == count || crate::arch::tsc::now() > deadline {
            return ready;
        }
        core::hint::spin_loop();
    }
}

/// True once [`init`] has run.
pub fn is_started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// An application processor's entry into the task system: it becomes its
/// CPU's dispatcher and never returns.
pub fn start_application_processor() -> ! {
    while !is_started() {
        interrupts::enable_and_halt();
    }
    become_dispatcher();
    scheduler::dispatcher_loop()
}

/// The bootstrap CPU's last step: run `main` as a kernel thread and become
/// the dispatcher of CPU 0.
pub fn run_main(main: impl FnOnce() + Send + 'static) -> ! {
    Builder::new("main").spawn(main).expect("memory for the main thread");
    scheduler::dispatcher_loop()
}
