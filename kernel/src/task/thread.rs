//! Threads: the scheduler's minimal descriptor, the private rest, and the
//! table that maps thread ids to threads.
//!
//! A [`Thread`] is split the way Hypatia asks: the [`Descriptor`] holds what
//! the scheduler needs to pick and switch (id, affine partner, page-table
//! root, saved stack pointer, CPU, affinity, policy entity and queue token),
//! and nothing else; the private part (the task it belongs to, its stack,
//! FPU state, entry closure) is only touched by the thread itself, the code
//! that creates it, and the reaper.
//!
//! # States
//!
//! ```text
//!            (1) spawn            (2) pick            (3) yield / preempt
//!   [New] ───────────▶ [Runnable] ─────────▶ [Running] ─────────────┐
//!                          ▲  ▲                 │  │                │
//!                          │  └─────────────────┼──┼────────────────┘
//!                          │ (6) wake           │  │ (4) block_current
//!                          │                    │  ▼
//!                      [Waking] ◀── (6) ── [Blocked] ◀── (5) ── [Blocking]
//!                                               │
//!                                   (7) exit ───┴──▶ [Dead] ── (8) reaper
//! ```
//!
//! 1. `task::Builder::spawn` enqueues a new thread.
//! 2. `scheduler::schedule` picks it on some CPU.
//! 3. `yield_now` or a preemption puts it back in its CPU's queue.
//! 4. A thread about to wait marks itself `Blocking` (and registers with a
//!    wait queue or timer) *before* it releases the lock that protects the
//!    condition; a wake-up that comes now turns it back to `Running`, and the
//!    thread does not sleep (no lost wake-up).
//! 5. `schedule` turns `Blocking` into `Blocked` under its CPU's run-queue
//!    lock, then saves the context before that lock is released.
//! 6. `scheduler::wake` claims a `Blocked` thread (`Waking`), waits for its
//!    old CPU's lock (so the context is saved), and enqueues it.
//! 7. The thread exits, or is terminated because its task was killed.
//! 8. The reaper frees its stack and removes it from the table.

use alloc::{borrow::Cow, boxed::Box, sync::Arc};
use core::{
    cell::UnsafeCell,
    fmt,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};

use orrery_sched::Entity;
pub use orrery_sched::ThreadId;

use super::domain::Task;
use crate::{arch::fpu::FpuState, mm::stacks::KernelStack, sync::SpinLock};

/// Where a thread is in its life; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ThreadState {
    /// Created, not yet queued.
    New = 0,
    /// In a run queue.
    Runnable = 1,
    /// On a CPU.
    Running = 2,
    /// About to wait; a wake-up now cancels the wait.
    Blocking = 3,
    /// Waiting, context saved.
    Blocked = 4,
    /// Claimed by a waker, being enqueued.
    Waking = 5,
    /// Finished; waiting for the reaper.
    Dead = 6,
}

impl ThreadState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::New,
            1 => Self::Runnable,
            2 => Self::Running,
            3 => Self::Blocking,
            4 => Self::Blocked,
            5 => Self::Waking,
            _ => Self::Dead,
        }
    }
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeReason {
    /// Another thread woke it.
    Woken = 0,
    /// Its deadline passed.
    Timeout = 1,
    /// Its task was killed while it held the task; it should finish up.
    Killed = 2,
}

impl WakeReason {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Timeout,
            2 => Self::Killed,
            _ => Self::Woken,
        }
    }
}

/// A set of CPUs, one bit each (the kernel drives at most 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSet(pub u64);

impl CpuSet {
    /// Every CPU.
    pub const ALL: CpuSet = CpuSet(u64::MAX);

    /// Only `cpu`.
    pub const fn only(cpu: usize) -> Self {
        CpuSet(1 << cpu)
    }

    /// True when `cpu` is in the set.
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < 64 && self.0 & (1 << cpu) != 0
    }
}

