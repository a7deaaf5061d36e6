//! Tests of the foundation: frames, heap, address spaces, guard pages, CPUs,
//! timers and IPIs.

use alloc::{boxed::Box, collections::BTreeSet, format, vec, vec::Vec};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use orrery_frames::Frame;

use crate::{
    arch::{
        cpu::{self, MAX_CPUS},
        paging::{self, Access, AddressSpace},
        smp, traps, tsc,
    },
    check, check_eq, ktest,
    mm::{frames, heap, stacks::KernelStack},
    time,
};

ktest!(frames_allocate_and_free, || {
    // Frames free or held as capacity: the set below may make the heap
    // grow, which takes frames but does not leak them.
    let available = || frames::free_count() + crate::mm::capacity_frames();
    let before = available();
    let mut taken = BTreeSet::new();
    for _ in 0..2000 {
        let frame = frames::allocate().ok_or("out of frames")?;
        check!(taken.insert(frame), "frame {:#x} handed out twice", frame.address());
        check!(!frames::is_free(frame));
    }
    check_eq!(available(), before - 2000);
    let run = frames::allocate_contiguous(16, 16).ok_or("no contiguous run")?;
    check_eq!(run.0 % 16, 0);
    for offset in 0..16 {
        check!(!taken.contains(&Frame(run.0 + offset)), "contiguous run overlaps single frames");
        frames::deallocate(Frame(run.0 + offset));
    }
    for frame in &taken {
        frames::deallocate(*frame);
        check!(frames::is_free(*frame));
    }
    check_eq!(available(), before);
    Ok(())
});

ktest!(heap_allocates_and_frees, || {
    let before = heap::allocated_bytes();
    {
        let numbers: Vec<u64> = (0..10_000).collect();
        check_eq!(numbers.iter().sum::<u64>(), 49_995_000);
        let boxes: Vec<Box<[u8; 100]>> = (0..500).map(|i| Box::new([i as u8; 100])).collect();
        check!(boxes.iter().enumerate().all(|(i, b)| b[99] == i as u8));
        // Larger than the heap's growth step: forces growth by a big run.
        let big = vec![7u8; 1 << 20];
        check_eq!(big[(1 << 20) - 1], 7);
        check!(heap::allocated_bytes() >= before + (1 << 20));
    }
    // Everything this test allocated (over 1.1 MiB) is back. The count is
    // the whole heap's, and other CPUs may be finishing earlier tests' work
    // meanwhile (the reaper, a thread's last switch), so allow their few
    // hundred bytes either way.
    let after = heap::allocated_bytes();
    check!(after.abs_diff(before) < 4096, "heap bytes went from {before} to {after}");
    Ok(())
});

ktest!(address_spaces_are_isolated, || {
    const ADDRESS: u64 = 0x4000_0000;
    let before = frames::free_count();
    {
        let mut first = AddressSpace::new().map_err(|e| format!("{e:?}"))?;
        let mut second = AddressSpace::new().map_err(|e| format!("{e:?}"))?;
        let frame_a = frames::allocate_zeroed().ok_or("out of frames")?;
        let frame_b = frames::allocate_zeroed().ok_or("out of frames")?;
        first.map(ADDRESS, frame_a, Access::KERNEL_DATA, true).map_err(|e| format!("{e:?}"))?;
        second.map(ADDRESS, frame_b, Access::KERNEL_DATA, true).map_err(|e| format!("{e:?}"))?;
        check!(matches!(
            first.map(ADDRESS, frame_b, Access::KERNEL_DATA, false),
            Err(paging::MapError::AlreadyMapped { .. })
        ));
        check!(matches!(
            first.map(0xffff_8000_0000_0000, frame_b, Access::KERNEL_DATA, false),
            Err(paging::MapError::BadAddress(_))
        ));
        check_eq!(first.translate(ADDRESS).map(|(p, _)| p), Some(frame_a.address()));
        check_eq!(second.translate(ADDRESS).map(|(p, _)| p), Some(frame_b.address()));
        let (a, b) = crate::arch::interrupts::without(|| {
            // SAFETY: both spaces share the kernel half, which maps this code
            // and stack; the kernel space is restored before they drop.
            unsafe {
                first.activate();
                core::ptr::write_volatile(ADDRESS as *mut u64, 0xaaaa);
                second.activate();
                let seen_in_second = core::ptr::read_volatile(ADDRESS as *const u64);
                core::ptr::write_volatile(ADDRESS as *mut u64, 0xbbbb);
                first.activate();
                let seen_in_first = core::ptr::read_volatile(ADDRESS as *const u64);
                crate::arch::pcid::switch_to(paging::kernel_root(), 0, None);
                (seen_in_first, seen_in_second)
            }
        });
        check_eq!(a, 0xaaaa, "first space sees its own write");
        check_eq!(b, 0, "second space must not see the first's write");
        // The kernel space has no mapping there at all.
        check!(traps::probe_read(ADDRESS).is_err());
        check_eq!(second.unmap(ADDRESS), Some(frame_b));
        check!(frames::is_free(frame_b), "an owned frame is freed on unmap");
        check_eq!(second.translate(ADDRESS), None);
    }
    check_eq!(frames::free_count(), before, "tables and owned frames all returned");
    Ok(())
});

