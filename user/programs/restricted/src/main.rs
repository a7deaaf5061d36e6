//! Probes which system calls its parent left it: makes a few calls (some on
//! the kernel's fast path, some not) and exits with a bit set for each that
//! failed with `Restricted` (bit 0 null, 1 tsc_hz, 2 process_id, 3 cpu_id,
//! 4 mailbox_slots), plus bit 8 if any failed otherwise than expected.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use orrery_runtime::{
    StartInfo,
    abi::{Error, Syscall},
    sys,
};

orrery_runtime::entry!(main);

fn main(_start: &StartInfo) -> u32 {
    let probes = [
        (Syscall::Null, Ok(())),
        (Syscall::TscHz, Ok(())),
        (Syscall::ProcessId, Ok(())),
        (Syscall::CpuId, Ok(())),
        // Handle 0 is never valid: allowed, it fails with a bad handle.
        (Syscall::MailboxSlots, Err(Error::BadHandle)),
    ];
    let mut status = 0;
    for (bit, (call, allowed_result)) in probes.into_iter().enumerate() {
        match (sys::call(call, [0; 6]).map(|_| ()), allowed_result) {
            (Err(Error::Restricted), _) => status |= 1 << bit,
            (result, expected) if result == expected => {}
            _ => status |= 1 << 8,
        }
    }
    status
}
