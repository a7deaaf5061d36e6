//! User threads: contexts the dispatcher enters with `execute()`.
//!
//! A user thread is a [`Thread`] of kind `User` whose state is a
//! [`UserState`] — its registers, the system call it waits in (a future),
//! its FPU state when it has live vector registers — and no kernel stack.
//! When the scheduler picks one, the CPU's dispatcher (on its own stack)
//! enters it with [`execute`](crate::arch::user::execute) and handles the
//! trap that brings it back: a system call is answered at once, or parked as
//! a future polled again when the thread is woken; an interrupt may lead to
//! a reschedule; a fault goes to the process layer.
//!
//! The process layer (`crate::proc`) installs the [`TrapHandler`] that turns
//! traps into [`Outcome`]s, and hears from this module when a thread
//! cannot go on for want of kernel memory ([`StateLostHandler`]), so that
//! its process ends with a status saying so instead of the kernel
//! panicking; this module is the mechanism around them.

use alloc::sync::Arc;
use core::{
    any::{Any, TypeId},
    future::Future,
    mem::MaybeUninit,
    pin::Pin,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    task::{Context, Poll, Waker},
};

use super::{
    TaskId,
    scheduler::{self, HandOff, Switch},
    thread::{Thread, ThreadId, ThreadKind, ThreadState},
};
use crate::arch::{
    cpu::MAX_CPUS,
    cpu_index,
    fpu::FpuState,
    interrupts,
    user::{self, Trap, UserContext},
};

/// A system call that has to wait: polled on the dispatcher until ready;
/// its output goes to the thread's `rax`.
///
/// Kept inline in the thread's state, not boxed: a wait takes no heap
/// allocation and free. The future must be `Unpin` (it is moved after a
/// first poll, from the handler's outcome into the thread) and fit
/// [`SyscallFuture::WORDS`] words, which is checked at compile time; a
/// larger one can be passed boxed (`Box::pin(future)` is itself a small
/// `Unpin` future).
pub struct SyscallFuture {
    /// The future, of the type `poll` and `drop` were made for.
    data: MaybeUninit<[u64; SyscallFuture::WORDS]>,
    poll: unsafe fn(*mut u8, &mut Context<'_>) -> Poll<u64>,
    drop: unsafe fn(*mut u8),
}

// SAFETY: `new` only accepts `Send` futures, and `data` holds nothing else.
unsafe impl Send for SyscallFuture {}

impl SyscallFuture {
    /// Words of room for the future.
    pub const WORDS: usize = 5;

    /// Parks `future`.
    pub fn new<F: Future<Output = u64> + Send + Unpin + 'static>(future: F) -> Self {
        const {
            assert!(
                core::mem::size_of::<F>() <= core::mem::size_of::<[u64; Self::WORDS]>()
                    && core::mem::align_of::<F>() <= core::mem::align_of::<u64>(),
                "a system-call future too large to keep inline: box it"
            )
        };
        let mut data = MaybeUninit::<[u64; Self::WORDS]>::uninit();
        // SAFETY: `data` is large and aligned enough for an `F` (checked
        // above) and unused; it owns the future from now on, and `drop`
        // drops it exactly once.
        unsafe { data.as_mut_ptr().cast::<F>().write(future) };
        Self { data, poll: poll_as::<F>, drop: drop_as::<F> }
    }

    /// Polls the future.
    pub fn poll(&mut self, context: &mut Context<'_>) -> Poll<u64> {
        // SAFETY: `data` holds a live future of the type `poll` was made for
        // (`new`), not yet dropped (only `Drop` does).
        unsafe { (self.poll)(self.data.as_mut_ptr().cast(), context) }
    }
}

impl Drop for SyscallFuture {
    fn drop(&mut self) {
        // SAFETY: as in `poll`; the future is not used again.
        unsafe { (self.drop)(self.data.as_mut_ptr().cast()) }
    }
}

/// [`SyscallFuture`]'s poll of an `F`.
///
/// # Safety
///
/// `data` points to a live `F`, not used elsewhere meanwhile.
unsafe fn poll_as<F: Future<Output = u64> + Unpin>(data: *mut u8, context: &mut Context<'_>) -> Poll<u64> {
    // SAFETY: the caller's promise; `F: Unpin`, so it may be pinned for the
    // poll and moved afterwards.
    Pin::new(unsafe { &mut *data.cast::<F>() }).poll(context)
}

