//! Calls every system call that takes a pointer with bad pointers — null, a
//! kernel address, an unmapped address, a misaligned one where alignment
//! matters, a range that wraps — and checks each returns the right error.
//! Exits 0 when all do; otherwise the number of the first check that failed.
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

fn main(_start: &StartInfo) -> u32 {
    let mut failures = 0u32;
    let mut checks = 0u32;
    let mut expect = |what: &str, got: Result<u64, Error>, wanted: Error| {
        checks += 1;
        if got != Err(wanted) {
            println!("bad-pointers: {what}: got {got:?}, wanted {wanted:?}");
            failures += 1;
        }
    };
    let buffer = [0u8; 16];
    let mapped = sys::map_memory(8192, true).expect("map_memory");
    // log(text, length)
    expect("log null", call(Syscall::Log, [0, 4, 0, 0, 0, 0]), Error::BadAddress);
    expect("log kernel", call(Syscall::Log, [KERNEL, 4, 0, 0, 0, 0]), Error::BadAddress);
    expect("log unmapped", call(Syscall::Log, [UNMAPPED, 4, 0, 0, 0, 0]), Error::BadAddress);
    expect("log wraps", call(Syscall::Log, [WRAPS, 16, 0, 0, 0, 0]), Error::BadAddress);
    expect("log too long", call(Syscall::Log, [buffer.as_ptr() as u64, 1 << 20, 0, 0, 0, 0]), Error::BadLength);
    expect("log past the end of a mapping", call(Syscall::Log, [mapped + 8192 - 8, 64, 0, 0, 0, 0]), Error::BadAddress);
    expect("log into user half end", call(Syscall::Log, [0x0000_7fff_ffff_fff0, 32, 0, 0, 0, 0]), Error::BadAddress);
    // image_name(index, buffer, length): this is not the supervisor.
    expect("image_name", call(Syscall::ImageName, [0, 0, 64, 0, 0, 0]), Error::NotPermitted);
    // process_create(image, name, length, argument)
    expect("process_create", call(Syscall::ProcessCreate, [0, KERNEL, 4, 0, 0, 0]), Error::NotPermitted);
    // process_set_name(handle, name, length): no such handle first.
    expect("process_set_name", call(Syscall::ProcessSetName, [9, KERNEL, 4, 0, 0, 0]), Error::BadHandle);
    // process_share(handle, address, length, _, flags)
    expect("process_share", call(Syscall::ProcessShare, [9, mapped + 1, 4096, 0, 0, 0]), Error::BadHandle);
    // unmap_memory(address, length)
    expect("unmap misaligned", call(Syscall::UnmapMemory, [mapped + 1, 4096, 0, 0, 0, 0]), Error::Misaligned);
    expect("unmap kernel", call(Syscall::UnmapMemory, [KERNEL, 4096, 0, 0, 0, 0]), Error::NotMapped);
    expect("unmap unmapped", call(Syscall::UnmapMemory, [UNMAPPED, 4096, 0, 0, 0, 0]), Error::NotMapped);
    // map_memory(length, flags)
    expect("map zero", call(Syscall::MapMemory, [0, 1, 0, 0, 0, 0]), Error::BadLength);
    expect("map huge", call(Syscall::MapMemory, [1 << 40, 1, 0, 0, 0, 0]), Error::BadLength);
    expect("map bad flags", call(Syscall::MapMemory, [4096, 0x80, 0, 0, 0, 0]), Error::BadFlags);
    // Unknown call numbers and handles.
    expect("no such call", call_raw(999), Error::NoSuchCall);
    expect("bad handle", call(Syscall::MailboxRing, [77, 0, 0, 0, 0, 0]), Error::BadHandle);
    expect("wait bad side", call(Syscall::ProcessWait, [u64::MAX, 0, 0, 0, 0, 0]), Error::BadHandle);
    // Good memory the process has not touched yet: a page of its stack far
    // below where it has run (the stack grows on first touch). The kernel's
    // copy maps it just as a touch from user mode would. (Zeroed memory:
    // one NUL byte is logged.)
    checks += 1;
    let untouched = ((&buffer as *const _ as u64) - (32 << 10)) & !4095;
    if call(Syscall::Log, [untouched, 1, 0, 0, 0, 0]) != Ok(1) {
        println!("bad-pointers: a system call could not read an untouched stack page");
        failures += 1;
    }
    // A good call still works afterwards: an empty log writes nothing.
    checks += 1;
    if call(Syscall::Log, [buffer.as_ptr() as u64, 0, 0, 0, 0, 0]) != Ok(0) {
        println!("bad-pointers: an empty log failed");
        failures += 1;
    }
    println!("bad-pointers: {checks} checks, {failures} failed");
    failures
}

fn call_raw(number: u64) -> Result<u64, Error> {
    orrery_runtime::abi::decode_result(sys::syscall(number, [0; 6]))
}
