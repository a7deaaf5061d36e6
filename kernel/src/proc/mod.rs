//! User processes (Akaros): created from a program image, set up by their
//! parent while CREATED, then made runnable; controlled only by their
//! parent; ended by exit, kill or fault with a status the parent collects.
//!
//! A process is a task with its own address space and one user thread (the
//! many-core states `RUNNABLE_M`/`RUNNING_M` exist in the state machine and
//! come with many-core processes). Its memory: the program's text and
//! read-only data mapped shared and read-only, private copies of its data,
//! a zeroed stack with an unmapped guard below, and whatever the parent
//! shares or grants before start. Handles name the processes it created and
//! the mailboxes it serves or uses.
//!
//! The system calls are in [`syscall`]; the kernel side of mailboxes in
//! [`mailbox`]; the boot-time loader in [`loader`].

pub mod loader;
pub mod mailbox;
pub mod syscall;
pub mod uaccess;

use alloc::{borrow::Cow, string::String, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicU64, Ordering};

use orrery_abi::{
    ALL_SYSCALLS, Error, ExitStatus, FaultKind, StartInfo, USER_MAP_BASE, USER_MAP_END, USER_SHARED_BASE,
    USER_SHARED_END, USER_STACK_TOP,
};
use orrery_frames::Frame;
use orrery_proc::{AtomicProcState, ProcState};

use self::{loader::Program, mailbox::MailboxObject, uaccess::UserSlice};
use crate::{
    arch::{
        paging::{Access, AddressSpace, MapError, OWNED, flags},
        traps::Exception,
        user::{Trap, UserContext},
    },
    mm::frames::{self, SharedFrames},
    sync::SpinLock,
    task::{self, CpuSet, SpawnError, Task, ThreadId, user::UserState},
};

/// Most handles one process holds.
pub const MAX_HANDLES: usize = 64;

/// What a handle names.
#[derive(Clone)]
pub enum Handle {
    /// A process this one created (and controls).
    Process(Arc<Process>),
    /// A mailbox: served by this process (`server`) or called by it,
    /// mapped at `address` here.
    Mailbox {
        /// The mailbox.
        object: Arc<MailboxObject>,
        /// True for the server's handle.
        server: bool,
        /// Where its pages are mapped in this process.
        address: u64,
    },
}

/// What the process layer keeps of one process.
pub struct Process {
    id: u64,
    name: SpinLock<String>,
    task: Arc<Task>,
    state: AtomicProcState,
    parent: u64,
    supervisor: bool,
    program: Arc<Program>,
    handles: SpinLock<Vec<Option<Handle>>>,
    allowed: AtomicU64,
    argument: u64,
    start: SpinLock<StartDraft>,
    layout: SpinLock<Layout>,
    exit: SpinLock<Option<ExitStatus>>,
    thread: SpinLock<Option<ThreadId>>,
    /// The creator's retain of the task, until the thread takes over.
    creator_retain: SpinLock<bool>,
}

/// What goes in the child's `StartInfo` at start.
#[derive(Default)]
struct StartDraft {
    first_mailbox: Option<u64>,
    mailbox_count: u64,
    shared_address: u64,
    shared_length: u64,
}

/// Pages being shared by [`Process::share_with`]: their frames in order,
/// and the runs of them whose frames a record keeps (pages of no run are the
/// program image's).
struct Lent {
    frames: Vec<Frame>,
    runs: Vec<Run>,
}

/// Consecutive pages of a mapping whose frames `record` keeps, from its
/// page `first` (counted from the mapping's start).
struct Run {
    first: usize,
    pages: usize,
    record: Arc<SharedFrames>,
}

/// What keeps the frame of a page that a process shares.
enum Keeper {
    /// Its address space owns it (until the page is shared).
    ThisSpace,
    /// A shared record, which the space keeps.
    Record(Arc<SharedFrames>),
    /// The program image (text, read-only data), which lives as long as
    /// the kernel.
    Program,
}

/// Where the next mappings of each kind go.
struct Layout {
    next_map: u64,
    /// Start → length of each mapping `map_memory` made: a tree, so that a
    /// process with very many mappings never needs one large contiguous
    /// block of kernel heap for them.
    maps: alloc::collections::BTreeMap<u64, u64>,
    next_shared: u64,
    next_mailbox: u64,
}

static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(1);
/// Every process record not yet dropped, by id, for diagnostics and process
/// trees. A record leaves it as it is dropped, so the map holds live
/// processes only (a dead one's entry would keep its allocation).
static REGISTRY: SpinLock<alloc::collections::BTreeMap<u64, alloc::sync::Weak<Process>>> =
    SpinLock::new(alloc::collections::BTreeMap::new());
/// Processes alive (created and not yet dropped), for tests.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// Where [`kill_inside_next_start`] ends a process during its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKillPoint {
    /// Just after it left CREATED, before its `StartInfo` is written.
    BeforeStartInfo,
    /// Just after its thread was made, before the process records it.
    AfterThread,
}

/// The process whose next start [`kill_inside_next_start`] kills (0: none).
static START_KILL_PROCESS: AtomicU64 = AtomicU64::new(0);
/// Where and with what reason: bit 32 set for
/// [`StartKillPoint::AfterThread`], the reason in the low 32 bits.
static START_KILL_HOW: AtomicU64 = AtomicU64::new(0);