/// [`SyscallFuture`]'s drop of an `F`.
///
/// # Safety
///
/// `data` points to a live `F`, never used again.
unsafe fn drop_as<F>(data: *mut u8) {
    // SAFETY: the caller's promise.
    unsafe { data.cast::<F>().drop_in_place() }
}

/// What the process layer decides about a trap.
pub enum Outcome {
    /// Go back to user mode (the trap needed nothing; a syscall result is
    /// already in the context).
    Resume,
    /// Return this value from the system call.
    Return(u64),
    /// The system call waits: poll this future.
    Pending(SyscallFuture),
    /// The system call waits in this future, which the handler has already
    /// polled once between [`begin_wait`] and `Pending` (so the thread is
    /// `Blocking` and registered where its waker looks), and it took this
    /// thread off a wait queue instead of waking it: the CPU goes straight
    /// to that thread (see [`scheduler::block_and_switch_to`]). Should the
    /// first poll be ready instead, the handler calls [`end_wait`], wakes
    /// the thread itself and returns the value.
    ///
    /// The third field is what the target's own wait returns: the thread
    /// that hands the CPU over is the one that ended that wait.
    PendingHandOff(SyscallFuture, Arc<Thread>, u64),
    /// Give the CPU to another thread, then resume.
    Yield,
    /// The thread (and, by the handler's decision, its process) is finished.
    Exit,
}

/// The process layer's data of a user thread (see [`UserState::set_owner`]).
pub type Owner = dyn Any + Send + Sync;

/// A user thread's owner with its concrete type, noted once when it is set,
/// so that a trap finds it as that type without a virtual call.
pub struct UserOwner {
    owner: Arc<Owner>,
    type_id: TypeId,
}

impl UserOwner {
    fn new(owner: Arc<Owner>) -> Self {
        // The object's own type, not the `Arc`'s.
        let type_id = (*owner).type_id();
        Self { owner, type_id }
    }

    /// The owner, if it is a `T`.
    #[inline]
    pub fn downcast<T: Any>(&self) -> Option<&T> {
        if self.type_id != TypeId::of::<T>() {
            return None;
        }
        // SAFETY: `type_id` is the concrete type of `owner` (taken from it
        // in `new`; neither changes afterwards), so `owner` points to a
        // `T`: this is `downcast_ref` without asking the object again.
        Some(unsafe { &*Arc::as_ptr(&self.owner).cast::<T>() })
    }
}

/// Turns a trap of a user thread into an [`Outcome`], given the thread's
/// owner (borrowed: no reference count is taken per trap). Runs on the
/// dispatcher with interrupts on, preemption held off; must not block.
pub type TrapHandler = fn(&Thread, Option<&UserOwner>, &mut UserContext, Trap) -> Outcome;

/// Hears that a user thread cannot go on: it trapped, but there was no
/// memory for the area its vector registers are saved in, so they would be
/// lost at its next switch. It decides what becomes of the thread's process;
/// the dispatcher then ends the thread. Runs as a [`TrapHandler`] does;
/// `context` holds the registers as at any trap.
pub type StateLostHandler = fn(&Thread, &UserContext);

/// The process layer's part in running user threads.
pub struct Handlers {
    /// Every trap.
    pub trap: TrapHandler,
    /// A thread whose state could not be kept.
    pub state_lost: StateLostHandler,
}

static HANDLERS: spin::Once<Handlers> = spin::Once::new();

/// Installs the process layer's handlers (once; later calls are ignored).
pub fn set_handlers(handlers: Handlers) {
    HANDLERS.call_once(|| handlers);
}

/// The installed handlers; before there are any, every thread just ends.
fn handlers() -> &'static Handlers {
    static NONE: Handlers = Handlers { trap: |_, _, _, _| Outcome::Exit, state_lost: |_, _| {} };
    HANDLERS.get().unwrap_or(&NONE)
}

