//! System calls: decoding, checking and answering what a user thread asks.
//!
//! Every call runs on the CPU's dispatcher right after the `syscall` trap,
//! with preemption held off; a call that has to wait returns a future
//! instead of blocking (see `task::user`). Every argument is checked: a
//! number the ABI does not know, a call outside the process's allowed set, a
//! bad pointer, length, flag or handle each give an error code.

use alloc::sync::Arc;
use core::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use orrery_abi::{Error, MAX_LOG_BYTES, MAX_NAME_BYTES, RING_CLIENT, RING_SERVER, Syscall};

use super::{Handle, Process, loader, mailbox::MailboxObject, uaccess::UserSlice};
use crate::{
    arch::{tsc, user::UserContext},
    task::{
        self,
        user::{Outcome, SyscallFuture},
    },
};

fn result(value: Result<u64, Error>) -> Outcome {
    Outcome::Return(match value {
        Ok(value) => value,
        Err(error) => error.to_return(),
    })
}

/// The calls the fast path answers: from the CPU and the per-CPU context
/// alone, with interrupts off, before the dispatcher is involved (see
/// `arch::user`).
pub const FAST_CALLS: u64 =
    Syscall::Null.bit() | Syscall::TscHz.bit() | Syscall::ProcessId.bit() | Syscall::CpuId.bit();

/// The fast path's handler (only called for [`FAST_CALLS`]).
pub fn fast(_arguments: [u64; 4], number: u64, allowed: u64, owner: u64) -> u64 {
    if allowed & (1 << number) == 0 {
        return Error::Restricted.to_return();
    }
    const NULL: u64 = Syscall::Null as u64;
    const TSC_HZ: u64 = Syscall::TscHz as u64;
    const PROCESS_ID: u64 = Syscall::ProcessId as u64;
    match number {
        NULL => 0,
        TSC_HZ => tsc::hz(),
        PROCESS_ID => owner,
        _ => crate::arch::cpu_index() as u64,
    }
}

/// Handles the system call in `context` for `process`.
pub fn dispatch(process: &Process, context: &mut UserContext) -> Outcome {
    let (number, arguments) = context.syscall_arguments();
    let Some(call) = Syscall::from_number(number) else { return result(Err(Error::NoSuchCall)) };
    if !process.may_call(number) {
        return result(Err(Error::Restricted));
    }
    match call {
        Syscall::Null => result(Ok(0)),
        Syscall::Exit => {
            process.end(orrery_abi::ExitStatus::Exited(arguments[0] as u32));
            Outcome::Exit
        }
        Syscall::Yield => Outcome::Yield,
        Syscall::SleepUntil => sleep_until(arguments[0]),
        Syscall::Log => result(log(process, arguments[0], arguments[1])),
        Syscall::TscHz => result(Ok(tsc::hz())),
        Syscall::MapMemory => result(map_memory(process, arguments[0], arguments[1])),
        Syscall::UnmapMemory => result(process.unmap_memory(arguments[0], arguments[1]).map(|()| 0)),
        Syscall::ImageCount => result(supervisor(process).map(|()| loader::programs().len() as u64)),
        Syscall::ImageName => result(image_name(process, arguments[0], arguments[1], arguments[2])),
        Syscall::ProcessCreate => {
            result(process_create(process, arguments[0], arguments[1], arguments[2], arguments[3]))
        }
        Syscall::ProcessStart => result(child(process, arguments[0]).and_then(|child| child.start().map(|()| 0))),
        Syscall::ProcessWait => match child(process, arguments[0]) {
            Ok(child) => Outcome::Pending(SyscallFuture::new(ProcessWait { child, registered: None })),
            Err(error) => result(Err(error)),
        },
        Syscall::ProcessKill => result(
            child(process, arguments[0])
                .map(|child| u64::from(child.end(orrery_abi::ExitStatus::Killed(arguments[1] as u32)))),
        ),
        Syscall::ProcessRestrict => {
            result(child(process, arguments[0]).and_then(|child| child.restrict(arguments[1]).map(|()| 0)))
        }
        Syscall::ProcessShare => result(process_share(process, arguments)),
        Syscall::ProcessSetName => result(process_set_name(process, arguments[0], arguments[1], arguments[2])),
        Syscall::ProcessId => result(Ok(process.id())),
        Syscall::CpuId => result(Ok(crate::arch::cpu_index() as u64)),
        Syscall::MailboxCreate => result(mailbox_create(process, arguments[0])),
        Syscall::MailboxGrant => result(mailbox_grant(process, arguments[0], arguments[1], arguments[2])),
        Syscall::MailboxAddress => result(mailbox_address(process, arguments[0])),
        Syscall::MailboxSlots => result(mailbox(process, arguments[0]).map(|(mailbox, _)| mailbox.slots())),
        Syscall::MailboxRing => {
            result(mailbox(process, arguments[0]).and_then(|(mailbox, _)| mailbox.ring(arguments[1])))
        }
        Syscall::MailboxWait => match mailbox(process, arguments[0])
            .and_then(|(mailbox, _)| mailbox.wait(arguments[1], arguments[2], arguments[3]))
        {
            Ok(wait) => wait_now_or_later(wait),
            Err(error) => result(Err(error)),
        },
        Syscall::MailboxCall => ring_and_wait(process, arguments[0], false, arguments[1]),
        Syscall::MailboxReplyWait => ring_and_wait(process, arguments[0], true, arguments[1]),
        Syscall::HandleClose => result(process.close_handle(arguments[0]).map(|()| 0)),
    }
}