ktest!(guard_page_hit_is_reported, || {
    let stack = KernelStack::new().map_err(|e| format!("{e:?}"))?;
    let inside = stack.bottom() + 64;
    // SAFETY: the byte is inside a stack nobody runs on.
    unsafe { traps::probe_write(inside, 1) }.map_err(|fault| format!("stack not mapped: {fault:?}"))?;
    let below = stack.bottom() - 8;
    // SAFETY: the write is expected to fault; if it did not, it would land in
    // an unmapped guard page, which cannot happen.
    let fault = unsafe { traps::probe_write(below, 1) }.err().ok_or("guard page was writable")?;
    check_eq!(fault.exception, traps::Exception::PageFault);
    check_eq!(fault.address, below);
    check!(fault.guard_page, "fault at {below:#x} not classified as a guard-page hit");
    let access = traps::PageFaultAccess::from_error_code(fault.error_code);
    check!(access.write && !access.present && !access.user, "unexpected access {access}");
    // A fault elsewhere is not a guard-page hit.
    let fault = traps::probe_read(0x1000).err().ok_or("page 1 readable")?;
    check!(!fault.guard_page);
    Ok(())
});

ktest!(kernel_image_is_protected, || {
    let layout = paging::image_layout();
    let root = paging::kernel_root();
    let bits = |address: u64| paging::translate_in(root, address).map(|(_, bits)| bits).unwrap_or(0);
    let nx = cpu::features().nx;
    check!(bits(layout.text.0) & paging::flags::WRITABLE == 0, "text is writable");
    check!(bits(layout.text.0) & paging::flags::NO_EXECUTE == 0, "text is not executable");
    check!(bits(layout.rodata.0) & paging::flags::WRITABLE == 0, "rodata is writable");
    check!(!nx || bits(layout.rodata.0) & paging::flags::NO_EXECUTE != 0, "rodata is executable");
    check!(!nx || bits(layout.data.0) & paging::flags::NO_EXECUTE != 0, "data is executable");
    // SAFETY: the write faults (text is read-only), so memory is unchanged.
    let fault = unsafe { traps::probe_write(layout.text.0, 0x90) }.err().ok_or("wrote into kernel text")?;
    check!(traps::PageFaultAccess::from_error_code(fault.error_code).present);
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4) };
    let features = cpu::features();
    check_eq!(cr4 & (1 << 20) != 0, features.smep, "CR4.SMEP");
    check_eq!(cr4 & (1 << 21) != 0, features.smap, "CR4.SMAP");
    check_eq!(cr4 & (1 << 17) != 0, features.pcid, "CR4.PCIDE");
    Ok(())
});