/// Everything a user thread is when it is not running.
pub struct UserState {
    /// Its registers.
    pub context: UserContext,
    /// The system call it waits in.
    pending: Option<SyscallFuture>,
    /// The result of that system call, when the thread was handed the CPU
    /// by the thread that ended its wait (see [`Outcome::PendingHandOff`]):
    /// it returns this instead of polling.
    handed: Option<u64>,
    /// Its vector registers, when they are live (it was interrupted rather
    /// than calling the kernel). Dropped when it waits in a system call,
    /// where the ABI makes them dead.
    fpu: Option<FpuState>,
    /// MXCSR and x87 control word, kept across system calls.
    mxcsr: u32,
    fcw: u16,
    /// Wakes this thread (made once).
    waker: Waker,
    /// Opaque data of the process layer (the process, by reference count).
    owner: Option<UserOwner>,
    /// What the fast system-call path may answer for this thread (see
    /// `arch::user::set_fast_context`).
    pub fast_allowed: u64,
    /// Owner id for the fast path.
    pub fast_owner: u64,
}

impl UserState {
    /// The state of a thread about to start at `context`.
    pub fn new(context: UserContext) -> Self {
        Self {
            context,
            pending: None,
            handed: None,
            fpu: None,
            mxcsr: 0x1f80,
            fcw: 0x37f,
            // Replaced by the real waker once the thread has an id.
            waker: Waker::noop().clone(),
            owner: None,
            fast_allowed: 0,
            fast_owner: 0,
        }
    }

    /// Sets the process layer's data for the thread (before it is shared).
    pub fn set_owner(&mut self, owner: Arc<Owner>) {
        self.owner = Some(UserOwner::new(owner));
    }

    pub(super) fn set_waker(&mut self, thread: ThreadId) {
        self.waker = super::futures::thread_waker(thread);
    }

    /// Bytes of kernel heap this state holds beyond the thread record.
    pub fn heap_bytes(&self) -> usize {
        // What it waits in is kept inline.
        core::mem::size_of::<Self>() + self.fpu.as_ref().map_or(0, FpuState::size)
    }

    /// True while it waits in a system call.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }
}

/// Which user thread's vector registers each CPU holds (0: none known).
static FPU_OWNER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Forgets whose vector registers this CPU holds (a kernel thread loaded
/// its own).
pub(super) fn fpu_clobbered() {
    FPU_OWNER[cpu_index()].store(0, Ordering::Relaxed);
}

/// A scratch area per CPU for loading a clean state, made at boot
/// ([`init`]) so that no user trap has to allocate one, with the control
/// words it was last set to.
struct CleanArea {
    area: core::cell::UnsafeCell<FpuState>,
    control: core::cell::Cell<(u32, u16)>,
}

// SAFETY: each CPU touches only its own area, with interrupts off (see
// `load_clean_state`), so no two contexts ever use one at once.
unsafe impl Sync for CleanArea {}

static CLEAN: spin::Once<alloc::vec::Vec<CleanArea>> = spin::Once::new();

/// Makes each CPU's area for loading a clean vector state. Call once at
/// boot, once the CPUs are counted and before any user thread runs.
pub(super) fn init() {
    CLEAN.call_once(|| {
        (0..crate::arch::smp::cpu_count())
            .map(|_| {
                let area = FpuState::new().expect("memory for clean FPU states at boot");
                let control = core::cell::Cell::new(area.control());
                CleanArea { area: core::cell::UnsafeCell::new(area), control }
            })
            .collect()
    });
}

/// Loads a clean register file with the given control words. Interrupts
/// must be off: the area is this CPU's, and an interrupt handler that
/// loaded one meanwhile would change it under us.
fn load_clean_state(mxcsr: u32, fcw: u16) {
    debug_assert!(!interrupts::are_enabled());
    let areas = CLEAN.get().expect("user::init ran at boot, before any user thread");
    let clean = &areas[cpu_index()];
    // SAFETY: this CPU's area, used only here with interrupts off (above),
    // so nothing else holds a reference to it.
    let area = unsafe { &mut *clean.area.get() };
    // The control words rarely change: most loads write nothing.
    if clean.control.get() != (mxcsr, fcw) {
        area.set_control(mxcsr, fcw);
        clean.control.set((mxcsr, fcw));
    }
    area.restore();
}

/// The task whose user threads' next [`FAILED_SAVES`] area allocations fail
/// (see [`fail_next_fpu_saves`]).
static FAILING_TASK: AtomicU64 = AtomicU64::new(0);
/// How many area allocations are still to fail.
static FAILED_SAVES: AtomicU32 = AtomicU32::new(0);

/// For tests: makes the next `count` allocations of an area for saving the
/// vector registers of a user thread of `task` fail as if the heap were
/// exhausted (0 stops it). Such an allocation happens at the first
/// interrupt or exception of a thread after it started or waited in a
/// system call.
pub fn fail_next_fpu_saves(task: TaskId, count: u32) {
    FAILED_SAVES.store(0, Ordering::SeqCst);
    FAILING_TASK.store(task.0, Ordering::SeqCst);
    FAILED_SAVES.store(count, Ordering::SeqCst);
}

/// An area to save `thread`'s vector registers in, or `None` when there is
/// no memory for one (really, or by [`fail_next_fpu_saves`]).
fn new_save_area(thread: &Thread) -> Option<FpuState> {
    // One load of a counter that is 0 outside tests, on a path that is
    // about to allocate anyway.
    if FAILED_SAVES.load(Ordering::Relaxed) != 0
        && FAILING_TASK.load(Ordering::Relaxed) == thread.task.id().0
        && FAILED_SAVES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| count.checked_sub(1)).is_ok()
    {
        return None;
    }
    FpuState::new()
}

