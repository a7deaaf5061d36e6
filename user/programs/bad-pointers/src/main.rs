//! Calls every system call that takes a pointer with bad pointers — null, a
//! kernel address, an unmapped address, a misaligned one where alignment
//! matters, a range that wraps — and checks each returns the right error.
//! Exits 0 when all do; otherwise the number of checks that failed.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{
    Error, StartInfo,
    abi::Syscall,
    println,
    sys::{self, call},
};

orrery_runtime::entry!(main);

const KERNEL: u64 = 0xffff_ffff_8000_0000;
const UNMAPPED: u64 = 0x0000_0033_0000_0000;
const WRAPS: u64 = u64::MAX - 8;

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

fn main(_start: &StartInfo) -> u32 {
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
    println!("bad-pointers: {} checks, {} failed", checks.made, checks.failed);
    checks.failed
}

fn call_raw(number: u64) -> Result<u64, Error> {
    orrery_runtime::abi::decode_result(sys::syscall(number, [0; 6]))
}