/// `MailboxCall` (a client, `as_server` false) and `MailboxReplyWait` (the
/// server): ring the other side, then wait for our own doorbell to move
/// past `seen`. When the other side has one thread waiting, it is not woken
/// but handed this CPU as this thread blocks (the IPC hand-off).
fn ring_and_wait(process: &Process, handle: u64, as_server: bool, seen: u64) -> Outcome {
    let (ring, own) = if as_server { (RING_CLIENT, RING_SERVER) } else { (RING_SERVER, RING_CLIENT) };
    let prepared = mailbox(process, handle).and_then(|(mailbox, server)| {
        if server != as_server {
            return Err(Error::WrongHandleKind);
        }
        // Made before ringing, so that nothing can fail after the other
        // side was taken off its doorbell.
        let wait = mailbox.wait(own, seen, 0)?;
        let (target, count) = wait.mailbox().ring_for_hand_off(ring)?;
        Ok((target.map(|target| (target, count)), wait))
    });
    match prepared {
        Ok((Some((target, count)), mut wait)) => {
            // The first poll here, where the future's type is known, rather
            // than through the parked future's indirection: the dispatcher
            // then blocks the thread and hands over without polling again.
            task::user::begin_wait();
            let mut context = Context::from_waker(core::task::Waker::noop());
            match Pin::new(&mut wait).poll(&mut context) {
                // The target waited for the doorbell just rung: its wait
                // ends with the count that ring made.
                Poll::Pending => Outcome::PendingHandOff(SyscallFuture::new(wait), target, count),
                Poll::Ready(value) => {
                    task::user::end_wait();
                    task::scheduler::wake(&target, task::WakeReason::Woken);
                    Outcome::Return(value)
                }
            }
        }
        Ok((None, wait)) => wait_now_or_later(wait),
        Err(error) => result(Err(error)),
    }
}

/// A wait whose condition may already hold: answered at once if so (no
/// future is kept), else parked.
fn wait_now_or_later(mut wait: super::mailbox::DoorbellWait) -> Outcome {
    let mut context = Context::from_waker(core::task::Waker::noop());
    match Pin::new(&mut wait).poll(&mut context) {
        Poll::Ready(value) => Outcome::Return(value),
        Poll::Pending => Outcome::Pending(SyscallFuture::new(wait)),
    }
}

fn supervisor(process: &Process) -> Result<(), Error> {
    if process.is_supervisor() { Ok(()) } else { Err(Error::NotPermitted) }
}

fn child(process: &Process, handle: u64) -> Result<Arc<Process>, Error> {
    match process.handle(handle)? {
        Handle::Process(child) => Ok(child),
        _ => Err(Error::WrongHandleKind),
    }
}

fn mailbox(process: &Process, handle: u64) -> Result<(Arc<MailboxObject>, bool), Error> {
    match process.handle(handle)? {
        Handle::Mailbox { object, server, .. } => Ok((object, server)),
        Handle::Process(_) => Err(Error::WrongHandleKind),
    }
}

fn mailbox_address(process: &Process, handle: u64) -> Result<u64, Error> {
    match process.handle(handle)? {
        Handle::Mailbox { address, .. } => Ok(address),
        Handle::Process(_) => Err(Error::WrongHandleKind),
    }
}

fn log(process: &Process, address: u64, length: u64) -> Result<u64, Error> {
    if length > MAX_LOG_BYTES {
        return Err(Error::BadLength);
    }
    let text = UserSlice::new(address, length, 1)?.read_text(MAX_LOG_BYTES)?;
    let name = process.name();
    for line in text.split_inclusive('\n') {
        crate::print!("[{name}] {line}");
    }
    if !text.is_empty() && !text.ends_with('\n') {
        crate::println!();
    }
    Ok(length)
}