/// Runs the current user thread on this CPU's dispatcher until the CPU
/// should run something else. Returns with interrupts on; the caller checks
/// `scheduler::current()` again.
pub(super) fn run(thread: &Thread) {
    // SAFETY: only the dispatcher running the thread touches its user state,
    // and a thread runs on one CPU at a time.
    let state = unsafe { (*thread.user.get()).as_mut() }.expect("a user thread has user state");
    let handler = handlers().trap;
    loop {
        interrupts::enable();
        if thread.must_stop() {
            end_thread(thread, state);
            return;
        }
        // Polled where it is kept (it is not small enough to move for free).
        if let Some(value) = state.handed.take() {
            // Handed the CPU by the thread that ended the wait: done.
            state.context.set_return(value);
            state.pending = None;
        } else if let Some(future) = state.pending.as_mut() {
            // Visible to wakers before the poll, so a wake-up during the poll
            // is not lost (see `thread`'s state machine).
            thread.descriptor.set_state(ThreadState::Blocking);
            core::sync::atomic::fence(Ordering::SeqCst);
            let mut context = Context::from_waker(&state.waker);
            match future.poll(&mut context) {
                Poll::Ready(value) => {
                    thread.descriptor.set_state(ThreadState::Running);
                    state.context.set_return(value);
                    state.pending = None;
                }
                Poll::Pending => {
                    // Its vector registers are dead at a system call.
                    state.fpu = None;
                    scheduler::schedule(Switch::Block);
                    return;
                }
            }
        }
        // Interrupts off before the look: a tick that asks for a reschedule
        // after it would otherwise be lost (its handler does not switch away
        // from a user thread's dispatcher), and the thread would run on with
        // no slice timer armed. With interrupts off the tick stays pending
        // and is taken as soon as user mode is entered.
        interrupts::disable();
        if scheduler::reschedule_due() {
            interrupts::enable();
            scheduler::requeue(Switch::Preempt);
            return;
        }
        let cpu = cpu_index();
        let id = thread.id().0;
        if FPU_OWNER[cpu].load(Ordering::Relaxed) != id {
            match &state.fpu {
                Some(area) => area.restore(),
                None => load_clean_state(state.mxcsr, state.fcw),
            }
            FPU_OWNER[cpu].store(id, Ordering::Relaxed);
        }
        user::set_fast_context(state.fast_allowed, state.fast_owner);
        let trap = user::execute(&mut state.context);
        match trap {
            Trap::Syscall => {
                // Vector registers are dead across a system call; only the
                // control words survive.
                (state.mxcsr, state.fcw) = FpuState::read_control();
            }
            _ => {
                if !save_vector_registers(thread, state) {
                    state_lost(thread, state);
                    return;
                }
            }
        }
        interrupts::enable();
        let outcome = {
            // Handlers never switch: a preemption waits for the loop's top.
            let _critical = scheduler::PreemptGuard::new();
            handler(thread, state.owner.as_ref(), &mut state.context, trap)
        };
        match outcome {
            Outcome::Resume => {}
            Outcome::Return(value) => state.context.set_return(value),
            Outcome::Pending(future) => state.pending = Some(future),
            Outcome::PendingHandOff(future, target, value) => {
                // Polled once already, pending: the thread blocks at once,
                // handing the CPU over (the IPC fast path: no second poll).
                state.pending = Some(future);
                state.fpu = None;
                match scheduler::block_and_switch_to(&target) {
                    HandOff::Switched => {
                        // SAFETY: the target is this CPU's current thread
                        // now, so only this dispatcher touches its user
                        // state; it is `Running` and waited in a system
                        // call (it was on the wait queue it was taken from).
                        if let Some(target_state) = unsafe { (*target.user.get()).as_mut() } {
                            target_state.handed = Some(value);
                        }
                        return;
                    }
                    // Woken meanwhile: the loop's poll finds it ready.
                    HandOff::CarryOn => {}
                    HandOff::Block => {
                        scheduler::schedule(Switch::Block);
                        return;
                    }
                }
            }
            Outcome::Yield => {
                state.context.set_return(0);
                scheduler::requeue(Switch::Yield);
                return;
            }
            Outcome::Exit => {
                end_thread(thread, state);
                return;
            }
        }
    }
}