/// Which thread, if any, may share a physical core with this one
/// (Hypatia's affine task: VCPUs of paired guest hyperthreads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affine {
    /// No constraint.
    Any,
    /// Must have its core to itself: no SMT sibling runs anything else.
    Exclusive,
    /// Co-scheduled with this thread on sibling hyperthreads.
    With(ThreadId),
}

const AFFINE_ANY: u64 = u64::MAX;
const AFFINE_EXCLUSIVE: u64 = u64::MAX - 1;

/// What the scheduler sees of a thread. Fields marked "rq" are read and
/// written only under the run-queue lock of the CPU the thread belongs to
/// (or by the one waker that claimed it in the `Waking` state).
#[repr(C)]
pub struct Descriptor {
    /// The thread's id.
    pub id: ThreadId,
    /// Physical address of the page-table root it runs on.
    pub page_table_root: u64,
    /// Id of that address space (0: the kernel's), for PCID.
    pub address_space_id: u64,
    /// Saved stack pointer while not running (rq).
    pub(super) saved_rsp: UnsafeCell<u64>,
    /// CPU it is queued on or last ran on.
    pub(super) cpu: AtomicU32,
    /// CPUs it may run on.
    pub(super) allowed: AtomicU64,
    /// The affine partner, encoded (see [`Affine`]).
    affine: AtomicU64,
    /// Policy data while not queued (rq). Its `id` is not the thread's id
    /// but its address (see [`policy_key`]), so that what a policy picks
    /// leads to the thread with no table lookup.
    pub(super) entity: UnsafeCell<Entity>,
    /// Token of its run-queue entry while queued (rq).
    pub(super) token: UnsafeCell<Option<orrery_sched::Token>>,
    /// Life state.
    pub(super) state: AtomicU8,
}

impl Descriptor {
    /// The current state.
    pub fn state(&self) -> ThreadState {
        ThreadState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn set_state(&self, state: ThreadState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub(super) fn transition(&self, from: ThreadState, to: ThreadState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The stack pointer saved when it last switched away: its
    /// callee-saved registers and return address lie there (see
    /// `arch::switch`). Meaningful only while it is not running; for a
    /// debugger that has stopped every CPU.
    pub fn saved_stack_pointer(&self) -> u64 {
        // SAFETY: a plain read of an integer that only the switch writes,
        // on the thread's own CPU; a stale value is the caller's to expect.
        unsafe { core::ptr::read_volatile(self.saved_rsp.get()) }
    }

    /// The CPU it is queued on or last ran on.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::Acquire) as usize
    }

    /// The CPUs it may run on.
    pub fn allowed(&self) -> CpuSet {
        CpuSet(self.allowed.load(Ordering::Relaxed))
    }

    /// Its affine partner.
    pub fn affine(&self) -> Affine {
        match self.affine.load(Ordering::Relaxed) {
            AFFINE_ANY => Affine::Any,
            AFFINE_EXCLUSIVE => Affine::Exclusive,
            id => Affine::With(ThreadId(id)),
        }
    }
}

/// What kind of thread this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A kernel thread with its own stack.
    Kernel,
    /// A CPU's dispatcher: its initial context, run when nothing else is.
    Dispatcher,
    /// A user context, entered by the dispatcher; no kernel stack.
    User,
}

/// A thread of execution of a task.
pub struct Thread {
    /// The scheduler's part.
    pub descriptor: Descriptor,
    /// What kind of thread.
    pub kind: ThreadKind,
    /// Name, for logs and traces.
    pub name: Cow<'static, str>,
    /// The task it belongs to.
    pub task: Arc<Task>,
    /// Its kernel stack (dispatchers run on their CPU's boot stack).
    pub(super) stack: UnsafeCell<Option<KernelStack>>,
    /// FPU state, for threads that use the FPU.
    pub(super) fpu: UnsafeCell<Option<FpuState>>,
    /// What the thread runs, taken when it starts.
    pub(super) entry: UnsafeCell<Option<Box<dyn FnOnce() + Send>>>,
    /// A user thread's registers and pending system call.
    pub(super) user: UnsafeCell<Option<Box<super::user::UserState>>>,
    /// Depth of `HoldScope`s this thread is in.
    pub(super) hold_depth: AtomicU32,
    /// Why its last wait ended.
    wake_reason: AtomicU8,
    /// Bumped at every wait, so a stale timer cannot wake a later wait.
    pub(super) wait_generation: AtomicU64,
    /// Set once the thread has left its task (see `reaper::retire`).
    pub(super) retired: AtomicBool,
}

// SAFETY: the `UnsafeCell` fields are accessed under the rules written on
// each (run-queue lock, or the thread itself, or the reaper once it is dead).
unsafe impl Sync for Thread {}
// SAFETY: as above; nothing in a thread is tied to one CPU.
unsafe impl Send for Thread {}

impl Thread {
    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        self.descriptor.id
    }