/// For tests: makes the next start of process `process` end it, at `at`,
/// with `Killed(reason)`, as [`Process::end`] from another CPU could, so
/// that a kill lands inside the start for certain. Process ids are never
/// reused, so an arming whose start never comes does nothing.
pub fn kill_inside_next_start(process: u64, at: StartKillPoint, reason: u32) {
    START_KILL_PROCESS.store(0, Ordering::SeqCst);
    let point = match at {
        StartKillPoint::BeforeStartInfo => 0,
        StartKillPoint::AfterThread => 1 << 32,
    };
    START_KILL_HOW.store(point | u64::from(reason), Ordering::Relaxed);
    START_KILL_PROCESS.store(process, Ordering::Release);
}

/// Why a process could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// No memory.
    OutOfMemory,
    /// Mapping failed.
    Map(MapError),
    /// Setting up the task failed.
    Task(task::TaskError),
}

impl From<CreateError> for Error {
    fn from(error: CreateError) -> Self {
        match error {
            CreateError::OutOfMemory | CreateError::Task(_) => Error::OutOfMemory,
            CreateError::Map(_) => Error::OutOfMemory,
        }
    }
}

fn map_error(error: MapError) -> CreateError {
    match error {
        MapError::OutOfFrames => CreateError::OutOfMemory,
        other => CreateError::Map(other),
    }
}

/// Maps the program into a new address space: shared text and read-only
/// data, private data, a zeroed stack (with an unmapped guard page below).
fn populate(space: &mut AddressSpace, program: &Program) -> Result<(), CreateError> {
    for (index, frame) in program.text.frames.iter().enumerate() {
        space.map(program.text.address + index as u64 * 4096, *frame, Access::USER_CODE, false).map_err(map_error)?;
    }
    if let Some(rodata) = &program.rodata {
        for (index, frame) in rodata.frames.iter().enumerate() {
            space
                .map(rodata.address + index as u64 * 4096, *frame, Access::USER_READ_ONLY, false)
                .map_err(map_error)?;
        }
    }
    if let Some(data) = &program.data_template {
        for (index, template) in data.frames.iter().enumerate() {
            let frame = frames::allocate_for_process().ok_or(CreateError::OutOfMemory)?;
            // SAFETY: both frames are mapped through the physical window; the
            // new one is ours alone, the template is only read.
            unsafe {
                core::ptr::copy_nonoverlapping(frames::frame_pointer(*template), frames::frame_pointer(frame), 4096)
            };
            if let Err(error) = space.map(data.address + index as u64 * 4096, frame, Access::USER_DATA, true) {
                frames::deallocate(frame);
                return Err(map_error(error));
            }
        }
    }
    // Only the top stack page now (it holds `StartInfo`); the rest come on
    // first touch (`grow_stack`).
    let frame = frames::allocate_zeroed_for_process().ok_or(CreateError::OutOfMemory)?;
    if let Err(error) = space.map(USER_STACK_TOP - 4096, frame, Access::USER_DATA, true) {
        frames::deallocate(frame);
        return Err(map_error(error));
    }
    Ok(())
}

/// What a page fault in a process's stack area came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StackGrowth {
    /// A zeroed page is mapped there now: resume.
    Grown,
    /// The fault is not a stack growth (outside its reach, or a protection
    /// fault): a fault of the program.
    NotStack,
    /// A growth, but no memory is left for processes.
    NoMemory,
}

/// Maps a zeroed page for a page fault inside the stack's reach (above the
/// guard page).
fn grow_stack(process: &Process, address: u64, error_code: u64) -> StackGrowth {
    let stack_bottom = USER_STACK_TOP - process.program.stack_size.max(4096);
    let present = error_code & 1 != 0;
    if present || !(stack_bottom..USER_STACK_TOP).contains(&address) {
        return StackGrowth::NotStack;
    }
    let Some(frame) = frames::allocate_zeroed_for_process() else { return StackGrowth::NoMemory };
    let page = address & !4095;
    let mapped = process.task.with_address_space(|space| space.map(page, frame, Access::USER_DATA, true));
    match mapped {
        Some(Ok(())) => StackGrowth::Grown,
        Some(Err(MapError::OutOfFrames)) => {
            frames::deallocate(frame);
            StackGrowth::NoMemory
        }
        _ => {
            frames::deallocate(frame);
            StackGrowth::NotStack
        }
    }
}

impl Process {
    /// Creates a process from `program`, in the CREATED state.
    pub fn create(program: Arc<Program>, name: &str, parent: u64, argument: u64) -> Result<Arc<Self>, CreateError> {
        Self::create_inner(program, name, parent, argument, false)
    }

    /// Creates the supervisor: the first process, which holds the images.
    pub fn create_supervisor(program: Arc<Program>) -> Result<Arc<Self>, CreateError> {
        Self::create_inner(program, "supervisor", 0, 0, true)
    }

    /// Creates a process with the supervisor's rights (it may list the
    /// images and create processes from them) under another name: for
    /// tests that exercise those calls from a second process.
    pub fn create_with_supervisor_rights(
        program: Arc<Program>,
        name: &str,
        argument: u64,
    ) -> Result<Arc<Self>, CreateError> {
        Self::create_inner(program, name, 0, argument, true)
    }

