//! System-call wrappers. Each returns the decoded result; the raw
//! `syscallN` functions are for the tests that must pass bad arguments.

use core::arch::asm;

use orrery_abi::{Error, ExitStatus, Syscall, decode_result};

/// Makes system call `number` with six arguments; returns raw `rax`.
///
/// The vector registers are caller-saved across the call (`clobber_abi`),
/// as the ABI says.
#[inline(always)]
pub fn syscall(number: u64, arguments: [u64; 6]) -> u64 {
    let result: u64;
    // SAFETY: `syscall` enters the kernel, which checks every argument; it
    // clobbers rcx and r11 and, by the ABI, every caller-saved register.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => result,
            in("rdi") arguments[0],
            in("rsi") arguments[1],
            in("rdx") arguments[2],
            in("r10") arguments[3],
            in("r8") arguments[4],
            in("r9") arguments[5],
            clobber_abi("C"),
            options(nostack),
        );
    }
    result
}

/// A system call decoded into a result.
#[inline(always)]
pub fn call(call: Syscall, arguments: [u64; 6]) -> Result<u64, Error> {
    decode_result(syscall(call as u64, arguments))
}

/// Ends the process with `status`.
pub fn exit(status: u32) -> ! {
    syscall(Syscall::Exit as u64, [u64::from(status), 0, 0, 0, 0, 0]);
    // The kernel does not return from `exit`; if it ever did, stop hard.
    loop {
        // SAFETY: `ud2` raises #UD, which ends the process.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
}

/// The null call (for measurements).
pub fn null() -> Result<u64, Error> {
    call(Syscall::Null, [0; 6])
}

/// Gives up the CPU.
pub fn yield_now() {
    let _ = call(Syscall::Yield, [0; 6]);
}

/// Reads the TSC.
#[inline(always)]
pub fn tsc() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: `rdtsc` is allowed in user mode and only reads the counter.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// The TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    call(Syscall::TscHz, [0; 6]).unwrap_or(1_000_000_000)
}

/// Sleeps until the TSC reaches `deadline`.
pub fn sleep_until(deadline: u64) {
    let _ = call(Syscall::SleepUntil, [deadline, 0, 0, 0, 0, 0]);
}

/// Sleeps for `micros` microseconds.
pub fn sleep_micros(micros: u64) {
    sleep_until(tsc() + tsc_hz() / 1_000_000 * micros);
}

/// Maps `length` bytes of zeroed memory; returns the address.
pub fn map_memory(length: u64, writable: bool) -> Result<u64, Error> {
    call(Syscall::MapMemory, [length, if writable { orrery_abi::MAP_WRITE } else { 0 }, 0, 0, 0, 0])
}

/// A handle to a process or a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(pub u64);

/// Number of program images (supervisor).
pub fn image_count() -> Result<u64, Error> {
    call(Syscall::ImageCount, [0; 6])
}

/// The name of image `index` written into `buffer`; returns its length.
pub fn image_name(index: u64, buffer: &mut [u8]) -> Result<usize, Error> {
    call(Syscall::ImageName, [index, buffer.as_mut_ptr() as u64, buffer.len() as u64, 0, 0, 0]).map(|n| n as usize)
}

/// Creates a process from image `image`, named `name`, with `argument` for
/// its `StartInfo`; it stays CREATED until [`process_start`].
pub fn process_create(image: u64, name: &str, argument: u64) -> Result<Handle, Error> {
    call(Syscall::ProcessCreate, [image, name.as_ptr() as u64, name.len() as u64, argument, 0, 0]).map(Handle)
}

/// Makes a created process runnable: `WrongState` if it is not CREATED or
/// was killed meanwhile; after `OutOfMemory` it has been ended.
pub fn process_start(process: Handle) -> Result<(), Error> {
    call(Syscall::ProcessStart, [process.0, 0, 0, 0, 0, 0]).map(|_| ())
}

/// Waits for a process to end.
pub fn process_wait(process: Handle) -> Result<ExitStatus, Error> {
    let word = call(Syscall::ProcessWait, [process.0, 0, 0, 0, 0, 0])?;
    ExitStatus::decode(word).ok_or(Error::BadFlags)
}