    /// The current state.
    pub fn state(&self) -> ThreadState {
        self.descriptor.state()
    }

    /// Why its last wait ended.
    pub fn wake_reason(&self) -> WakeReason {
        WakeReason::from_u8(self.wake_reason.load(Ordering::Acquire))
    }

    pub(super) fn set_wake_reason(&self, reason: WakeReason) {
        self.wake_reason.store(reason as u8, Ordering::Release);
    }

    /// True while the thread is inside a `HoldScope`.
    pub fn is_holding(&self) -> bool {
        self.hold_depth.load(Ordering::Relaxed) > 0
    }

    /// True when the thread's task was killed and the thread holds nothing,
    /// so it must stop at the next preemption point.
    pub fn must_stop(&self) -> bool {
        self.task.is_killed() && !self.is_holding()
    }

    /// True when the thread saves and restores FPU state.
    pub fn uses_fpu(&self) -> bool {
        // SAFETY: the option is set at creation and only taken by the reaper
        // once the thread is dead.
        unsafe { (*self.fpu.get()).is_some() }
    }
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {} '{}' ({:?}, cpu{})", self.id().0, self.name, self.state(), self.descriptor.cpu())
    }
}

/// Everything needed to make a thread.
pub(super) struct ThreadSpec {
    pub name: Cow<'static, str>,
    pub kind: ThreadKind,
    pub task: Arc<Task>,
    pub stack: Option<KernelStack>,
    pub fpu: Option<FpuState>,
    pub entry: Option<Box<dyn FnOnce() + Send>>,
    pub user: Option<Box<super::user::UserState>>,
    pub allowed: CpuSet,
    pub affine: Affine,
    pub weight: u32,
    pub cpu: usize,
}

/// Threads per table chunk.
const CHUNK: usize = 1024;
/// Chunks; the table holds up to `CHUNK * CHUNKS` live threads.
const CHUNKS: usize = 1024;

/// Maps thread ids to threads without a lock on lookups: an id is a slot
/// index (low 32 bits) and the slot's generation (high 32 bits), so a stale
/// id never finds the slot's next occupant.
struct ThreadTable {
    chunks: [AtomicPtr<[AtomicPtr<Thread>; CHUNK]>; CHUNKS],
    free: SpinLock<FreeSlots>,
}

struct FreeSlots {
    free: alloc::vec::Vec<u32>,
    next_unused: u32,
    generations: alloc::vec::Vec<u32>,
}

static TABLE: ThreadTable = ThreadTable {
    chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; CHUNKS],
    free: SpinLock::new(FreeSlots {
        free: alloc::vec::Vec::new(),
        next_unused: 0,
        generations: alloc::vec::Vec::new(),
    }),
};

/// Why a thread could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadError {
    /// Out of memory for the thread, its stack or its FPU area.
    OutOfMemory,
    /// The thread table is full.
    TooManyThreads,
}

/// The table slot `index`, if its chunk exists (lookups: a thread's slot
/// always does). Inlined into the switch path.
#[inline]
fn existing_slot(index: u32) -> Option<&'static AtomicPtr<Thread>> {
    let chunk = TABLE.chunks.get(index as usize / CHUNK)?.load(Ordering::Acquire);
    if chunk.is_null() {
        return None;
    }
    // SAFETY: chunks are never freed once installed.
    Some(unsafe { &(*chunk)[index as usize % CHUNK] })
}