    fn create_inner(
        program: Arc<Program>,
        name: &str,
        parent: u64,
        argument: u64,
        supervisor: bool,
    ) -> Result<Arc<Self>, CreateError> {
        if !frames::room_for_process_records() {
            return Err(CreateError::OutOfMemory);
        }
        let task = task::new_task(Cow::Owned(String::from(name)), true).map_err(CreateError::Task)?;
        let populated = task.with_address_space(|space| populate(space, &program)).unwrap_or(Ok(()));
        let process = Arc::new(Process {
            id: NEXT_PROCESS_ID.fetch_add(1, Ordering::Relaxed),
            name: SpinLock::new(String::from(name)),
            task,
            state: AtomicProcState::new(ProcState::Created),
            parent,
            supervisor,
            program,
            handles: SpinLock::new(Vec::new()),
            allowed: AtomicU64::new(ALL_SYSCALLS),
            argument,
            start: SpinLock::new(StartDraft::default()),
            layout: SpinLock::new(Layout {
                next_map: USER_MAP_BASE,
                maps: alloc::collections::BTreeMap::new(),
                next_shared: USER_SHARED_BASE,
                next_mailbox: orrery_abi::USER_MAILBOX_BASE,
            }),
            exit: SpinLock::new(None),
            thread: SpinLock::new(None),
            creator_retain: SpinLock::new(true),
        });
        LIVE.fetch_add(1, Ordering::Relaxed);
        REGISTRY.lock().insert(process.id, Arc::downgrade(&process));
        if let Err(error) = populated {
            process.abandon();
            return Err(error);
        }
        Ok(process)
    }

