//! Tests of pages a parent shares with a child (`process_share`,
//! `Process::share_with`) and of mailbox pages: their frames stay allocated
//! while any address space maps them, whoever ends or unmaps first, and go
//! back exactly once when the last mapping goes.
//!
//! The kernel side plays the parent's part through `Process::share_with`,
//! the function `process_share` calls. `user/programs/shared-check` plays the
//! child that keeps using the pages; meanwhile the tests allocate, zero and
//! free frames by the thousand, so that a frame freed under the child would
//! be handed out and overwritten, and the child would see it.

use alloc::{format, string::String, vec::Vec};

use orrery_abi::{Error, ExitStatus, USER_SHARED_BASE};
use orrery_frames::Frame;

use super::processes::{Footprint, create, end_and_join, finish_within};
use crate::{
    arch::paging::PAGE_SIZE,
    check, check_eq, ktest,
    mm::frames,
    proc::{Process, mailbox::MailboxObject},
    task,
};

/// What `shared-check` expects at the start of each shared page, plus the
/// page's number.
const MARKER: u64 = 0x5348_4152_4544_0000;
/// Rounds after which `shared-check` stops if not told to before.
const MAX_ROUNDS: u64 = 1_000_000;
/// Written over the first marker to tell `shared-check` to stop.
const STOP: u64 = 0x5354_4f50;
/// Frames a hammer round takes at most.
const HAMMER_FRAMES: usize = 32768;
/// Free frames a hammer round leaves to the rest of the kernel.
const HAMMER_RESERVE: u64 = 4096;

/// The frames mapped at `pages` pages from `address` in `process`.
fn frames_at(process: &Process, address: u64, pages: u64) -> Result<Vec<Frame>, String> {
    (0..pages)
        .map(|page| {
            let at = address + page * PAGE_SIZE;
            process
                .task()
                .with_address_space(|space| space.translate(at))
                .flatten()
                .map(|(physical, _)| Frame::containing(physical))
                .ok_or_else(|| format!("{at:#x} is not mapped in process {}", process.id()))
        })
        .collect()
}

/// Writes `shared-check`'s marker at the start of each of the `pages`
/// pages from `address` of `process`, which has not started.
fn mark(process: &Process, address: u64, pages: u64) -> Result<(), String> {
    for (page, frame) in frames_at(process, address, pages)?.into_iter().enumerate() {
        // SAFETY: the frame backs a user page of a process that has not
        // started, reached through the physical window; a page-aligned u64
        // write touches nothing else.
        unsafe { (frames::frame_pointer(frame) as *mut u64).write_volatile(MARKER + page as u64) };
    }
    Ok(())
}

/// Fails if a frame of `shared` is free: an address space maps them all.
fn check_allocated(shared: &[Frame], when: &str) -> Result<(), String> {
    for frame in shared {
        check!(!frames::is_free(*frame), "frame {:#x} was freed while mapped, {when}", frame.address());
    }
    Ok(())
}

/// Fails unless every frame of `shared` is free: nothing maps them any more.
fn check_freed(shared: &[Frame], when: &str) -> Result<(), String> {
    for frame in shared {
        check!(frames::is_free(*frame), "frame {:#x} is still allocated {when}", frame.address());
    }
    Ok(())
}

/// One round of memory pressure: takes up to [`HAMMER_FRAMES`] frames
/// (zeroed), checks that none is one of `shared` and that they stay zero,
/// and gives them back; returns how many it took.
fn hammer(shared: &[Frame]) -> Result<usize, String> {
    let mut taken = Vec::with_capacity(HAMMER_FRAMES);
    while taken.len() < HAMMER_FRAMES && frames::free_count() > HAMMER_RESERVE {
        let Some(frame) = frames::allocate_zeroed() else { break };
        taken.push(frame);
    }
    let handed_out = taken.iter().find(|frame| shared.contains(frame)).copied();
    // Let the child run meanwhile, on a single CPU too.
    task::sleep_for_nanos(1_000_000);
    // A process writing into a frame it should not map writes whole pages:
    // a few words of each show it.
    let written = taken.iter().position(|frame| {
        let words = frames::frame_pointer(*frame) as *const u64;
        [0, 1, 255, 511].iter().any(|&index| {
            // SAFETY: the frame is ours until it is given back below, and
            // the physical window maps it; `index` < 512 words of a page.
            unsafe { words.add(index).read_volatile() != 0 }
        })
    });
    let count = taken.len();
    taken.into_iter().for_each(frames::deallocate);
    if let Some(frame) = handed_out {
        return Err(format!("frame {:#x}, mapped by a process, was handed out again", frame.address()));
    }
    check!(written.is_none(), "someone wrote into a frame only the kernel held");
    Ok(count)
}