/// Kills a process this one controls.
pub fn process_kill(process: Handle, reason: u32) -> Result<(), Error> {
    call(Syscall::ProcessKill, [process.0, u64::from(reason), 0, 0, 0, 0]).map(|_| ())
}

/// Limits the system calls a created process may make.
pub fn process_restrict(process: Handle, allowed: u64) -> Result<(), Error> {
    call(Syscall::ProcessRestrict, [process.0, allowed, 0, 0, 0, 0]).map(|_| ())
}

/// Renames a created process.
pub fn process_set_name(process: Handle, name: &str) -> Result<(), Error> {
    call(Syscall::ProcessSetName, [process.0, name.as_ptr() as u64, name.len() as u64, 0, 0, 0]).map(|_| ())
}

/// Shares `length` bytes at `address` (page aligned) with a created child;
/// returns where they appear in the child.
pub fn process_share(process: Handle, address: u64, length: u64, writable: bool) -> Result<u64, Error> {
    call(Syscall::ProcessShare, [process.0, address, length, 0, if writable { orrery_abi::SHARE_WRITE } else { 0 }, 0])
}

/// This process's id.
pub fn process_id() -> u64 {
    call(Syscall::ProcessId, [0; 6]).unwrap_or(0)
}

/// The CPU this runs on (a hint).
pub fn cpu_id() -> u64 {
    call(Syscall::CpuId, [0; 6]).unwrap_or(0)
}

/// Closes a handle.
pub fn handle_close(handle: Handle) -> Result<(), Error> {
    call(Syscall::HandleClose, [handle.0, 0, 0, 0, 0, 0]).map(|_| ())
}

/// Creates a mailbox of `slots` slots, served (and grantable) by this
/// process; returns its handle.
pub fn mailbox_create(slots: u64) -> Result<Handle, Error> {
    call(Syscall::MailboxCreate, [slots, 0, 0, 0, 0, 0]).map(Handle)
}

/// Grants a created child a handle to a mailbox, as server or client.
pub fn mailbox_grant(mailbox: Handle, child: Handle, server: bool) -> Result<Handle, Error> {
    let role = if server { orrery_abi::RING_SERVER } else { orrery_abi::RING_CLIENT };
    call(Syscall::MailboxGrant, [mailbox.0, child.0, role, 0, 0, 0]).map(Handle)
}

/// Where a mailbox is mapped in this process.
pub fn mailbox_address(mailbox: Handle) -> Result<u64, Error> {
    call(Syscall::MailboxAddress, [mailbox.0, 0, 0, 0, 0, 0])
}

/// How many slots a mailbox has.
pub fn mailbox_slots(mailbox: Handle) -> Result<u64, Error> {
    call(Syscall::MailboxSlots, [mailbox.0, 0, 0, 0, 0, 0])
}

/// Rings a doorbell (`side` is `RING_SERVER` or `RING_CLIENT`).
pub fn mailbox_ring(mailbox: Handle, side: u64) -> Result<u64, Error> {
    call(Syscall::MailboxRing, [mailbox.0, side, 0, 0, 0, 0])
}

/// Waits until the doorbell count of `side` differs from `seen`.
pub fn mailbox_wait(mailbox: Handle, side: u64, seen: u64, deadline_tsc: u64) -> Result<u64, Error> {
    call(Syscall::MailboxWait, [mailbox.0, side, seen, deadline_tsc, 0, 0])
}

/// Rings the server and waits for the client doorbell to move past `seen`.
pub fn mailbox_call(mailbox: Handle, seen: u64) -> Result<u64, Error> {
    call(Syscall::MailboxCall, [mailbox.0, seen, 0, 0, 0, 0])
}

/// Rings the clients and waits for the server doorbell to move past `seen`.
pub fn mailbox_reply_wait(mailbox: Handle, seen: u64) -> Result<u64, Error> {
    call(Syscall::MailboxReplyWait, [mailbox.0, seen, 0, 0, 0, 0])
}
