//! A task-aware GDB remote stub on the second serial port (COM2).
//!
//! With the command-line word `gdb` the kernel serves the GDB remote
//! protocol (through the `gdbstub` crate) on COM2 and stops for a debugger
//! at the end of boot. A stop stops the whole machine: the CPU that stops
//! (at an `int3` in kernel code, see [`super::breakpoint`]) sends every
//! other CPU the debug IPI, whose handler records where it was interrupted
//! and waits until the debugger lets the machine go.
//!
//! Every thread in the thread table is a GDB thread (its table slot + 1;
//! GDB's ids are never 0), named in `info threads` with its name, kind,
//! state and CPU.
//! Registers come from where each thread is:
//! - running on a stopped CPU: the frame that CPU was stopped in;
//! - a kernel thread switched away: its callee-saved registers and return
//!   address on its stack, as the switch left them;
//! - a user thread not running: the user registers its last trap saved.
//!
//! Memory is read in the address space of the thread GDB has selected: the
//! address is translated through that thread's page tables and read through
//! the kernel's window on physical memory, so a user pointer of one process
//! reads that process's page, and an address a thread's space does not map
//! is an error. Writes (memory, registers) are refused: the kernel's code is
//! read-only, and a debugger that changes state under running lock-free
//! code has to know what it does; breakpoints are the `int3`s compiled in.
//!
//! Inspection only is the point: this stub never makes the kernel unsafe
//! by itself, and a CPU that does not answer the debug IPI (interrupts off
//! for more than the wait) is reported as running, its threads' registers
//! as unavailable.

use alloc::{format, string::String};
use core::{
    cell::UnsafeCell,
    num::NonZeroUsize,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use gdbstub::{
    common::{Signal, Tid},
    conn::Connection,
    stub::{GdbStub, MultiThreadStopReason, state_machine::GdbStubStateMachine},
    target::{
        Target, TargetError, TargetResult,
        ext::{
            base::{
                BaseOps,
                multithread::{
                    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
                    MultiThreadSchedulerLockingOps,
                },
            },
            thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps},
        },
    },
};
use gdbstub_arch::x86::{X86_64_SSE, reg::X86_64CoreRegs};
use uart_16550::SerialPort;

use crate::{
    arch::{
        apic,
        cpu::{MAX_CPUS, cpu_index},
        paging, smp,
        traps::{self, TrapFrame},
        tsc,
    },
    mm::frames,
    sync::SpinLock,
    task::{self, ThreadId, ThreadKind, scheduler, thread},
};

/// I/O port base of COM2.
const COM2: u16 = 0x2f8;
/// How long a stop waits for the other CPUs to answer the debug IPI.
const PARK_WAIT_NANOS: u64 = 200_000_000;

/// True once `init` enabled the stub.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// True while the machine is stopped: parked CPUs wait for it to clear.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// 1 + the index of the CPU serving the debugger, or 0.
static SERVING: AtomicUsize = AtomicUsize::new(0);
/// Stops so far.
static STOPS: AtomicUsize = AtomicUsize::new(0);

/// How many times the machine has stopped for the debugger.
pub fn stops() -> usize {
    STOPS.load(Ordering::Acquire)
}

/// Where one CPU was when the machine stopped.
struct Parked {
    /// Set (with `Release`) once `frame` holds this stop's frame; cleared
    /// when the CPU goes on.
    parked: AtomicBool,
    frame: UnsafeCell<TrapFrame>,
}

// SAFETY: `frame` is written by its own CPU before it sets `parked`
// (Release), and read by the serving CPU only after it saw `parked`
// (Acquire), while the owner spins without touching it.
unsafe impl Sync for Parked {}

static PARKED: [Parked; MAX_CPUS] =
    [const { Parked { parked: AtomicBool::new(false), frame: UnsafeCell::new(TrapFrame::zeroed()) } }; MAX_CPUS];

/// The debugger's session: kept while the machine runs (GDB waits for the
/// next stop), dropped when GDB disconnects.
static SESSION: SpinLock<Option<GdbStubStateMachine<'static, Kernel, Com2>>> = SpinLock::new(None);

/// COM2, polled.
struct Com2(SerialPort);

impl Com2 {
    /// The port, set up once at `init`: setting it up again would drop
    /// what a debugger already sent (its FIFO is reset).
    fn get() -> Self {
        // SAFETY: COM2 is this module's alone; `init` set it up.
        Self(unsafe { SerialPort::new(COM2) })
    }
}

impl Connection for Com2 {
    type Error = ();