/// With `sweep`, hammers ([`hammer`]) while `child` keeps checking its
/// pages, checking before each round that `shared` is still allocated,
/// until the rounds have taken every free frame at least once (the
/// allocator hands frames out going forward from its last one, so the
/// rounds sweep all of memory, and a frame freed under the child would be
/// handed out and zeroed). Then tells the child to stop and waits for it.
/// Returns the rounds made and the frames they took.
fn sweep_memory(child: &Process, shared: &[Frame], sweep: bool) -> Result<(u64, u64), String> {
    let deadline = crate::arch::tsc::now() + crate::arch::tsc::hz() * 120;
    // The child has checked the markers once its first round has written
    // the second word (zero until then); only then may the first change.
    let second_word = || {
        // SAFETY: the physical window maps every frame; this one is the
        // child's shared page, which it writes a whole aligned word at a
        // time, so an aligned u64 read sees one of its values.
        unsafe { (frames::frame_pointer(shared[0]) as *const u64).add(1).read_volatile() }
    };
    while second_word() == 0 {
        check!(!child.is_finished(), "the child ended ({:?}) before its first round", child.exit_status());
        check!(crate::arch::tsc::now() < deadline, "the child never began its rounds");
        task::sleep_for_nanos(100_000);
    }
    let all = if sweep { frames::free_count() + HAMMER_FRAMES as u64 } else { 0 };
    let (mut taken, mut rounds) = (0, 0);
    while taken < all {
        check!(!child.is_finished(), "the child ended ({:?}) after {rounds} rounds", child.exit_status());
        check!(crate::arch::tsc::now() < deadline, "{rounds} rounds took too long");
        check_allocated(shared, "while the child uses them")?;
        taken += hammer(shared)? as u64;
        rounds += 1;
    }
    check!(!child.is_finished(), "the child ended ({:?}) after {rounds} rounds", child.exit_status());
    check_allocated(shared, "while the child uses them")?;
    // SAFETY: the frame is allocated (just checked) and mapped in the child,
    // which only reads this word; a page-aligned u64 write.
    unsafe { (frames::frame_pointer(shared[0]) as *mut u64).write_volatile(STOP) };
    check!(finish_within(child, 20), "the child did not stop");
    check_eq!(child.exit_status(), Some(ExitStatus::Exited(0)), "the child's rounds that saw a change");
    Ok((rounds, taken))
}

/// A parent (`true`, which exits at once) shares `pages` pages of memory
/// it maps with `shared-check`; the parent exits first, then (with `sweep`)
/// all memory is swept while the child goes on checking the pages; then
/// the child stops. Returns what [`sweep_memory`] does.
fn share_then_exit(pages: u64, sweep: bool) -> Result<(u64, u64), String> {
    let parent = create("true", 0)?;
    let child = create("shared-check", MAX_ROUNDS)?;
    let outcome = (|| {
        let length = pages * PAGE_SIZE;
        let address = parent.map_memory(length, true).map_err(|e| format!("map: {e}"))?;
        mark(&parent, address, pages)?;
        check_eq!(parent.share_with(&child, address, length, true), Ok(USER_SHARED_BASE));
        let shared = frames_at(&child, USER_SHARED_BASE, pages)?;
        check_eq!(shared, frames_at(&parent, address, pages)?, "the child maps the parent's frames");
        child.start().map_err(|e| format!("start the child: {e}"))?;
        parent.start().map_err(|e| format!("start the parent: {e}"))?;
        task::join(parent.task());
        check_eq!(parent.exit_status(), Some(ExitStatus::Exited(0)));
        check_allocated(&shared, "once the parent's memory was torn down")?;
        sweep_memory(&child, &shared, sweep)
    })();
    end_and_join(&child, ExitStatus::Killed(1));
    end_and_join(&parent, ExitStatus::Killed(1));
    outcome
}

ktest!(shared_pages_outlive_the_parent, || {
    share_then_exit(1, false)?;
    let before = Footprint::settled();
    let (rounds, taken) = share_then_exit(2, true)?;
    before.check_nothing_left("a share whose parent exited first")?;
    crate::println!(
        "ktest-info: the child used its pages after its parent exited while {rounds} rounds zeroed {taken} frames"
    );
    Ok(())
});