/// The table slot `index`, making its chunk if needed (entering a thread).
fn slot_of(index: u32) -> Result<&'static AtomicPtr<Thread>, ThreadError> {
    let chunk_index = index as usize / CHUNK;
    let chunk = TABLE.chunks.get(chunk_index).ok_or(ThreadError::TooManyThreads)?;
    let mut pointer = chunk.load(Ordering::Acquire);
    if pointer.is_null() {
        let fresh: Box<[AtomicPtr<Thread>; CHUNK]> = Box::new([const { AtomicPtr::new(core::ptr::null_mut()) }; CHUNK]);
        let fresh = Box::into_raw(fresh);
        match chunk.compare_exchange(core::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => pointer = fresh,
            Err(existing) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                pointer = existing;
            }
        }
    }
    // SAFETY: chunks are never freed once installed.
    Ok(unsafe { &(*pointer)[index as usize % CHUNK] })
}

/// Creates a thread and enters it in the table. The table keeps one strong
/// reference until [`remove`].
pub(super) fn create(spec: ThreadSpec) -> Result<Arc<Thread>, ThreadError> {
    let (index, generation) = {
        let mut free = TABLE.free.lock();
        let index = match free.free.pop() {
            Some(index) => index,
            None => {
                if free.next_unused as usize >= CHUNK * CHUNKS {
                    return Err(ThreadError::TooManyThreads);
                }
                free.next_unused += 1;
                free.generations.push(0);
                free.next_unused - 1
            }
        };
        let generation = &mut free.generations[index as usize];
        *generation = generation.wrapping_add(1);
        (index, *generation)
    };
    let id = ThreadId((u64::from(generation) << 32) | u64::from(index));
    let (root, space_id) = spec.task.page_table();
    let affine = match spec.affine {
        Affine::Any => AFFINE_ANY,
        Affine::Exclusive => AFFINE_EXCLUSIVE,
        Affine::With(partner) => partner.0,
    };
    RECORDS.fetch_add(1, Ordering::Relaxed);
    let thread = Arc::new(Thread {
        descriptor: Descriptor {
            id,
            page_table_root: root,
            address_space_id: space_id,
            saved_rsp: UnsafeCell::new(0),
            cpu: AtomicU32::new(spec.cpu as u32),
            allowed: AtomicU64::new(spec.allowed.0),
            affine: AtomicU64::new(affine),
            entity: UnsafeCell::new(Entity::with_weight(id, spec.weight)),
            token: UnsafeCell::new(None),
            state: AtomicU8::new(ThreadState::New as u8),
        },
        kind: spec.kind,
        name: spec.name,
        task: spec.task,
        stack: UnsafeCell::new(spec.stack),
        fpu: UnsafeCell::new(spec.fpu),
        entry: UnsafeCell::new(spec.entry),
        user: UnsafeCell::new(spec.user),
        hold_depth: AtomicU32::new(0),
        wake_reason: AtomicU8::new(WakeReason::Woken as u8),
        wait_generation: AtomicU64::new(0),
        retired: AtomicBool::new(false),
    });
    // SAFETY: the thread is not shared yet.
    unsafe { (*thread.descriptor.entity.get()).id = policy_key(&thread) };
    // SAFETY: as above.
    if let Some(user) = unsafe { (*thread.user.get()).as_mut() } {
        user.set_waker(id);
    }
    match slot_of(index) {
        Ok(slot) => slot.store(Arc::into_raw(thread.clone()).cast_mut(), Ordering::Release),
        Err(error) => {
            TABLE.free.lock().free.push(index);
            return Err(error);
        }
    }
    Ok(thread)
}

/// The name a thread's entity carries in the policies: its address, which
/// is unique among live threads (and only live threads are queued).
fn policy_key(thread: &Arc<Thread>) -> ThreadId {
    ThreadId(Arc::as_ptr(thread) as u64)
}