    /// The process id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> String {
        self.name.lock().clone()
    }

    /// Its task (address space, lifetime).
    pub fn task(&self) -> &Arc<Task> {
        &self.task
    }

    /// Its Akaros state.
    pub fn state(&self) -> ProcState {
        self.state.load()
    }

    /// The id of the process that created it (0 for the kernel's).
    pub fn parent(&self) -> u64 {
        self.parent
    }

    /// True for the supervisor.
    pub fn is_supervisor(&self) -> bool {
        self.supervisor
    }

    /// The program it runs.
    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// True when system call `number` is allowed.
    pub fn may_call(&self, number: u64) -> bool {
        number < 64 && self.allowed.load(Ordering::Relaxed) & (1 << number) != 0
    }

    fn require_created(&self) -> Result<(), Error> {
        if self.state() == ProcState::Created { Ok(()) } else { Err(Error::WrongState) }
    }

    /// Renames a CREATED process.
    pub fn set_name(&self, name: &str) -> Result<(), Error> {
        self.require_created()?;
        *self.name.lock() = String::from(name);
        Ok(())
    }

    /// Limits the system calls of a CREATED process (only ever narrows).
    pub fn restrict(&self, allowed: u64) -> Result<(), Error> {
        self.require_created()?;
        self.allowed.fetch_and(allowed, Ordering::Relaxed);
        Ok(())
    }

    /// Shares the pages of this process's memory at `address .. address +
    /// length` with `child`, a CREATED process, in its shared region
    /// (writable with `writable`, which the pages must be here); returns
    /// where they are mapped in the child. What `process_share` does.
    ///
    /// The pages must be this process's user memory; stack pages not touched
    /// yet are mapped first, as a touch from user mode would map them. A
    /// page this process owned stops being its own: its frame moves into a
    /// [`SharedFrames`] record that both address spaces keep until they are
    /// torn down (or this one unmaps the page), so the frame goes back to
    /// the allocator only once neither maps it, whichever ends first. A page
    /// shared before, or a mailbox's, is kept by the record that already
    /// keeps it, so sharing a page twice frees it once; the program's text
    /// and read-only data live as long as the kernel.
    pub fn share_with(&self, child: &Process, address: u64, length: u64, writable: bool) -> Result<u64, Error> {
        if length == 0 || length > orrery_abi::MAX_MAP_BYTES {
            return Err(Error::BadLength);
        }
        let range = UserSlice::new(address, length, 4096)?;
        // Before anything moves: a page shared with nobody stays this
        // process's own.
        child.require_created()?;
        let pages = length.div_ceil(4096) as usize;
        // Each retry follows a page newly mapped, so this ends.
        let lent = loop {
            let attempt = self
                .task
                .with_address_space(|space| self.lend(space, range.address(), pages, writable))
                .ok_or(Error::BadAddress)??;
            match attempt {
                Ok(lent) => break lent,
                // Outside `with_address_space`: mapping takes it too.
                Err(unmapped) if self.fault_in(unmapped) => {}
                Err(_) => return Err(Error::BadAddress),
            }
        };
        child.share_frames(&lent, writable)
    }

    /// Takes the frames of `pages` pages from `start` in `space` (this
    /// process's) for sharing: moves the ones this space owns into a new
    /// [`SharedFrames`] record, kept here for the pages that map them, and
    /// says what keeps each frame. `Ok(Err(address))` when the page at
    /// `address` is not mapped (nothing has changed then); an error when a
    /// page is not this process's memory or not writable as asked.
    fn lend(
        &self,
        space: &mut AddressSpace,
        start: u64,
        pages: usize,
        writable: bool,
    ) -> Result<Result<Lent, u64>, Error> {
        let page_address = |page: usize| start + page as u64 * 4096;
        let keeper = |space: &AddressSpace, address: u64, bits: u64| {
            if bits & OWNED != 0 {
                Ok(Keeper::ThisSpace)
            } else if let Some(record) = space.keeper(address) {
                Ok(Keeper::Record(record.clone()))
            } else if self.program.image_holds(address) {
                Ok(Keeper::Program)
            } else {
                Err(Error::BadAddress)
            }
        };
        // First a look that changes nothing: every page must be this
        // process's, writable if asked. It counts what to allocate: the
        // frames this space owns, and the runs of consecutive pages kept
        // alike (by this space, which the new record will replace, or by
        // one record), of which the child keeps one reference each.
        let (mut owned, mut run_count, mut new_runs, mut last) = (0, 0, 0, None);
        for page in 0..pages {
            let address = page_address(page);
            let Some((_, bits)) = space.translate(address) else { return Ok(Err(address)) };
            if bits & flags::USER == 0 {
                return Err(Error::BadAddress);
            }
            if writable && bits & flags::WRITABLE == 0 {
                return Err(Error::BadFlags);
            }
            let identity = match keeper(space, address, bits)? {
                Keeper::ThisSpace => Some(0),
                Keeper::Record(record) => Some(Arc::as_ptr(&record) as usize),
                Keeper::Program => None,
            };
            if identity.is_some() && identity != last {
                run_count += 1;
                new_runs += usize::from(identity == Some(0));
            }
            owned += usize::from(identity == Some(0));
            last = identity;
        }
        let mut frames = Vec::new();
        let mut moved = Vec::new();
        // (first page, pages, record), `None` for the new record.
        let mut runs: Vec<(usize, usize, Option<Arc<SharedFrames>>)> = Vec::new();
        let mut lent_runs: Vec<Run> = Vec::new();
        frames.try_reserve_exact(pages).map_err(|_| Error::OutOfMemory)?;
        moved.try_reserve_exact(owned).map_err(|_| Error::OutOfMemory)?;
        runs.try_reserve_exact(run_count).map_err(|_| Error::OutOfMemory)?;
        lent_runs.try_reserve_exact(run_count).map_err(|_| Error::OutOfMemory)?;
        space.reserve_kept(new_runs).map_err(|_| Error::OutOfMemory)?;
        // Then the move. Nothing fails from here on: the lock is held, so
        // every page is as just seen, and the memory is reserved.
        for page in 0..pages {
            let address = page_address(page);
            let (physical, bits) = space.translate(address).expect("mapped: seen under this lock");
            frames.push(Frame::containing(physical));
            let record = match keeper(space, address, bits).expect("seen under this lock") {
                Keeper::ThisSpace => {
                    moved.push(space.disown(address).expect("owned: seen under this lock"));
                    None
                }
                Keeper::Record(record) => Some(record),
                Keeper::Program => continue,
            };
            match runs.last_mut() {
                Some((first, count, last))
                    if *first + *count == page
                        && match (&*last, &record) {
                            (Some(last), Some(record)) => Arc::ptr_eq(last, record),
                            (last, record) => last.is_none() && record.is_none(),
                        } =>
                {
                    *count += 1
                }
                _ => runs.push((page, 1, record)),
            }
        }
        let new = (!moved.is_empty()).then(|| SharedFrames::new(moved));
        for (first, pages, record) in runs {
            let record = match (record, &new) {
                (Some(record), _) => record,
                (None, Some(new)) => {
                    space.keep(page_address(first), page_address(first + pages), new.clone()).expect("room reserved");
                    new.clone()
                }
                (None, None) => unreachable!("a run of owned pages moved none"),
            };
            lent_runs.push(Run { first, pages, record });
        }
        Ok(Ok(Lent { frames, runs: lent_runs }))
    }

    /// Maps `lent` into a CREATED process's shared region; returns the
    /// address.
    fn share_frames(&self, lent: &Lent, writable: bool) -> Result<u64, Error> {
        self.require_created()?;
        let length = lent.frames.len() as u64 * 4096;
        let address = {
            let mut layout = self.layout.lock();
            let address = layout.next_shared;
            if address + length > USER_SHARED_END {
                return Err(Error::LimitReached);
            }
            layout.next_shared += length + 4096;
            address
        };
        let access = if writable { Access::USER_DATA } else { Access::USER_READ_ONLY };
        self.map_shared(address, &lent.frames, &lent.runs, access)?;
        let mut start = self.start.lock();
        if start.shared_address == 0 {
            start.shared_address = address;
            start.shared_length = length;
        }
        Ok(address)
    }

    /// Maps `frames` at `address` without owning them, keeping the record
    /// of each of `runs` for the pages it covers.
    fn map_shared(&self, address: u64, frames: &[Frame], runs: &[Run], access: Access) -> Result<(), Error> {
        let end = address + frames.len() as u64 * 4096;
        self.task
            .with_address_space(|space| {
                space.reserve_kept(runs.len()).map_err(|_| Error::OutOfMemory)?;
                for run in runs {
                    let start = address + run.first as u64 * 4096;
                    let kept = space.keep(start, start + run.pages as u64 * 4096, run.record.clone());
                    kept.map_err(|_| Error::OutOfMemory)?;
                }
                for (index, frame) in frames.iter().enumerate() {
                    if let Err(error) = space.map(address + index as u64 * 4096, *frame, access, false) {
                        for undo in 0..index {
                            space.unmap(address + undo as u64 * 4096);
                        }
                        space.release_kept(address, end);
                        return Err(if error == MapError::OutOfFrames { Error::OutOfMemory } else { Error::Overlaps });
                    }
                }
                Ok(())
            })
            .unwrap_or(Err(Error::OutOfMemory))
    }

    /// Maps a mailbox's pages into this process; returns the address.
    pub fn map_mailbox(&self, mailbox: &MailboxObject) -> Result<u64, Error> {
        let length = mailbox.bytes();
        let address = {
            let mut layout = self.layout.lock();
            let address = layout.next_mailbox;
            if address + length > orrery_abi::USER_MAILBOX_END {
                return Err(Error::LimitReached);
            }
            layout.next_mailbox += length + 4096;
            address
        };
        let record = mailbox.pages();
        let run = Run { first: 0, pages: record.frames().len(), record: record.clone() };
        self.map_shared(address, record.frames(), &[run], Access::USER_DATA)?;
        Ok(address)
    }

    /// Adds a handle; returns its number.
    pub fn add_handle(&self, handle: Handle) -> Result<u64, Error> {
        let mut handles = self.handles.lock();
        if let Some(index) = handles.iter().position(Option::is_none) {
            handles[index] = Some(handle);
            return Ok(index as u64);
        }
        if handles.len() >= MAX_HANDLES {
            return Err(Error::LimitReached);
        }
        handles.push(Some(handle));
        Ok(handles.len() as u64 - 1)
    }

    /// The handle with this number.
    pub fn handle(&self, number: u64) -> Result<Handle, Error> {
        self.handles.lock().get(number as usize).cloned().flatten().ok_or(Error::BadHandle)
    }

    /// Closes a handle.
    pub fn close_handle(&self, number: u64) -> Result<(), Error> {
        let handle = self.handles.lock().get_mut(number as usize).and_then(Option::take).ok_or(Error::BadHandle)?;
        drop(handle);
        Ok(())
    }

    /// Grants a CREATED process a handle to `mailbox`, as its server or a
    /// client, mapping it in; returns the handle number.
    pub fn grant_mailbox(&self, mailbox: &Arc<MailboxObject>, server: bool) -> Result<u64, Error> {
        self.require_created()?;
        let address = self.map_mailbox(mailbox)?;
        let handle = self.add_handle(Handle::Mailbox { object: mailbox.clone(), server, address })?;
        self.note_granted_mailbox(handle);
        Ok(handle)
    }

    /// The user thread, once started.
    pub fn thread(&self) -> Option<ThreadId> {
        *self.thread.lock()
    }

    /// Records a mailbox handle granted before start (for `StartInfo`).
    pub fn note_granted_mailbox(&self, handle: u64) {
        let mut start = self.start.lock();
        if start.first_mailbox.is_none() {
            start.first_mailbox = Some(handle);
        }
        start.mailbox_count += 1;
    }

    /// Maps `length` bytes of zeroed private memory; returns the address.
    pub fn map_memory(&self, length: u64, writable: bool) -> Result<u64, Error> {
        if length == 0 || length > orrery_abi::MAX_MAP_BYTES {
            return Err(Error::BadLength);
        }
        let length = length.next_multiple_of(4096);
        let address = {
            let mut layout = self.layout.lock();
            let address = layout.next_map;
            if address + length > USER_MAP_END {
                return Err(Error::LimitReached);
            }
            layout.next_map += length + 4096;
            layout.maps.insert(address, length);
            address
        };
        let access = if writable { Access::USER_DATA } else { Access::USER_READ_ONLY };
        let result = self
            .task
            .with_address_space(|space| {
                for page in 0..length / 4096 {
                    let Some(frame) = frames::allocate_zeroed_for_process() else {
                        for undo in 0..page {
                            space.unmap(address + undo * 4096);
                        }
                        return Err(Error::OutOfMemory);
                    };
                    if space.map(address + page * 4096, frame, access, true).is_err() {
                        frames::deallocate(frame);
                        for undo in 0..page {
                            space.unmap(address + undo * 4096);
                        }
                        return Err(Error::OutOfMemory);
                    }
                }
                Ok(address)
            })
            .unwrap_or(Err(Error::OutOfMemory));
        if result.is_err() {
            self.layout.lock().maps.remove(&address);
        }
        result
    }

    /// Unmaps a whole mapping made by `map_memory`. The process may be
    /// running on another CPU meanwhile (when the kernel unmaps on its
    /// behalf): each batch of pages is unmapped, shot down on every CPU that
    /// has the space loaded, and only then are its frames freed.
    pub fn unmap_memory(&self, address: u64, length: u64) -> Result<(), Error> {
        /// Pages unmapped per shoot-down.
        const BATCH: usize = 64;
        if !address.is_multiple_of(4096) {
            return Err(Error::Misaligned);
        }
        let length = length.next_multiple_of(4096);
        {
            let mut layout = self.layout.lock();
            if layout.maps.get(&address) != Some(&length) {
                return Err(Error::NotMapped);
            }
            layout.maps.remove(&address);
        }
        let end = address + length;
        let mut start = address;
        while start < end {
            let stop = end.min(start + BATCH as u64 * 4096);
            let mut owned = [Frame::containing(0); BATCH];
            let mut count = 0;
            let root = self.task.with_address_space(|space| {
                for page in (start..stop).step_by(4096) {
                    if let Some((frame, true)) = space.take_mapping(page) {
                        owned[count] = frame;
                        count += 1;
                    }
                }
                space.root()
            });
            if let Some(root) = root {
                // Not preempted (nor moved) while it waits for the others.
                let _critical = task::PreemptGuard::new();
                crate::arch::smp::shoot_down_user(root);
            }
            owned[..count].iter().copied().for_each(frames::deallocate);
            start = stop;
        }
        // Pages shared with a child are its to keep: this space lets go of
        // them, and their frames go when the child's does. No CPU maps them
        // through this space any more, so a frame freed here is unused.
        self.task.with_address_space(|space| space.release_kept(address, end));
        Ok(())
    }

    /// Makes a CREATED process runnable: writes its `StartInfo`, creates its
    /// user thread, and hands the creator's retain to it.
    ///
    /// `WrongState` if it is not CREATED, or if it was killed before the
    /// start returned: a kill may land from another CPU at any point of it,
    /// and a thread the start already made stops with the kill. Any other
    /// failure after the process left CREATED ends it (`Killed(0)`): a
    /// failed start never leaves it RUNNABLE_S with no thread, which nothing
    /// would finish.
    pub fn start(self: &Arc<Self>) -> Result<(), Error> {
        self.start_on(CpuSet::ALL)
    }

    /// [`Process::start`], with the thread kept to `cpus` (`BadFlags`, and
    /// the process ended, if they name no running CPU).
    pub fn start_on(self: &Arc<Self>, cpus: CpuSet) -> Result<(), Error> {
        self.state.try_transition(ProcState::Created, ProcState::RunnableS).map_err(|_| Error::WrongState)?;
        match self.launch(cpus) {
            Ok(()) => Ok(()),
            // A kill that came first ended it, and may be why this failed.
            Err(_) if !self.end(ExitStatus::Killed(0)) => Err(Error::WrongState),
            Err(error) => Err(error),
        }
    }

    /// The part of a start after the move to RUNNABLE_S: writes `StartInfo`
    /// and creates the thread. The caller ends the process on an error.
    fn launch(self: &Arc<Self>, cpus: CpuSet) -> Result<(), Error> {
        // The thread record and its state are kernel memory made for the
        // process.
        if !frames::room_for_process_records() {
            return Err(Error::OutOfMemory);
        }
        let test_kill = self.take_start_kill();
        self.kill_for_test(test_kill, StartKillPoint::BeforeStartInfo);
        let info_address = (USER_STACK_TOP - 512) & !63;
        let mut info = StartInfo::new();
        info.process_id = self.id;
        info.tsc_hz = crate::arch::tsc::hz();
        {
            let draft = self.start.lock();
            info.first_mailbox = draft.first_mailbox.unwrap_or(u64::MAX);
            info.mailbox_count = draft.mailbox_count;
            info.shared_address = draft.shared_address;
            info.shared_length = draft.shared_length;
        }
        let name = self.name();
        let length = name.len().min(info.name.len());
        info.name[..length].copy_from_slice(&name.as_bytes()[..length]);
        info.name_length = length as u64;
        info.argument = self.argument;
        self.write_start_info(info_address, &info)?;
        let context = UserContext::new(self.program.entry, info_address - 16, info_address);
        let mut state = UserState::new(context);
        state.set_owner(self.clone());
        state.fast_allowed = self.allowed.load(Ordering::Relaxed);
        state.fast_owner = self.id;
        let id = task::spawn_user_thread(&self.task, Cow::Owned(name), state, cpus).map_err(|error| match error {
            SpawnError::TaskKilled(_) => Error::WrongState,
            SpawnError::TooManyThreads => Error::LimitReached,
            SpawnError::NoCpu => Error::BadFlags,
            SpawnError::OutOfMemory | SpawnError::Task(_) => Error::OutOfMemory,
        })?;
        self.kill_for_test(test_kill, StartKillPoint::AfterThread);
        *self.thread.lock() = Some(id);
        self.release_creator_retain();
        // Killed while the thread was being made, or since: `end` records
        // the status before it kills the task, so the thread stops at its
        // first preemption point, and the start has not succeeded. (An end
        // by the thread itself, an exit or a fault, means it ran.)
        if matches!(self.exit_status(), Some(ExitStatus::Killed(_))) {
            return Err(Error::WrongState);
        }
        Ok(())
    }

    /// The kill [`kill_inside_next_start`] armed for this process's start,
    /// if any; taking it disarms it.
    fn take_start_kill(&self) -> Option<(StartKillPoint, ExitStatus)> {
        // The one load every start makes: no process has id 0.
        if START_KILL_PROCESS.load(Ordering::Relaxed) != self.id {
            return None;
        }
        START_KILL_PROCESS.compare_exchange(self.id, 0, Ordering::Acquire, Ordering::Relaxed).ok()?;
        let how = START_KILL_HOW.load(Ordering::Relaxed);
        let at = if how >> 32 == 0 { StartKillPoint::BeforeStartInfo } else { StartKillPoint::AfterThread };
        Some((at, ExitStatus::Killed(how as u32)))
    }

    /// Ends the process as a kill from another CPU would, if `kill` (from
    /// [`Process::take_start_kill`]) is for `point`.
    fn kill_for_test(&self, kill: Option<(StartKillPoint, ExitStatus)>, point: StartKillPoint) {
        if let Some((at, status)) = kill
            && at == point
        {
            self.end(status);
        }
    }

    fn write_start_info(&self, address: u64, info: &StartInfo) -> Result<(), Error> {
        // SAFETY: `StartInfo` is plain data (`#[repr(C)]`, integers and a
        // byte array), so viewing it as bytes is sound.
        let bytes = unsafe {
            core::slice::from_raw_parts(info as *const StartInfo as *const u8, core::mem::size_of::<StartInfo>())
        };
        self.task
            .with_address_space(|space| {
                let (physical, _) = space.translate(address).ok_or(Error::BadAddress)?;
                // The block sits inside one stack page (512 bytes below the
                // top, 64-byte aligned), reached through the physical window.
                let offset = (address % 4096) as usize;
                assert!(offset + bytes.len() <= 4096);
                let page = crate::arch::paging::phys_to_virt(physical - offset as u64) as *mut u8;
                // SAFETY: the page is a stack frame this process owns, its
                // thread not made yet, and mapped through the physical
                // window; the space's lock, held here, keeps it mapped (and
                // its frame allocated) even if a kill's clean-up is due.
                unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), page.add(offset), bytes.len()) };
                Ok(())
            })
            .unwrap_or(Err(Error::BadAddress))
    }

    fn release_creator_retain(&self) {
        let mut held = self.creator_retain.lock();
        if core::mem::take(&mut *held) {
            drop(held);
            task::release_creator(&self.task);
        }
    }

    /// Ends the process with `status` (the first status stands): its thread
    /// stops, and the reaper frees its memory. Returns false if it had
    /// already ended.
    pub fn end(&self, status: ExitStatus) -> bool {
        {
            let mut exit = self.exit.lock();
            if exit.is_some() {
                return false;
            }
            *exit = Some(status);
        }
        let _ = self.state.apply(orrery_proc::Event::Kill);
        let code = match status {
            ExitStatus::Exited(code) => task::ExitStatus::Exited(u64::from(code)),
            _ => task::ExitStatus::Killed(status.encode()),
        };
        task::kill_with_status(&self.task, code);
        // A process that never started holds only the creator's retain.
        self.release_creator_retain();
        true
    }

    /// Drops a process that failed during creation.
    fn abandon(&self) {
        let _ = self.end(ExitStatus::Killed(0));
    }

    /// How it ended, once it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock()
    }

    /// True once its memory has been released (what `process_wait` waits for).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Maps the unmapped page at `address` if a fault from user mode would
    /// map it (its stack grows on first touch), for work the kernel does on
    /// the process's behalf. False otherwise. Takes the address space's
    /// lock: not to be called with it held.
    pub(crate) fn fault_in(&self, address: u64) -> bool {
        grow_stack(self, address, 0) == StackGrowth::Grown
    }

    /// Records where a trap leaves the process (lazy Akaros bookkeeping):
    /// `from` is the state found (for a system call, once it is answered:
    /// a kill meanwhile leaves a state no move goes on from), `to` the one its
    /// outcome means (RunningS, or Waiting or RunnableS for a system call
    /// that waits or yields). One move when the table has the edge, through
    /// RunningS when it has not (RunnableS to Waiting: the first system call
    /// of a new process waits). A move that loses a race (a kill) is left
    /// undone: the killer's state stands.
    fn note_trap(&self, from: ProcState, to: ProcState) {
        if from == to {
            return;
        }
        if from.can_transition(to) {
            let _ = self.state.try_transition(from, to);
        } else if matches!(from, ProcState::RunnableS | ProcState::Waiting)
            && self.state.try_transition(from, ProcState::RunningS).is_ok()
        {
            let _ = self.state.try_transition(ProcState::RunningS, to);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // Taken out under the lock, dropped after it (dropping a `Weak`
        // frees nothing but may free the allocation, outside the lock).
        let entry = REGISTRY.lock().remove(&self.id);
        drop(entry);
    }
}

