//! Calls every system call that takes a pointer with bad pointers — null, a
//! kernel address, an unmapped address, a misaligned one where alignment
//! matters, a range that wraps — and checks each returns the right error.
//! Exits 0 when all do; otherwise the number of checks that failed.
//!
//! With a non-zero argument it also checks `process_share`, which needs a
//! child: handle 0 must then be a CREATED child (its parent set it up), and
//! the argument is the lowest page of this program's stack, which it has not
//! touched. It shares that page and the next (pages the kernel maps on the
//! spot, as a touch would), starts the child, and waits for it: whoever set
//! this up looks at both processes' mappings meanwhile, then kills the child
//! with reason [`CHILD_KILLED`].
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{
    Error, ExitStatus, StartInfo,
    abi::{SHARE_WRITE, Syscall, USER_SHARED_BASE, USER_STACK_TOP},
    println,
    sys::{self, Handle, call},
};

orrery_runtime::entry!(main);

const KERNEL: u64 = 0xffff_ffff_8000_0000;
const UNMAPPED: u64 = 0x0000_0033_0000_0000;
const WRAPS: u64 = u64::MAX - 8;
/// The kill reason the child is expected to end with, in the sharing mode.
const CHILD_KILLED: u32 = 7;

/// Counts checks and the ones that failed, saying which.
struct Checks {
    made: u32,
    failed: u32,
}

impl Checks {
    /// Checks a condition.
    fn check(&mut self, what: &str, holds: bool) {
        self.made += 1;
        if !holds {
            println!("bad-pointers: {what}: failed");
            self.failed += 1;
        }
    }

    /// Checks that a call failed with `wanted`.
    fn expect(&mut self, what: &str, got: Result<u64, Error>, wanted: Error) {
        self.made += 1;
        if got != Err(wanted) {
            println!("bad-pointers: {what}: got {got:?}, wanted {wanted:?}");
            self.failed += 1;
        }
    }
}

