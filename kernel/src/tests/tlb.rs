//! TLB shoot-downs: memory unmapped from a process that runs on another CPU
//! stops being reachable there before its frames are reused.

use alloc::{format, sync::Arc};

use orrery_abi::{ExitStatus, FaultKind, USER_MAP_BASE};

use super::processes::{Footprint, create, end_and_join};
use crate::{
    arch::{paging, smp, tsc},
    check, check_eq, ktest,
    task::{self, Builder, CpuSet},
};

/// `reader`'s flag for reading its page for ever.
const READ_FOR_EVER: u64 = 1;

/// The value at `address` in `process`'s memory, if mapped.
fn peek(process: &crate::proc::Process, address: u64) -> Option<u64> {
    let (physical, _) = process.task().with_address_space(|space| space.translate(address)).flatten()?;
    // SAFETY: a frame of a user page, read through the physical window; a
    // u64-aligned read of it touches nothing else.
    Some(unsafe { (paging::phys_to_virt(physical) as *const u64).read_volatile() })
}

ktest!(unmapping_from_a_running_process_shoots_down_its_tlb, || {
    let cpus = smp::cpu_count();
    // The reader on the last CPU, the unmap from the first: with one CPU
    // both share it, and the test still checks the fault.
    let (reader_cpu, unmap_cpu) = (cpus - 1, 0);
    let before = Footprint::settled();
    let reader = create("reader", READ_FOR_EVER | USER_MAP_BASE)?;
    let outcome = (|| {
        let address = reader.map_memory(4096, true).map_err(|e| format!("map: {e}"))?;
        check_eq!(address, USER_MAP_BASE, "the first mapping's address");
        reader.start_on(CpuSet::only(reader_cpu)).map_err(|e| format!("start: {e}"))?;
        // Running, with the page in its TLB: it wrote its 1 through it.
        let deadline = tsc::now() + tsc::hz() * 10;
        while peek(&reader, address) != Some(1) {
            check!(tsc::now() < deadline, "the reader never wrote its page");
            task::sleep_for_nanos(100_000);
        }
        let unmapping = Arc::clone(&reader);
        let unmapped = Builder::new("unmapper")
            .cpus(CpuSet::only(unmap_cpu))
            .spawn(move || {
                let _ = unmapping.unmap_memory(address, 4096);
            })
            .map_err(|e| format!("{e:?}"))?;
        unmapped.join();
        check!(peek(&reader, address).is_none(), "the page is still mapped");
        // Its next read must fault: a CPU that kept the translation would
        // read on, from a frame already freed.
        let deadline = tsc::now() + tsc::hz() * 2;
        while !reader.is_finished() {
            check!(
                tsc::now() < deadline,
                "the reader on cpu{reader_cpu} still reads the page 2 s after it was unmapped from cpu{unmap_cpu}"
            );
            task::sleep_for_nanos(200_000);
        }
        check_eq!(
            reader.exit_status(),
            Some(ExitStatus::Faulted { kind: FaultKind::PageFault, address }),
            "how the reader ended"
        );
        Ok(())
    })();
    end_and_join(&reader, ExitStatus::Killed(1));
    outcome?;
    drop(reader);
    before.check_nothing_left("a process whose page was unmapped while it ran").map(drop)
});