/// Prints every process record still alive (for diagnosing leaks).
pub fn dump_processes() {
    // Upgraded under the lock, used and dropped after it: dropping the last
    // reference to a record takes the lock (`Drop for Process`).
    let live: Vec<Arc<Process>> = REGISTRY.lock().values().filter_map(alloc::sync::Weak::upgrade).collect();
    for process in live {
        crate::println!(
            "process {} '{}' {:?} exit {:?} finished {} references {} thread {:?}",
            process.id,
            process.name(),
            process.state(),
            process.exit_status(),
            process.is_finished(),
            Arc::strong_count(&process) - 1,
            process.thread()
        );
    }
}

/// Every live process descended from process `id` (its children, theirs,
/// and so on), for tests that clean up after a process tree.
pub fn descendants_of(id: u64) -> Vec<Arc<Process>> {
    let all: Vec<Arc<Process>> = REGISTRY.lock().values().filter_map(alloc::sync::Weak::upgrade).collect();
    let mut found: Vec<Arc<Process>> = Vec::new();
    let mut parents = alloc::vec![id];
    while let Some(parent) = parents.pop() {
        for process in all.iter().filter(|process| process.parent == parent) {
            if !found.iter().any(|known| Arc::ptr_eq(known, process)) {
                parents.push(process.id);
                found.push(process.clone());
            }
        }
    }
    found
}