ktest!(cpus_online_with_topology, || {
    let count = smp::cpu_count();
    check!(count >= 1);
    let mut places = BTreeSet::new();
    let mut apic_ids = BTreeSet::new();
    let shifts = smp::topology_shifts();
    for index in 0..count {
        check!(smp::is_online(index), "cpu{index} is not online");
        let place = smp::location(index);
        let apic_id = smp::apic_id(index);
        check!(apic_ids.insert(apic_id), "APIC id {apic_id} twice");
        check!(places.insert(place), "two CPUs at {place}");
        check_eq!(shifts.locate(apic_id), place);
        check_eq!(cpu::apic_id_of(index), apic_id, "cpu{index} recorded another APIC id");
        crate::println!(
            "ktest-info: cpu {index} apic {apic_id} package {} core {} thread {}",
            place.package,
            place.core,
            place.thread
        );
    }
    check_eq!(cpu::online_count(), count);
    Ok(())
});

ktest!(timer_interrupts_on_every_cpu, || {
    let count = smp::cpu_count();
    let before: Vec<u64> = (0..count).map(time::interrupt_count).collect();
    let period = tsc::hz() / 1000;
    smp::call_on(0..count, time::set_periodic, period);
    // At 1 kHz every CPU takes ten ticks in 10 ms of its own time; the wait
    // allows seconds, because under TCG a host with fewer cores than the
    // guest may give a virtual CPU no time for a while.
    let start = tsc::now();
    let all_ticked = || before.iter().enumerate().all(|(cpu, before)| time::interrupt_count(cpu) - before >= 10);
    while !all_ticked() && tsc::now() - start < tsc::hz() * 20 {
        crate::arch::interrupts::enable_and_halt();
    }
    smp::call_on(0..count, |_| time::set_periodic(0), 0);
    for (cpu, before) in before.iter().enumerate() {
        let taken = time::interrupt_count(cpu) - before;
        check!(taken >= 10, "cpu{cpu} took only {taken} timer interrupts at 1 kHz");
    }
    Ok(())
});

ktest!(ipi_reaches_every_cpu_and_is_answered, || {
    static SEEN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
    static CALLS: AtomicU64 = AtomicU64::new(0);
    fn answer(slot: u64) {
        SEEN[slot as usize].store(crate::arch::cpu_index(), Ordering::SeqCst);
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
    let count = smp::cpu_count();
    CALLS.store(0, Ordering::SeqCst);
    for (target, seen) in SEEN.iter().enumerate().take(count) {
        smp::call_on(core::iter::once(target), answer, target as u64);
        check_eq!(seen.load(Ordering::SeqCst), target, "the call for cpu{target} ran elsewhere");
    }
    // All at once, many times: every call is answered exactly once.
    for _ in 0..100 {
        smp::call_on(
            0..count,
            |_| {
                CALLS.fetch_add(1, Ordering::SeqCst);
            },
            0,
        );
    }
    check_eq!(CALLS.load(Ordering::SeqCst), (count + 100 * count) as u64);
    Ok(())
});

ktest!(explicit harness_must_fail, || {
    check_eq!(1 + 1, 3, "this test fails on purpose, to prove the harness notices");
    Ok(())
});

// Tests that end the machine on purpose: the host harness checks that each
// fault is reported with its CPU, kind, address and registers.

ktest!(explicit die_by_page_fault, || {
    // SAFETY: none; the read faults on purpose (address 0x10 is unmapped).
    let value = unsafe { core::ptr::read_volatile(0x10 as *const u64) };
    Err(format!("read {value} from an unmapped address"))
});

ktest!(explicit die_by_general_protection, || {
    // SAFETY: none; a non-canonical address raises #GP on purpose.
    let value = unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64) };
    Err(format!("read {value} from a non-canonical address"))
});

ktest!(explicit die_by_invalid_opcode, || {
    // SAFETY: none; `ud2` raises #UD on purpose.
    unsafe { core::arch::asm!("ud2") };
    Err("ud2 did not fault".into())
});

ktest!(explicit die_by_stack_overflow, || {
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let mut buffer = [depth; 64];
        core::hint::black_box(&mut buffer);
        if depth == 0 { 0 } else { recurse(depth - 1) + buffer[3] }
    }
    let total = recurse(1 << 20);
    Err(format!("recursion finished with {total}"))
});

ktest!(explicit die_by_panic, || {
    panic!("panicking on purpose");
});