ktest!(unmapping_shared_pages_leaves_them_to_the_child, || {
    const PAGES: u64 = 2;
    const LENGTH: u64 = PAGES * PAGE_SIZE;
    share_then_exit(1, false)?;
    let before = Footprint::settled();
    let parent = create("spinner", 1)?;
    let child = create("shared-check", MAX_ROUNDS)?;
    let late = create("spinner", 1)?;
    let outcome = (|| {
        // The parent unmaps the pages while the child uses them: the call
        // succeeds and the parent's mapping goes, but not the frames.
        let address = parent.map_memory(LENGTH, true).map_err(|e| format!("map: {e}"))?;
        mark(&parent, address, PAGES)?;
        check_eq!(parent.share_with(&child, address, LENGTH, true), Ok(USER_SHARED_BASE));
        let shared = frames_at(&child, USER_SHARED_BASE, PAGES)?;
        parent.start().map_err(|e| format!("start the parent: {e}"))?;
        child.start().map_err(|e| format!("start the child: {e}"))?;
        check_eq!(parent.unmap_memory(address, LENGTH), Ok(()));
        check!(frames_at(&parent, address, 1).is_err(), "the parent still maps the pages");
        check_eq!(parent.unmap_memory(address, LENGTH), Err(Error::NotMapped), "a second unmap");
        check_eq!(frames_at(&child, USER_SHARED_BASE, PAGES)?, shared, "the child's pages");
        check_allocated(&shared, "after the parent unmapped them")?;
        let swept = sweep_memory(&child, &shared, true)?;
        // Nothing maps them now: the child's reference was the last.
        check_freed(&shared, "once the child that kept them ended")?;

        // The other order: the child ends first, and the parent's unmap
        // frees the frames there and then, while the parent lives on.
        let address = parent.map_memory(LENGTH, true).map_err(|e| format!("map: {e}"))?;
        let shared = frames_at(&parent, address, PAGES)?;
        check_eq!(parent.share_with(&late, address, LENGTH, true).map(|_| ()), Ok(()));
        late.start().map_err(|e| format!("start the second child: {e}"))?;
        end_and_join(&late, ExitStatus::Killed(2));
        check_allocated(&shared, "while the parent maps them")?;
        check_eq!(parent.unmap_memory(address, LENGTH), Ok(()));
        check_freed(&shared, "after the last mapping was unmapped")?;
        check!(!parent.task().is_killed(), "the parent died");
        Ok(swept)
    })();
    for process in [&child, &late, &parent] {
        end_and_join(process, ExitStatus::Killed(1));
    }
    let (rounds, taken) = outcome?;
    drop((parent, child, late));
    before.check_nothing_left("shares whose parent unmapped them")?;
    crate::println!(
        "ktest-info: the child kept the pages its parent unmapped while {rounds} rounds zeroed {taken} frames"
    );
    Ok(())
});

/// A parent shares pages twice with one child and, partly the same ones,
/// with another; then the three end, the parent first or last.
fn share_twice(parent_first: bool) -> Result<(), String> {
    let parent = create("spinner", 1)?;
    let first = create("spinner", 1)?;
    let second = create("spinner", 1)?;
    let mut order = alloc::vec![first.clone(), second.clone()];
    order.insert(if parent_first { 0 } else { 2 }, parent.clone());
    let outcome = (|| {
        let address = parent.map_memory(3 * PAGE_SIZE, true).map_err(|e| format!("map: {e}"))?;
        let own = frames_at(&parent, address, 3)?;
        // Pages 0 and 1 to the first child, twice; pages 1 and 2 to the
        // second (page 1 already shared, page 2 not yet); and a page of the
        // parent's text, read-only.
        let once = parent.share_with(&first, address, 2 * PAGE_SIZE, true).map_err(|e| format!("{e}"))?;
        let twice = parent.share_with(&first, address, 2 * PAGE_SIZE, false).map_err(|e| format!("{e}"))?;
        let other = parent.share_with(&second, address + PAGE_SIZE, 2 * PAGE_SIZE, true).map_err(|e| format!("{e}"))?;
        let text = parent.program().text.address;
        let text_there = parent.share_with(&second, text, PAGE_SIZE, false).map_err(|e| format!("{e}"))?;
        check_eq!(frames_at(&first, once, 2)?, own[..2], "the first share");
        check_eq!(frames_at(&first, twice, 2)?, own[..2], "the same pages shared again");
        check_eq!(frames_at(&second, other, 2)?, own[1..], "the second child's share");
        check_eq!(frames_at(&second, text_there, 1)?, frames_at(&parent, text, 1)?, "the text");
        for process in [&parent, &first, &second] {
            process.start().map_err(|e| format!("start: {e}"))?;
        }
        for process in &order {
            check_allocated(&own, "while a process maps them")?;
            end_and_join(process, ExitStatus::Killed(3));
        }
        // A frame freed twice would have stopped the kernel; one not freed
        // shows in the footprint.
        check_freed(&own, "once every process that mapped them ended")
    })();
    for process in &order {
        end_and_join(process, ExitStatus::Killed(1));
    }
    outcome
}