/// Processes not yet dropped (for tests).
pub fn live_processes() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// Maps the page at `address` if the current thread's process would have
/// it mapped on a fault from user mode (its stack grows on first touch), for
/// copies the kernel makes on a system call's behalf. False otherwise.
pub(crate) fn fault_in_for_current(address: u64) -> bool {
    process_of(task::scheduler::current()).is_some_and(|process| process.fault_in(address))
}

/// The process a user thread belongs to.
pub fn process_of(thread: &task::Thread) -> Option<Arc<Process>> {
    task::user::owner_of(thread).and_then(|owner| owner.downcast::<Process>().ok())
}

/// Maps a CPU exception to the fault kind a process's status reports.
fn fault_kind(exception: Exception) -> FaultKind {
    match exception {
        Exception::PageFault => FaultKind::PageFault,
        Exception::GeneralProtection => FaultKind::GeneralProtection,
        Exception::InvalidOpcode => FaultKind::InvalidOpcode,
        Exception::DivideError => FaultKind::DivideError,
        _ => FaultKind::Other,
    }
}

/// The trap handler installed into the dispatcher.
fn handle_trap(
    _thread: &task::Thread,
    owner: Option<&task::user::UserOwner>,
    context: &mut UserContext,
    trap: Trap,
) -> task::user::Outcome {
    use task::user::Outcome;
    let Some(process) = owner.and_then(task::user::UserOwner::downcast::<Process>) else { return Outcome::Exit };
    if trap != Trap::Syscall {
        process.note_trap(process.state(), ProcState::RunningS);
    }
    match trap {
        Trap::Syscall => {
            // One move for the whole call, once its outcome is known, from
            // the state found then; none (nor a decoding of the state word)
            // when the process is there already, as when it keeps calling
            // and waiting.
            let outcome = syscall::dispatch(process, context);
            let to = match &outcome {
                Outcome::Pending(_) | Outcome::PendingHandOff(..) => ProcState::Waiting,
                Outcome::Yield => ProcState::RunnableS,
                _ => ProcState::RunningS,
            };
            if !process.state.is(to) {
                process.note_trap(process.state(), to);
            }
            outcome
        }
        Trap::Interrupt(_) => Outcome::Resume,
        Trap::Exception { exception, address, error_code } => {
            let kind = match exception {
                Exception::PageFault => match grow_stack(process, address, error_code) {
                    StackGrowth::Grown => return Outcome::Resume,
                    StackGrowth::NoMemory => FaultKind::OutOfMemory,
                    StackGrowth::NotStack => fault_kind(exception),
                },
                _ => fault_kind(exception),
            };
            let address = if exception == Exception::PageFault { address } else { context.rip };
            let status = ExitStatus::Faulted { kind, address };
            let why = if kind == FaultKind::OutOfMemory { "no memory to grow its stack" } else { exception.mnemonic() };
            log::info!("process {} '{}' ended: {why} at {address:#x}", process.id, process.name());
            process.end(status);
            Outcome::Exit
        }
    }
}

