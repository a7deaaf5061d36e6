//! Tasks: protection domains (an address space and what the task owns)
//! with one or more threads, grouped in task sets.
//!
//! A task's lifetime follows Alux (`orrery-lifetime`): it is born retained
//! once by its creator; each live thread retains it; code in the middle of
//! work on it holds it (`HoldScope`). Killing is a request: the task stops
//! accepting holds at once, its threads stop at their next preemption point
//! unless they hold it, and clean-up (address space, task-set membership)
//! runs on the reaper once no retain or hold is left.
//!
//! Every task belongs to exactly one task set (Hypatia). The first member is
//! its leader, which owns the set's area: memory mapped at
//! [`TASK_SET_AREA`] into every member's address space and no other, through
//! which members on different CPUs coordinate. A task started alone is the
//! leader of a set of one with no area.

use alloc::{borrow::Cow, sync::Arc, vec::Vec};
use core::{
    fmt,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use orrery_frames::Frame;
use orrery_lifetime::Lifetime;

use super::{thread::ThreadId, wait::WaitQueue};
use crate::{
    arch::paging::{self, Access, AddressSpace, MapError},
    mm::frames,
    sync::SpinLock,
};

/// Where the task-set area appears in every member's address space.
pub const TASK_SET_AREA: u64 = 0x0000_7f00_0000_0000;
/// Largest task-set area, in pages.
pub const MAX_TASK_SET_AREA_PAGES: usize = 512;

/// Identifies a task; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u64);

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this status (`exit_task`, or its last thread returned: 0).
    Exited(u64),
    /// It was killed for this reason.
    Killed(u64),
}

const KILLED_BIT: u64 = 1 << 63;

impl ExitStatus {
    /// The packed form kept in the lifetime word.
    pub fn encode(self) -> u64 {
        match self {
            ExitStatus::Exited(code) => code & !KILLED_BIT,
            ExitStatus::Killed(reason) => (reason & !KILLED_BIT) | KILLED_BIT,
        }
    }

    /// The inverse of [`ExitStatus::encode`].
    pub fn decode(word: u64) -> Self {
        if word & KILLED_BIT != 0 { ExitStatus::Killed(word & !KILLED_BIT) } else { ExitStatus::Exited(word) }
    }
}

/// Errors of task-set and task operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// Joining a set with an area needs an own address space to map it in.
    NeedsAddressSpace,
    /// The area size is zero or larger than [`MAX_TASK_SET_AREA_PAGES`].
    BadAreaSize(usize),
    /// Out of memory.
    OutOfMemory,
    /// Mapping failed.
    Map(MapError),
    /// The task was killed (it may not be held or joined to a set any more).
    Killed(TaskId),
}

/// A task set: a leader, its members, and the shared area.
pub struct TaskSet {
    id: u64,
    leader: SpinLock<Option<TaskId>>,
    area: Vec<Frame>,
    members: SpinLock<Vec<TaskId>>,
}

impl TaskSet {
    /// A new set whose area has `area_pages` zeroed pages (0: no area).
    pub fn new(area_pages: usize) -> Result<Arc<Self>, TaskError> {
        if area_pages > MAX_TASK_SET_AREA_PAGES {
            return Err(TaskError::BadAreaSize(area_pages));
        }
        let mut area = Vec::with_capacity(area_pages);
        for _ in 0..area_pages {
            match frames::allocate_zeroed() {
                Some(frame) => area.push(frame),
                None => {
                    area.into_iter().for_each(frames::deallocate);
                    return Err(TaskError::OutOfMemory);
                }
            }
        }
        Ok(Arc::new(TaskSet {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            leader: SpinLock::new(None),
            area,
            members: SpinLock::new(Vec::new()),
        }))
    }

    /// The set's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The leader: the first task that joined.
    pub fn leader(&self) -> Option<TaskId> {
        *self.leader.lock()
    }

    /// Tasks currently in the set.
    pub fn members(&self) -> Vec<TaskId> {
        self.members.lock().clone()
    }

    /// Size of the area in bytes.
    pub fn area_size(&self) -> usize {
        self.area.len() * 4096
    }

    fn admit(&self, task: TaskId, space: Option<&SpinLock<AddressSpace>>) -> Result<(), TaskError> {
        if !self.area.is_empty() {
            let space = space.ok_or(TaskError::NeedsAddressSpace)?;
            let mut space = space.lock();
            for (index, frame) in self.area.iter().enumerate() {
                let address = TASK_SET_AREA + index as u64 * 4096;
                if let Err(error) = space.map(address, *frame, Access::KERNEL_DATA, false) {
                    for undo in 0..index {
                        space.unmap(TASK_SET_AREA + undo as u64 * 4096);
                    }
                    return Err(TaskError::Map(error));
                }
            }
        }
        let mut leader = self.leader.lock();
        if leader.is_none() {
            *leader = Some(task);
        }
        self.members.lock().push(task);
        Ok(())
    }

    fn leave(&self, task: TaskId) {
        self.members.lock().retain(|member| *member != task);
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        // Every member has left and its address space is gone, so nothing
        // maps the area any more.
        self.area.drain(..).for_each(frames::deallocate);
    }
}

/// The ids of a task's live threads. Most tasks have one thread, so the
/// first is kept inline and only further threads take heap memory.
pub(super) struct ThreadList {
    first: Option<ThreadId>,
    rest: Vec<ThreadId>,
}

impl ThreadList {
    const fn new() -> Self {
        Self { first: None, rest: Vec::new() }
    }

    pub(super) fn push(&mut self, id: ThreadId) {
        if self.first.is_none() {
            self.first = Some(id);
        } else {
            self.rest.push(id);
        }
    }