/// Marks the current user thread as about to wait, for a handler that
/// polls the future of a [`Outcome::PendingHandOff`] itself: a wake-up from
/// here on cancels the wait instead of being lost (see `thread`'s state
/// machine), as when the dispatcher polls.
pub fn begin_wait() {
    scheduler::current().descriptor.set_state(ThreadState::Blocking);
    core::sync::atomic::fence(Ordering::SeqCst);
}

/// Ends a wait begun with [`begin_wait`] whose first poll was ready.
pub fn end_wait() {
    scheduler::current().descriptor.set_state(ThreadState::Running);
}

/// Saves the vector registers of `thread`, just interrupted in user mode,
/// into its area, allocating one if it has none; false when there is no
/// memory for it.
#[inline]
fn save_vector_registers(thread: &Thread, state: &mut UserState) -> bool {
    let area = match &mut state.fpu {
        Some(area) => area,
        None => match new_save_area(thread) {
            Some(area) => state.fpu.insert(area),
            None => return false,
        },
    };
    area.save();
    true
}

/// Ends a thread whose vector registers could not be saved, after telling
/// the process layer. They live only in this CPU, which the next thread
/// here overwrites (`end_thread` forgets that this CPU holds them), so the
/// thread cannot go on.
#[cold]
fn state_lost(thread: &Thread, state: &mut UserState) {
    interrupts::enable();
    {
        let _critical = scheduler::PreemptGuard::new();
        (handlers().state_lost)(thread, &state.context);
    }
    end_thread(thread, state);
}

/// Ends a user thread from its dispatcher: drops what it waits in, retires
/// it, and schedules something else (which returns: there is no stack to
/// abandon).
fn end_thread(thread: &Thread, state: &mut UserState) {
    state.pending = None;
    state.fpu = None;
    if FPU_OWNER[cpu_index()].load(Ordering::Relaxed) == thread.id().0 {
        fpu_clobbered();
    }
    {
        let _critical = scheduler::PreemptGuard::new();
        super::reaper::retire(thread);
    }
    scheduler::schedule(Switch::Exit);
}

/// The process layer's data of a user thread.
pub fn owner_of(thread: &Thread) -> Option<Arc<Owner>> {
    // SAFETY: `owner` is set before the thread is shared and never changed
    // until the thread is freed; cloning an `Arc` only reads it.
    unsafe { (*thread.user.get()).as_ref().and_then(|state| state.owner.as_ref().map(|owner| owner.owner.clone())) }
}

/// True when `thread` is a user thread.
pub fn is_user(thread: &Thread) -> bool {
    thread.kind == ThreadKind::User
}

/// A copy of the user registers `thread` left user mode with, for a
/// debugger looking at a thread that is not running (what a running one
/// holds here is stale). `None` for kernel threads.
pub fn saved_registers(thread: &Thread) -> Option<crate::arch::user::UserContext> {
    // SAFETY: a plain copy of plain integers; the caller looks at a thread
    // that no CPU runs (every other CPU is stopped), so nothing writes them
    // meanwhile, and the record lives as long as the thread.
    unsafe { (*thread.user.get()).as_ref().map(|state| state.context.clone()) }
}

/// Kernel heap bytes a user thread holds (its record and user state), for
/// the memory figures.
pub fn thread_bytes(thread: &Thread) -> usize {
    // SAFETY: read-only look at sizes; the state is not being changed by a
    // dispatcher that blocks the thread meanwhile (callers use it for
    // blocked threads).
    let state = unsafe { (*thread.user.get()).as_ref() };
    core::mem::size_of::<Thread>() + state.map_or(0, |state| state.heap_bytes())
}