fn map_memory(process: &Process, length: u64, flags: u64) -> Result<u64, Error> {
    if flags & !orrery_abi::MAP_WRITE != 0 {
        return Err(Error::BadFlags);
    }
    process.map_memory(length, flags & orrery_abi::MAP_WRITE != 0)
}

fn image_name(process: &Process, index: u64, address: u64, length: u64) -> Result<u64, Error> {
    supervisor(process)?;
    let program = loader::programs().get(index as usize).ok_or(Error::NoSuchImage)?;
    let name = program.name.as_bytes();
    if length < name.len() as u64 {
        return Err(Error::BadLength);
    }
    UserSlice::new(address, name.len() as u64, 1)?.write_from(name)?;
    Ok(name.len() as u64)
}

fn read_name(address: u64, length: u64) -> Result<alloc::string::String, Error> {
    if length == 0 || length > MAX_NAME_BYTES {
        return Err(Error::BadLength);
    }
    UserSlice::new(address, length, 1)?.read_text(MAX_NAME_BYTES)
}

fn process_create(process: &Process, image: u64, address: u64, length: u64, argument: u64) -> Result<u64, Error> {
    supervisor(process)?;
    let name = read_name(address, length)?;
    let program = loader::programs().get(image as usize).ok_or(Error::NoSuchImage)?.clone();
    let child = Process::create(program, &name, process.id(), argument)?;
    match process.add_handle(Handle::Process(child.clone())) {
        Ok(handle) => Ok(handle),
        Err(error) => {
            child.end(orrery_abi::ExitStatus::Killed(0));
            Err(error)
        }
    }
}

fn process_set_name(process: &Process, handle: u64, address: u64, length: u64) -> Result<u64, Error> {
    let child = child(process, handle)?;
    let name = read_name(address, length)?;
    child.set_name(&name)?;
    Ok(0)
}

fn process_share(process: &Process, arguments: [u64; 6]) -> Result<u64, Error> {
    let [handle, address, length, reserved, flags, _] = arguments;
    let child = child(process, handle)?;
    if reserved != 0 || flags & !orrery_abi::SHARE_WRITE != 0 {
        return Err(Error::BadFlags);
    }
    process.share_with(&child, address, length, flags & orrery_abi::SHARE_WRITE != 0)
}

fn mailbox_create(process: &Process, slots: u64) -> Result<u64, Error> {
    let object = MailboxObject::new(slots)?;
    let address = process.map_mailbox(&object)?;
    process.add_handle(Handle::Mailbox { object, server: true, address })
}

fn mailbox_grant(process: &Process, handle: u64, target: u64, role: u64) -> Result<u64, Error> {
    let (mailbox, server) = mailbox(process, handle)?;
    if !server {
        return Err(Error::NotPermitted);
    }
    let grant_server = match role {
        RING_SERVER => true,
        RING_CLIENT => false,
        _ => return Err(Error::BadFlags),
    };
    child(process, target)?.grant_mailbox(&mailbox, grant_server)
}

/// Sleeping until a deadline, as a system-call future.
struct Sleep {
    deadline_tsc: u64,
    armed: bool,
}

impl Future for Sleep {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<u64> {
        if tsc::now() >= self.deadline_tsc {
            return Poll::Ready(0);
        }
        if !self.armed {
            task::wait::arm_timer_for_current(self.deadline_tsc);
            self.armed = true;
        }
        Poll::Pending
    }
}

fn sleep_until(deadline_tsc: u64) -> Outcome {
    if tsc::now() >= deadline_tsc {
        return Outcome::Return(0);
    }
    Outcome::Pending(SyscallFuture::new(Sleep { deadline_tsc, armed: false }))
}

/// Waiting for a child to end, as a system-call future.
struct ProcessWait {
    child: Arc<Process>,
    registered: Option<Arc<task::Thread>>,
}

impl Drop for ProcessWait {
    fn drop(&mut self) {
        if let Some(thread) = self.registered.take() {
            task::unregister_joiner(self.child.task(), &thread);
        }
    }
}

impl Future for ProcessWait {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<u64> {
        let ready = |child: &Process| {
            child.is_finished().then(|| child.exit_status().map_or(Error::WrongState.to_return(), |s| s.encode()))
        };
        if let Some(value) = ready(&self.child) {
            return Poll::Ready(value);
        }
        let me = task::scheduler::current_arc();
        task::register_joiner(self.child.task(), me.clone());
        self.registered = Some(me);
        match ready(&self.child) {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}