    pub(super) fn remove(&mut self, id: ThreadId) {
        if self.first == Some(id) {
            self.first = if self.rest.is_empty() { None } else { Some(self.rest.swap_remove(0)) };
        } else {
            self.rest.retain(|other| *other != id);
        }
    }

    pub(super) fn to_vec(&self) -> Vec<ThreadId> {
        self.first.iter().chain(self.rest.iter()).copied().collect()
    }
}

/// A task.
pub struct Task {
    id: TaskId,
    /// Name, for logs.
    pub name: Cow<'static, str>,
    pub(super) lifetime: Lifetime,
    address_space: Option<SpinLock<AddressSpace>>,
    page_table_root: u64,
    address_space_id: u64,
    /// The space's unmap generation (`AddressSpace::generation_counter`), read
    /// by switches to it without the space's lock.
    space_generation: Option<Arc<AtomicU64>>,
    set: SpinLock<Option<Arc<TaskSet>>>,
    set_id: u64,
    /// Threads not yet dead.
    pub(super) live_threads: AtomicU32,
    pub(super) threads: SpinLock<ThreadList>,
    finished: SpinLock<bool>,
    /// Woken when the task has been cleaned up.
    pub(super) joiners: WaitQueue,
}

impl Task {
    /// A new task. With `own_address_space` it gets a page table of its own
    /// (the kernel half shared); with `set`, it joins that set (mapping its
    /// area), else it leads a set of its own without an area.
    pub(super) fn new(
        name: Cow<'static, str>,
        own_address_space: bool,
        set: Option<Arc<TaskSet>>,
    ) -> Result<Arc<Self>, TaskError> {
        let id = TaskId(NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed));
        let address_space = if own_address_space {
            Some(SpinLock::new(AddressSpace::new().map_err(|_| TaskError::OutOfMemory)?))
        } else {
            None
        };
        let (page_table_root, address_space_id, space_generation) = match &address_space {
            Some(space) => {
                let space = space.lock();
                (space.root(), space.id(), Some(space.generation_counter()))
            }
            None => (paging::kernel_root(), 0, None),
        };
        let set_id = match &set {
            Some(set) => {
                set.admit(id, address_space.as_ref())?;
                set.id()
            }
            None => 0,
        };
        Ok(Arc::new(Task {
            id,
            name,
            lifetime: Lifetime::new(),
            address_space,
            page_table_root,
            address_space_id,
            space_generation,
            set: SpinLock::new(set),
            set_id,
            live_threads: AtomicU32::new(0),
            threads: SpinLock::new(ThreadList::new()),
            finished: SpinLock::new(false),
            joiners: WaitQueue::new(),
        }))
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Page-table root and address-space id its threads run on.
    pub fn page_table(&self) -> (u64, u64) {
        (self.page_table_root, self.address_space_id)
    }

    /// The unmap generation counter of its address space (`None` for the
    /// kernel's): what a switch to it passes to `pcid::switch_to_masked`.
    #[inline]
    pub fn space_generation(&self) -> Option<&AtomicU64> {
        self.space_generation.as_deref()
    }

    /// Runs `f` on the task's own address space, if it has one.
    pub fn with_address_space<R>(&self, f: impl FnOnce(&mut AddressSpace) -> R) -> Option<R> {
        self.address_space.as_ref().map(|space| f(&mut space.lock()))
    }

    /// True when the task owns memory whose release is heavy (an address
    /// space, a task-set area): its clean-up runs on the reaper.
    pub fn owns_memory(&self) -> bool {
        self.address_space.is_some() || self.set_id != 0
    }

    /// True once the task has been killed or has exited.
    pub fn is_killed(&self) -> bool {
        self.lifetime.is_killed()
    }

    /// The set this task belongs to, if it is not alone.
    pub fn task_set(&self) -> Option<Arc<TaskSet>> {
        self.set.lock().clone()
    }

    /// Id of its task set (0 when it is alone).
    pub fn task_set_id(&self) -> u64 {
        self.set_id
    }

    /// How it ended, once it has been killed or has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lifetime.exit_status().map(ExitStatus::decode)
    }

    /// True once clean-up has finished (what `join` waits for).
    pub fn is_finished(&self) -> bool {
        *self.finished.lock()
    }

    /// The lock around the finished flag, for joiners.
    pub(super) fn finished_lock(&self) -> &SpinLock<bool> {
        &self.finished
    }

    /// Threads not yet reaped (diagnostics).
    pub fn live_thread_count(&self) -> u32 {
        self.live_threads.load(Ordering::Relaxed)
    }

    /// Ids of the threads not yet reaped (diagnostics).
    pub fn thread_ids(&self) -> Vec<super::thread::ThreadId> {
        self.threads.lock().to_vec()
    }

    /// Retain and hold counts (for tests and diagnostics).
    pub fn counts(&self) -> orrery_lifetime::Counts {
        self.lifetime.counts()
    }

    /// Releases what the task owns; run by the reaper once the task is dead.
    pub(super) fn clean_up(&self) {
        if let Some(set) = self.set.lock().take() {
            set.leave(self.id);
            if let Some(space) = &self.address_space {
                let mut space = space.lock();
                for index in 0..set.area.len() {
                    space.unmap(TASK_SET_AREA + index as u64 * 4096);
                }
            }
        }
        // The page tables themselves are freed when the last reference to
        // the task goes; nothing maps anything the task owned after this.
        if let Some(space) = &self.address_space {
            space.lock().clear_lower_half();
        }
        *self.finished.lock() = true;
        self.joiners.wake_all();
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} '{}'", self.id.0, self.name)
    }
}