    fn write(&mut self, byte: u8) -> Result<(), ()> {
        self.0.send_raw(byte);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// Turns the stub on (the `gdb` command-line word): COM2 set up, the debug
/// IPI and the kernel breakpoint handled. Call once, at boot.
/// The scheduler must be running: a kernel thread polls COM2 while the
/// machine runs.
pub fn init() {
    // SAFETY: COM2 is this module's alone.
    unsafe { SerialPort::new(COM2) }.init();
    traps::set_handler(traps::DEBUG_VECTOR, park_here);
    traps::set_breakpoint_hook(stop_at_breakpoint);
    ENABLED.store(true, Ordering::Release);
    if let Err(error) = task::Builder::new("gdb-poll").spawn(poll_while_running) {
        crate::println!("gdb: no COM2 poller ({error:?}): the debugger can stop the machine only at breakpoints");
    }
}

/// How often COM2 is looked at while the machine runs.
const POLL_NANOS: u64 = 10_000_000;

/// While the machine runs, hands what GDB sends to the waiting session:
/// a Ctrl-C stops the machine; so does a debugger that connects while it
/// runs (its first packet is dropped; GDB sends it again).
fn poll_while_running() {
    loop {
        task::sleep_for_nanos(POLL_NANOS);
        if take_input() {
            super::breakpoint();
        }
    }
}

/// Feeds bytes waiting on COM2 to the session; true when they ask for a
/// stop.
fn take_input() -> bool {
    let mut session = SESSION.lock();
    let mut port = Com2::get();
    while let Ok(byte) = port.0.try_receive() {
        match session.take() {
            Some(GdbStubStateMachine::Running(running)) => {
                match running.incoming_data(&mut Kernel { stopped: None }, byte) {
                    Ok(GdbStubStateMachine::CtrlCInterrupt(interrupt)) => {
                        *session = Some(GdbStubStateMachine::CtrlCInterrupt(interrupt));
                        return true;
                    }
                    Ok(machine) => *session = Some(machine),
                    Err(error) => crate::println!("gdb: session ended: {error:?}"),
                }
            }
            // Nobody attached (or the session ended): a packet or a Ctrl-C
            // is a debugger arriving.
            None if matches!(byte, b'$' | 0x03) => return true,
            other => *session = other,
        }
    }
    false
}

/// True when the stub is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The debug IPI: record where this CPU was and wait while the machine is
/// stopped.
fn park_here(frame: &mut TrapFrame) {
    apic::end_of_interrupt();
    let parked = &PARKED[cpu_index()];
    // SAFETY: this CPU's slot; the serving CPU reads it only after the
    // Release store below.
    unsafe { *parked.frame.get() = *frame };
    parked.parked.store(true, Ordering::Release);
    while STOPPED.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    parked.parked.store(false, Ordering::Release);
}

/// `#BP` in kernel mode: stop the machine and serve the debugger, then
/// carry on after the `int3`.
fn stop_at_breakpoint(frame: &mut TrapFrame) -> bool {
    if !enabled() {
        return false;
    }
    let me = cpu_index();
    // One CPU serves at a time; another that stops meanwhile waits its turn
    // (it cannot be parked: interrupts are off in the trap handler).
    while SERVING.compare_exchange(0, me + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        core::hint::spin_loop();
    }
    STOPPED.store(true, Ordering::SeqCst);
    let parked = &PARKED[me];
    // SAFETY: this CPU's slot, read by this CPU's serving code below.
    unsafe { *parked.frame.get() = *frame };
    parked.parked.store(true, Ordering::Release);
    if smp::cpu_count() > 1 {
        apic::send_ipi_all_others(traps::DEBUG_VECTOR);
        let deadline = tsc::now() + tsc::nanos_to_ticks(PARK_WAIT_NANOS);
        while tsc::now() < deadline
            && (0..smp::cpu_count()).any(|cpu| smp::is_online(cpu) && !PARKED[cpu].parked.load(Ordering::Acquire))
        {
            core::hint::spin_loop();
        }
    }
    let tid = scheduler::current_on(me).map_or(Tid::MIN, tid_of);
    serve(MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGTRAP });
    parked.parked.store(false, Ordering::Release);
    STOPS.fetch_add(1, Ordering::AcqRel);
    STOPPED.store(false, Ordering::SeqCst);
    SERVING.store(0, Ordering::Release);
    true
}

/// Talks to the debugger until it lets the machine go (continue) or
/// leaves (detach, disconnect, a broken connection).
fn serve(reason: MultiThreadStopReason<u64>) {
    let stopped = match reason {
        MultiThreadStopReason::SignalWithThread { tid, .. } => Some(tid),
        _ => None,
    };
    let mut target = Kernel { stopped };
    let mut session = SESSION.lock();
    let mut machine = match session.take().map(|machine| match machine {
        // GDB waits for this stop.
        GdbStubStateMachine::Running(running) => running.report_stop(&mut target, reason),
        other => Ok(other),
    }) {
        Some(Ok(machine)) => machine,
        resumed => {
            if let Some(Err(error)) = resumed {
                crate::println!("gdb: session ended: {error:?}");
            }
            crate::println!("gdb: the machine is stopped; waiting for a debugger on COM2");
            match new_session(&mut target) {
                Some(machine) => machine,
                None => return,
            }
        }
    };
    // Between packets only `$` (a packet), acknowledgements and Ctrl-C
    // mean anything: line noise there (bytes a debugger sent before the
    // port was set up) is dropped rather than ending the session.
    let mut framing = Framing::Between;
    loop {
        let next = match machine {
            GdbStubStateMachine::Idle(mut idle) => {
                let byte = idle.borrow_conn().0.receive();
                if !framing.accepts(byte) {
                    machine = GdbStubStateMachine::Idle(idle);
                    continue;
                }
                idle.incoming_data(&mut target, byte)
            }
            GdbStubStateMachine::Running(running) => {
                // Continue: the machine goes on, the session waits.
                *session = Some(GdbStubStateMachine::Running(running));
                return;
            }
            GdbStubStateMachine::CtrlCInterrupt(interrupt) => {
                // Already stopped: say so.
                let tid = scheduler::current_on(cpu_index()).map_or(Tid::MIN, tid_of);
                interrupt.interrupt_handled(
                    &mut target,
                    Some(MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }),
                )
            }
            GdbStubStateMachine::Disconnected(disconnected) => {
                crate::println!("gdb: debugger left ({:?}); the machine goes on", disconnected.get_reason());
                return;
            }
        };
        machine = match next {
            Ok(machine) => machine,
            Err(error) => {
                // A garbled packet (say, a debugger that connected while
                // the port was being set up): the machine stays stopped
                // and a fresh session waits for the next packet.
                crate::println!("gdb: session ended: {error:?}; starting again");
                framing = Framing::Between;
                match new_session(&mut target) {
                    Some(machine) => machine,
                    None => return,
                }
            }
        };
    }
}

