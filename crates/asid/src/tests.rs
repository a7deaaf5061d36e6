use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

extern crate std;

const ROOT: u64 = 0x1234_5000;

#[test]
fn the_kernel_space_is_pcid_0_and_never_flushed() {
    let mut cache = AsidCache::<4>::new();
    assert_eq!(cache.load(ROOT, KERNEL_SPACE, 7), ROOT | NO_FLUSH);
    assert_eq!(cache.load(ROOT, KERNEL_SPACE, 8), ROOT | NO_FLUSH);
    assert_eq!(cache.pcid_of(KERNEL_SPACE), Some(0));
}

#[test]
fn a_space_keeps_its_pcid_and_its_translations_until_it_unmaps() {
    let mut cache = AsidCache::<4>::new();
    let first = cache.load(ROOT, 5, 0);
    assert_eq!(first & NO_FLUSH, 0, "a new space is flushed as it is loaded");
    assert_eq!(pcid_in(first), 1);
    assert_eq!(first & !0xfff & !NO_FLUSH, ROOT);
    let again = cache.load(ROOT, 5, 0);
    assert_eq!(again, ROOT | 1 | NO_FLUSH, "same space, same generation: kept");
    let after_unmap = cache.load(ROOT, 5, 1);
    assert_eq!(after_unmap, ROOT | 1, "the generation moved: flushed, same id");
    assert_eq!(cache.load(ROOT, 5, 1), ROOT | 1 | NO_FLUSH);
}

#[test]
fn slots_are_recycled_in_turn_and_a_recycled_slot_is_flushed() {
    let mut cache = AsidCache::<2>::new();
    assert_eq!(pcid_in(cache.load(ROOT, 10, 0)), 1);
    assert_eq!(pcid_in(cache.load(ROOT, 11, 0)), 2);
    // A third space takes slot 1 from space 10, flushed.
    let third = cache.load(ROOT, 12, 0);
    assert_eq!(third, ROOT | 1);
    assert_eq!(cache.pcid_of(10), None);
    // Space 10 comes back: a slot of its own again, flushed.
    let back = cache.load(ROOT, 10, 0);
    assert_eq!(back, ROOT | 2);
    assert_eq!(cache.pcid_of(11), None);
    assert_eq!(cache.pcid_of(12), Some(1));
}

/// What the TLB may hold under each PCID: translations of which space at
/// which generation (`None`: nothing, it was flushed).
#[derive(Default)]
struct TlbModel {
    tags: HashMap<u64, (u64, u64)>,
}

impl TlbModel {
    /// Applies a CR3 load; false if it kept translations that are not the
    /// loaded space's at its current generation.
    fn load(&mut self, cr3: u64, space: u64, generation: u64) -> bool {
        let pcid = pcid_in(cr3);
        let sound = cr3 & NO_FLUSH == 0 || self.tags.get(&pcid).is_none_or(|&tag| tag == (space, generation));
        self.tags.insert(pcid, (space, generation));
        sound
    }
}

proptest! {
    /// Whatever the order of switches and unmaps, a load never keeps
    /// translations that belong to another space or to this space before
    /// an unmap, two spaces never hold one PCID, and only the kernel's
    /// space uses PCID 0.
    #[test]
    fn kept_translations_are_always_the_loaded_spaces_own(
        steps in proptest::collection::vec((0u64..10, any::<bool>()), 1..400)
    ) {
        let mut cache = AsidCache::<3>::new();
        let mut generations = [0u64; 10];
        let mut tlb = TlbModel::default();
        for (space, unmap) in steps {
            if unmap && space != KERNEL_SPACE {
                generations[space as usize] += 1;
            }
            let generation = generations[space as usize];
            let cr3 = cache.load(ROOT, space, generation);
            prop_assert_eq!(cr3 & !0xfff & !NO_FLUSH, ROOT, "the root is kept intact");
            prop_assert!(tlb.load(cr3, space, generation), "kept stale translations: space {} cr3 {:#x}", space, cr3);
            prop_assert_eq!(pcid_in(cr3) == 0, space == KERNEL_SPACE);
            prop_assert!(pcid_in(cr3) <= 3);
            let mut held: std::vec::Vec<u64> = (1..10).filter_map(|s| cache.pcid_of(s)).collect();
            let count = held.len();
            held.sort_unstable();
            held.dedup();
            prop_assert_eq!(held.len(), count, "two spaces hold one PCID");
        }
    }

    /// A space switched back to without an unmap in between, while it kept
    /// its slot, is never flushed: the point of PCID.
    #[test]
    fn returning_to_a_space_that_kept_its_slot_does_not_flush(
        spaces in proptest::collection::vec(1u64..4, 1..100)
    ) {
        // Three spaces, three slots: nobody is ever evicted.
        let mut cache = AsidCache::<3>::new();
        let mut seen = std::collections::HashSet::new();
        for space in spaces {
            let cr3 = cache.load(ROOT, space, 0);
            prop_assert_eq!(cr3 & NO_FLUSH != 0, !seen.insert(space));
        }
    }
}