fn main(start: &StartInfo) -> u32 {
    let mut checks = Checks { made: 0, failed: 0 };
    let buffer = [0u8; 16];
    let mapped = sys::map_memory(8192, true).expect("map_memory");
    // log(text, length)
    checks.expect("log null", call(Syscall::Log, [0, 4, 0, 0, 0, 0]), Error::BadAddress);
    checks.expect("log kernel", call(Syscall::Log, [KERNEL, 4, 0, 0, 0, 0]), Error::BadAddress);
    checks.expect("log unmapped", call(Syscall::Log, [UNMAPPED, 4, 0, 0, 0, 0]), Error::BadAddress);
    checks.expect("log wraps", call(Syscall::Log, [WRAPS, 16, 0, 0, 0, 0]), Error::BadAddress);
    checks.expect("log too long", call(Syscall::Log, [buffer.as_ptr() as u64, 1 << 20, 0, 0, 0, 0]), Error::BadLength);
    checks.expect(
        "log past the end of a mapping",
        call(Syscall::Log, [mapped + 8192 - 8, 64, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    checks.expect(
        "log into user half end",
        call(Syscall::Log, [0x0000_7fff_ffff_fff0, 32, 0, 0, 0, 0]),
        Error::BadAddress,
    );
    // image_name(index, buffer, length): this is not the supervisor.
    checks.expect("image_name", call(Syscall::ImageName, [0, 0, 64, 0, 0, 0]), Error::NotPermitted);
    // process_create(image, name, length, argument)
    checks.expect("process_create", call(Syscall::ProcessCreate, [0, KERNEL, 4, 0, 0, 0]), Error::NotPermitted);
    // process_set_name(handle, name, length): no such handle first.
    checks.expect("process_set_name", call(Syscall::ProcessSetName, [9, KERNEL, 4, 0, 0, 0]), Error::BadHandle);
    // process_share(handle, address, length, _, flags)
    checks.expect("process_share", call(Syscall::ProcessShare, [9, mapped + 1, 4096, 0, 0, 0]), Error::BadHandle);
    // unmap_memory(address, length)
    checks.expect("unmap misaligned", call(Syscall::UnmapMemory, [mapped + 1, 4096, 0, 0, 0, 0]), Error::Misaligned);
    checks.expect("unmap kernel", call(Syscall::UnmapMemory, [KERNEL, 4096, 0, 0, 0, 0]), Error::NotMapped);
    checks.expect("unmap unmapped", call(Syscall::UnmapMemory, [UNMAPPED, 4096, 0, 0, 0, 0]), Error::NotMapped);
    // map_memory(length, flags)
    checks.expect("map zero", call(Syscall::MapMemory, [0, 1, 0, 0, 0, 0]), Error::BadLength);
    checks.expect("map huge", call(Syscall::MapMemory, [1 << 40, 1, 0, 0, 0, 0]), Error::BadLength);
    checks.expect("map bad flags", call(Syscall::MapMemory, [4096, 0x80, 0, 0, 0, 0]), Error::BadFlags);
    // Unknown call numbers and handles.
    checks.expect("no such call", call_raw(999), Error::NoSuchCall);
    checks.expect("bad handle", call(Syscall::MailboxRing, [77, 0, 0, 0, 0, 0]), Error::BadHandle);
    checks.expect("wait bad side", call(Syscall::ProcessWait, [u64::MAX, 0, 0, 0, 0, 0]), Error::BadHandle);
    // Good memory the process has not touched yet: a page of its stack far
    // below where it has run (the stack grows on first touch). The kernel's
    // copy maps it just as a touch from user mode would. (Zeroed memory:
    // one NUL byte is logged.)
    let untouched = ((&buffer as *const _ as u64) - (32 << 10)) & !4095;
    checks
        .check("a system call reads an untouched stack page", call(Syscall::Log, [untouched, 1, 0, 0, 0, 0]) == Ok(1));
    // A good call still works afterwards: an empty log writes nothing.
    checks.check("an empty log", call(Syscall::Log, [buffer.as_ptr() as u64, 0, 0, 0, 0, 0]) == Ok(0));
    if start.argument != 0 {
        share(&mut checks, start.argument, mapped);
    }
    println!("bad-pointers: {} checks, {} failed", checks.made, checks.failed);
    checks.failed
}

/// `process_share` into the CREATED child at handle 0: the lowest two pages
/// of the stack (from `stack_bottom`, untouched) are shared; bad ranges are
/// refused with the right error, and nothing is shared after the start.
fn share(checks: &mut Checks, stack_bottom: u64, mapped: u64) {
    let child = Handle(0);
    let share =
        |address: u64, length: u64, flags: u64| call(Syscall::ProcessShare, [child.0, address, length, 0, flags, 0]);
    // First, while nothing has touched them.
    checks.check("share two untouched stack pages", share(stack_bottom, 8192, SHARE_WRITE) == Ok(USER_SHARED_BASE));
    checks.expect("share null", share(0, 4096, 0), Error::BadAddress);
    checks.expect("share kernel", share(KERNEL, 4096, 0), Error::BadAddress);
    checks.expect("share unmapped", share(UNMAPPED, 4096, 0), Error::BadAddress);
    checks.expect("share misaligned", share(mapped + 8, 4096, 0), Error::Misaligned);
    checks.expect("share wraps", share(u64::MAX - 4095, 8192, 0), Error::BadAddress);
    checks.expect("share nothing", share(mapped, 0, 0), Error::BadLength);
    checks.expect("share bad flags", share(mapped, 4096, 0x80), Error::BadFlags);
    checks.expect(
        "share with the reserved argument set",
        call(Syscall::ProcessShare, [child.0, mapped, 4096, 0x1000, 0, 0]),
        Error::BadFlags,
    );
    checks.expect("share the stack's guard page", share(stack_bottom - 4096, 8192, 0), Error::BadAddress);
    checks.expect("share past the end of a mapping", share(mapped + 4096, 8192, 0), Error::BadAddress);
    checks.expect("share past the stack's top", share(USER_STACK_TOP - 4096, 8192, 0), Error::BadAddress);
    let text = (main as fn(&StartInfo) -> u32 as usize as u64) & !4095;
    checks.expect("share text writable", share(text, 4096, SHARE_WRITE), Error::BadFlags);
    let started = sys::process_start(child);
    checks.check("start the child", started.is_ok());
    if let Err(error) = started {
        println!("bad-pointers: start the child: {error:?}");
    }
    checks.expect("share after the start", share(mapped, 4096, 0), Error::WrongState);
    checks.check("the child was killed", sys::process_wait(child) == Ok(ExitStatus::Killed(CHILD_KILLED)));
}

fn call_raw(number: u64) -> Result<u64, Error> {
    orrery_runtime::abi::decode_result(sys::syscall(number, [0; 6]))
}