/// Where the byte stream from the debugger is, packet-wise.
#[derive(Clone, Copy)]
enum Framing {
    Between,
    /// Inside `$...`, before `#`.
    Packet,
    /// After `#`: this many checksum digits to go.
    Checksum(u8),
}

impl Framing {
    /// Moves past `byte`; false when it is noise to drop.
    fn accepts(&mut self, byte: u8) -> bool {
        match (*self, byte) {
            (Framing::Between, b'$') => *self = Framing::Packet,
            (Framing::Between, b'+' | b'-' | 0x03) => {}
            (Framing::Between, _) => return false,
            (Framing::Packet, b'#') => *self = Framing::Checksum(2),
            (Framing::Packet, _) => {}
            (Framing::Checksum(left), _) => {
                *self = if left > 1 { Framing::Checksum(left - 1) } else { Framing::Between }
            }
        }
        true
    }
}

fn new_session(target: &mut Kernel) -> Option<GdbStubStateMachine<'static, Kernel, Com2>> {
    match GdbStub::new(Com2::get()).run_state_machine(target) {
        Ok(machine) => Some(machine),
        Err(error) => {
            crate::println!("gdb: cannot start a session: {error:?}");
            None
        }
    }
}

/// GDB's id of a thread: its slot in the thread table, plus one. (GDB
/// keeps thread ids in 32 bits; a `ThreadId` carries the slot's generation
/// above them. While the machine is stopped, a slot names one thread.)
fn tid_of(id: ThreadId) -> Tid {
    NonZeroUsize::new((id.0 & u64::from(u32::MAX)) as usize + 1).unwrap_or(Tid::MIN)
}

fn thread_of(tid: Tid) -> Option<alloc::sync::Arc<task::Thread>> {
    let mut found = None;
    thread::for_each(|thread| {
        if tid_of(thread.id()) == tid {
            found = thread::get(thread.id());
        }
    });
    found
}

/// The frame a stopped CPU recorded, if the thread runs on one.
fn running_frame(id: ThreadId) -> Option<Option<TrapFrame>> {
    let cpu = (0..smp::cpu_count()).find(|cpu| scheduler::current_on(*cpu) == Some(id))?;
    let parked = &PARKED[cpu];
    // SAFETY: read after the Acquire load saw the CPU parked: it wrote the
    // frame before, and does not touch it until the machine goes on.
    Some(parked.parked.load(Ordering::Acquire).then(|| unsafe { *parked.frame.get() }))
}

/// The machine as GDB sees it.
struct Kernel {
    /// The thread that stopped the machine: listed first, which is what
    /// the stub answers GDB's first question (`?`, why stopped) with.
    stopped: Option<Tid>,
}