/// The thread a policy's entity stands for.
///
/// # Safety
/// `entity` is one the policies handed back (from a queue, a pick, a steal
/// or a drain) of a thread that has not died since: queued threads are in
/// the table, which keeps them alive until the reaper removes them dead.
#[inline(always)]
pub(super) unsafe fn of_entity(entity: &Entity) -> &'static Thread {
    // SAFETY: per the contract, the address of a live thread.
    unsafe { &*(entity.id.0 as *const Thread) }
}

/// The live thread with this id.
#[inline]
pub fn lookup(id: ThreadId) -> Option<&'static Thread> {
    let slot = existing_slot(id.0 as u32)?;
    let pointer = slot.load(Ordering::Acquire);
    if pointer.is_null() {
        return None;
    }
    // SAFETY: the table holds a strong reference to every entered thread
    // until `remove`, which only the reaper calls once the thread is dead and
    // off every CPU and queue; callers use the reference only while the
    // thread cannot be reaped (it is queued, running, or they hold an `Arc`).
    let thread = unsafe { &*pointer };
    (thread.id() == id).then_some(thread)
}

/// A strong reference to the live thread with this id.
pub fn get(id: ThreadId) -> Option<Arc<Thread>> {
    let slot = existing_slot(id.0 as u32)?;
    crate::arch::interrupts::without(|| {
        let _table = TABLE.free.lock();
        let pointer = slot.load(Ordering::Acquire);
        if pointer.is_null() {
            return None;
        }
        // SAFETY: under the table lock `remove` cannot run, so the table's
        // reference keeps the thread alive while the count is raised.
        unsafe {
            Arc::increment_strong_count(pointer);
            let thread = Arc::from_raw(pointer);
            (thread.id() == id).then_some(thread)
        }
    })
}

/// Removes a dead thread from the table and drops the table's reference.
pub(super) fn remove(thread: &Thread) {
    let index = thread.id().0 as u32;
    let Ok(slot) = slot_of(index) else { return };
    let pointer = {
        let mut free = TABLE.free.lock();
        let pointer = slot.swap(core::ptr::null_mut(), Ordering::AcqRel);
        free.free.push(index);
        pointer
    };
    if !pointer.is_null() {
        // SAFETY: the pointer came from `Arc::into_raw` in `create`.
        drop(unsafe { Arc::from_raw(pointer) });
    }
}

/// Calls `f` on every thread in the table (for diagnostics; the table lock
/// is not held, so the picture may be slightly stale).
pub fn for_each(mut f: impl FnMut(&Thread)) {
    let used = TABLE.free.lock().next_unused;
    for index in 0..used {
        let Ok(slot) = slot_of(index) else { break };
        let pointer = slot.load(Ordering::Acquire);
        if let Some(thread) = get(ThreadId(if pointer.is_null() {
            continue;
        } else {
            // SAFETY: read only for its id; `get` re-checks under the lock.
            unsafe { (*pointer).id().0 }
        })) {
            f(&thread);
        }
    }
}

/// Chunks the thread table has made (it keeps them: capacity, not a leak).
pub fn table_chunks() -> usize {
    TABLE.chunks.iter().filter(|chunk| !chunk.load(Ordering::Acquire).is_null()).count()
}

/// Threads in the table (live or not yet reaped).
pub fn count() -> usize {
    let free = TABLE.free.lock();
    free.next_unused as usize - free.free.len()
}

/// Thread records in existence: those in the table, and those removed from
/// it that someone still holds a reference to (a waker that took the thread
/// off a wait queue, a future being dropped), each of which keeps its task
/// and so its address space until it lets go.
static RECORDS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Thread {
    fn drop(&mut self) {
        RECORDS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Thread records in existence (see [`RECORDS`]): more than [`count`]
/// while a removed thread's last reference is still held somewhere.
pub fn records() -> usize {
    RECORDS.load(Ordering::Relaxed)
}