ktest!(pages_shared_twice_are_freed_once, || {
    share_twice(true)?;
    let before = Footprint::settled();
    share_twice(true)?;
    share_twice(false)?;
    before.check_nothing_left("pages shared twice with one child and once with another").map(drop)
});

/// One share between a parent and a child, ended in one of four ways
/// (`way`): the parent killed first, the child first, the parent unmapping
/// the pages first, the parent exiting by itself (`true`) first.
fn share_cycle(way: usize) -> Result<(), String> {
    let parent = create(if way == 3 { "true" } else { "spinner" }, 1)?;
    let child = create("spinner", 1)?;
    let outcome = (|| {
        let address = parent.map_memory(2 * PAGE_SIZE, true).map_err(|e| format!("map: {e}"))?;
        let shared = frames_at(&parent, address, 2)?;
        parent.share_with(&child, address, 2 * PAGE_SIZE, true).map_err(|e| format!("share: {e}"))?;
        child.start().map_err(|e| format!("start the child: {e}"))?;
        parent.start().map_err(|e| format!("start the parent: {e}"))?;
        match way {
            0 => end_and_join(&parent, ExitStatus::Killed(4)),
            1 => end_and_join(&child, ExitStatus::Killed(4)),
            2 => check_eq!(parent.unmap_memory(address, 2 * PAGE_SIZE), Ok(())),
            _ => drop(task::join(parent.task())),
        }
        check_allocated(&shared, "while one of the two maps them")
    })();
    end_and_join(&child, ExitStatus::Killed(5));
    end_and_join(&parent, ExitStatus::Killed(5));
    outcome
}

ktest!(share_exit_cycles_leak_nothing, || {
    const CYCLES: usize = 256;
    for way in 0..8 {
        share_cycle(way % 4)?;
    }
    let before = Footprint::settled();
    for cycle in 0..CYCLES {
        share_cycle(cycle % 4).map_err(|e| format!("cycle {cycle}: {e}"))?;
    }
    let after = before.check_nothing_left(&format!("{CYCLES} share/exit cycles"))?;
    crate::println!(
        "ktest-info: {CYCLES} share/exit cycles: free frames {} -> {}, heap allocations {} -> {}",
        before.free_frames,
        after.free_frames,
        before.allocations,
        after.allocations
    );
    Ok(())
});

/// A process serving a mailbox shares its pages with a child, closes its
/// handle (the last one) and ends: the pages stay while the child maps them.
fn mailbox_outlives_its_handles() -> Result<(), String> {
    let server = create("spinner", 1)?;
    let child = create("spinner", 1)?;
    let outcome = (|| {
        let mailbox = MailboxObject::new(8).map_err(|e| format!("{e}"))?;
        let handle = server.grant_mailbox(&mailbox, true).map_err(|e| format!("grant: {e}"))?;
        let address = match server.handle(handle) {
            Ok(crate::proc::Handle::Mailbox { address, .. }) => address,
            _ => return Err("no mailbox handle".into()),
        };
        let pages = mailbox.bytes() / PAGE_SIZE;
        let own = frames_at(&server, address, pages)?;
        drop(mailbox);
        let there = server.share_with(&child, address, pages * PAGE_SIZE, true).map_err(|e| format!("share: {e}"))?;
        check_eq!(frames_at(&child, there, pages)?, own, "the child maps the mailbox");
        check_eq!(server.close_handle(handle), Ok(()));
        check_allocated(&own, "after the last handle to the mailbox was closed")?;
        server.start().map_err(|e| format!("start: {e}"))?;
        child.start().map_err(|e| format!("start: {e}"))?;
        end_and_join(&server, ExitStatus::Killed(6));
        check_allocated(&own, "after the server ended")?;
        end_and_join(&child, ExitStatus::Killed(6));
        check_freed(&own, "once nothing maps them")
    })();
    end_and_join(&child, ExitStatus::Killed(1));
    end_and_join(&server, ExitStatus::Killed(1));
    outcome
}

ktest!(mailbox_pages_stay_while_mapped, || {
    mailbox_outlives_its_handles()?;
    let before = Footprint::settled();
    mailbox_outlives_its_handles()?;
    before.check_nothing_left("a mailbox shared on after its handles closed").map(drop)
});