impl Target for Kernel {
    type Arch = X86_64_SSE;
    type Error = ();

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    // Breakpoints are the `int3`s compiled into the kernel; GDB's own
    // would be memory writes, which are refused.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for Kernel {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let thread = thread_of(tid).ok_or(TargetError::NonFatal)?;
        *regs = X86_64CoreRegs::default();
        if let Some(frame) = running_frame(thread.id()) {
            let frame = frame.ok_or(TargetError::NonFatal)?;
            regs.regs = [
                frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.rsp, frame.r8,
                frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15,
            ];
            regs.rip = frame.rip;
            regs.eflags = frame.rflags as u32;
            regs.segments.cs = frame.cs as u32;
            regs.segments.ss = frame.ss as u32;
            return Ok(());
        }
        if thread.kind == ThreadKind::User {
            let context = task::user::saved_registers(&thread).ok_or(TargetError::NonFatal)?;
            regs.regs = [
                context.rax,
                context.rbx,
                context.rcx,
                context.rdx,
                context.rsi,
                context.rdi,
                context.rbp,
                context.rsp,
                context.r8,
                context.r9,
                context.r10,
                context.r11,
                context.r12,
                context.r13,
                context.r14,
                context.r15,
            ];
            regs.rip = context.rip;
            regs.eflags = context.rflags as u32;
            return Ok(());
        }
        // A kernel thread switched away: `switch_context` pushed rbp, rbx,
        // r12..r15 and left the return address above them.
        let rsp = thread.descriptor.saved_stack_pointer();
        let mut words = [0u64; 7];
        let mut bytes = [0u8; 56];
        if rsp == 0 || read_memory(paging::kernel_root(), rsp, &mut bytes) != bytes.len() {
            return Err(TargetError::NonFatal);
        }
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        let [r15, r14, r13, r12, rbx, rbp, rip] = words;
        regs.regs[1] = rbx;
        regs.regs[6] = rbp;
        regs.regs[7] = rsp + 56;
        regs.regs[12..16].copy_from_slice(&[r12, r13, r14, r15]);
        regs.rip = rip;
        Ok(())
    }

    fn write_registers(&mut self, _regs: &X86_64CoreRegs, _tid: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let thread = thread_of(tid).ok_or(TargetError::NonFatal)?;
        match read_memory(thread.descriptor.page_table_root, start, data) {
            0 => Err(TargetError::NonFatal),
            read => Ok(read),
        }
    }

    fn write_addrs(&mut self, _start: u64, _data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> Result<(), ()> {
        if let Some(stopped) = self.stopped {
            thread_is_active(stopped);
        }
        thread::for_each(|thread| {
            let tid = tid_of(thread.id());
            if Some(tid) != self.stopped {
                thread_is_active(tid);
            }
        });
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for Kernel {
    fn resume(&mut self) -> Result<(), ()> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), ()> {
        Ok(())
    }

    fn set_resume_action_continue(&mut self, _tid: Tid, signal: Option<Signal>) -> Result<(), ()> {
        // Signals mean nothing to kernel threads.
        if signal.is_some() { Err(()) } else { Ok(()) }
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for Kernel {
    // The machine goes on as a whole: every CPU and thread, whatever GDB
    // asked to lock (a plain `c` asks for it).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

impl ThreadExtraInfo for Kernel {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, ()> {
        let text: String = match thread_of(tid) {
            Some(thread) => {
                let kind = if thread.kind == ThreadKind::User { "user" } else { "kernel" };
                format!("{} ({kind}, {:?}, cpu{})", thread.name, thread.state(), thread.descriptor.cpu())
            }
            None => String::from("gone"),
        };
        let length = text.len().min(buf.len());
        buf[..length].copy_from_slice(&text.as_bytes()[..length]);
        Ok(length)
    }
}

/// Copies memory at `start` as the space rooted at `root` maps it into
/// `data`, page by page through the physical window, up to the first page
/// that is not mapped or not RAM; returns the bytes copied.
fn read_memory(root: u64, start: u64, data: &mut [u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let Some(address) = start.checked_add(done as u64) else { break };
        let Some((physical, _)) = paging::translate_in(root, address) else { break };
        let in_page = (paging::PAGE_SIZE - (address % paging::PAGE_SIZE)) as usize;
        let length = in_page.min(data.len() - done);
        if physical + length as u64 > frames::physical_end() {
            // Device memory: reading it may have effects.
            break;
        }
        let source = paging::phys_to_virt(physical) as *const u8;
        for (offset, byte) in data[done..done + length].iter_mut().enumerate() {
            // SAFETY: below the end of RAM (a hole under it, on a machine
            // with memory above 4 GiB, is not told apart), mapped by the
            // kernel's physical window; a byte-wise volatile copy of memory another
            // CPU may own is a racy but harmless look.
            *byte = unsafe { core::ptr::read_volatile(source.add(offset)) };
        }
        done += length;
    }
    done
}