/// The dispatcher's word that a thread cannot go on: its vector registers
/// could not be saved, for want of memory. Not the program's doing, but the
/// process ends with a status that says why, as for a fault.
fn handle_state_lost(thread: &task::Thread, context: &UserContext) {
    let Some(process) = process_of(thread) else { return };
    log::warn!(
        "process {} '{}' ended: no memory to save its vector registers at {:#x}",
        process.id,
        process.name(),
        context.rip
    );
    process.end(ExitStatus::Faulted { kind: FaultKind::OutOfMemory, address: context.rip });
}

/// Installs the process layer into the dispatcher and syscalls into the
/// arch layer; loads the programs. Call once at boot after the task system.
pub fn init() -> loader::LoaderReport {
    task::user::set_handlers(task::user::Handlers { trap: handle_trap, state_lost: handle_state_lost });
    crate::arch::user::set_fast_handler(syscall::fast, syscall::FAST_CALLS);
    loader::load_all()
}

/// Creates and starts a process from the program called `name` (for the
/// kernel itself: the supervisor at boot, and tests).
pub fn spawn(name: &str, argument: u64) -> Result<Arc<Process>, Error> {
    let program = loader::program(name).ok_or(Error::NoSuchImage)?;
    let process = Process::create(program, name, 0, argument)?;
    process.start()?;
    Ok(process)
}
