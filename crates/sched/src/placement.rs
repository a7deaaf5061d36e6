//! CPU choice: which CPU new or woken work should go to, and which CPU an idle
//! CPU should pull work from, on a machine with SMT.
//!
//! The per-CPU [`Policy`](crate::Policy) objects decide who runs next on one
//! CPU; this module decides between CPUs. Like Alux's hardware-thread list,
//! it orders CPUs so that hyperthreads sharing a core with busy work are used
//! last: two threads on one core share its execution units, so an idle core
//! elsewhere gives a thread far more than an idle sibling does.
//!
//! The kernel builds a [`Topology`] once at boot (from the package, core and
//! SMT numbers CPUID gives, e.g. via `orrery-topology`), keeps a [`CpuLoad`]
//! per CPU up to date, and asks [`Topology::choose_cpu`] when a thread is
//! created or wakes and [`Topology::busiest`] when a CPU runs out of work.
//! Everything is pure and allocation-free after [`Topology::new`], except
//! [`Topology::preference_order`] which fills a caller's vector.

use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;

/// Where one CPU sits in the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuInfo {
    /// The kernel's number for the CPU; the CPUs of a [`Topology`] are
    /// numbered `0..n` with no gaps.
    pub index: u32,
    /// Physical package (socket).
    pub package: u32,
    /// Core within the package.
    pub core: u32,
    /// Hardware thread within the core; 0 for the first (or only) one.
    pub smt: u32,
}

/// How busy one CPU is, as its run queue and current thread say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuLoad {
    /// Entities queued in its policy ([`Policy::len`](crate::Policy::len)).
    pub queued: u32,
    /// Whether it is running a thread (rather than idling).
    pub running: bool,
}

impl CpuLoad {
    /// A CPU with nothing to do.
    pub const IDLE: CpuLoad = CpuLoad { queued: 0, running: false };

    /// Whether the CPU has nothing to run.
    pub const fn is_idle(&self) -> bool {
        !self.running && self.queued == 0
    }

    /// Runnable threads on the CPU, the running one included.
    pub const fn load(&self) -> u64 {
        self.queued as u64 + self.running as u64
    }
}

/// A topology that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopologyError {
    /// No CPUs at all.
    Empty,
    /// A CPU index is not below the number of CPUs.
    IndexOutOfRange {
        /// The offending index.
        index: u32,
        /// How many CPUs there are.
        count: usize,
    },
    /// Two CPUs claim the same index.
    DuplicateIndex {
        /// The index claimed twice.
        index: u32,
    },
    /// Two CPUs claim the same package, core and hardware thread.
    DuplicatePlace {
        /// One of them.
        first: u32,
        /// The other.
        second: u32,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TopologyError::Empty => write!(f, "topology has no CPUs"),
            TopologyError::IndexOutOfRange { index, count } => {
                write!(f, "CPU index {index} is out of range for {count} CPUs")
            }
            TopologyError::DuplicateIndex { index } => write!(f, "CPU index {index} appears twice"),
            TopologyError::DuplicatePlace { first, second } => {
                write!(f, "CPUs {first} and {second} claim the same package, core and thread")
            }
        }
    }
}

impl core::error::Error for TopologyError {}

/// A placement query that does not match the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlacementError {
    /// The load slice must have one entry per CPU, indexed by CPU index.
    LoadCount {
        /// Number of CPUs in the topology.
        expected: usize,
        /// Length of the load slice given.
        found: usize,
    },
    /// The CPU named is not in the topology.
    UnknownCpu {
        /// The index given.
        index: u32,
    },
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PlacementError::LoadCount { expected, found } => {
                write!(f, "{found} CPU loads given for {expected} CPUs")
            }
            PlacementError::UnknownCpu { index } => write!(f, "CPU {index} is not in the topology"),
        }
    }
}

impl core::error::Error for PlacementError {}

/// The machine's CPUs and which of them share a core; built once at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Indexed by CPU index.
    cpus: Vec<CpuInfo>,
    /// CPU indices sorted by (package, core, smt): each core's threads are adjacent.
    by_place: Vec<u32>,
    /// Per CPU index, the range of `by_place` holding its core's threads.
    core_of: Vec<(u32, u32)>,
}

/// How good a CPU is for new work; smaller is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Preference {
    /// 0: idle on an idle core; 1: idle beside a busy sibling; 2: busy.
    class: u8,
    /// Threads already runnable on this CPU.
    load: u64,
    /// Threads runnable on its whole core: at equal load, a CPU whose
    /// siblings are busy comes later.
    core_load: u64,
    /// Primary hardware threads before secondary ones, as in Alux's list.
    smt: u32,
    /// Last resort, so the order is total and deterministic.
    index: u32,
}

impl Topology {
    /// Checks `cpus` (dense indices, distinct places) and groups SMT siblings.
    pub fn new(cpus: &[CpuInfo]) -> Result<Self, TopologyError> {
        if cpus.is_empty() {
            return Err(TopologyError::Empty);
        }
        let count = cpus.len();
        let mut by_index: Vec<Option<CpuInfo>> = alloc::vec![None; count];
        for cpu in cpus {
            let slot = by_index
                .get_mut(cpu.index as usize)
                .ok_or(TopologyError::IndexOutOfRange { index: cpu.index, count })?;
            if slot.is_some() {
                return Err(TopologyError::DuplicateIndex { index: cpu.index });
            }
            *slot = Some(*cpu);
        }
        // Every slot is filled: `count` distinct indices below `count`.
        let cpus: Vec<CpuInfo> = by_index.into_iter().flatten().collect();
        let mut by_place: Vec<u32> = (0..count as u32).collect();
        // The index in the key makes the order, and so which duplicate is
        // reported, independent of the sort's handling of ties.
        let place = |index: &u32| {
            let cpu = &cpus[*index as usize];
            (cpu.package, cpu.core, cpu.smt, cpu.index)
        };
        by_place.sort_unstable_by_key(place);
        let mut core_of = alloc::vec![(0, 0); count];
        let mut start = 0;
        while start < count {
            let first = &cpus[by_place[start] as usize];
            let mut end = start + 1;
            while end < count {
                let next = &cpus[by_place[end] as usize];
                if (next.package, next.core) != (first.package, first.core) {
                    break;
                }
                if next.smt == cpus[by_place[end - 1] as usize].smt {
                    return Err(TopologyError::DuplicatePlace { first: by_place[end - 1], second: by_place[end] });
                }
                end += 1;
            }
            for &index in &by_place[start..end] {
                core_of[index as usize] = (start as u32, (end - start) as u32);
            }
            start = end;
        }
        Ok(Self { cpus, by_place, core_of })
    }

    /// How many CPUs there are.
    pub fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// The CPU numbered `index`.
    pub fn cpu(&self, index: u32) -> Option<&CpuInfo> {
        self.cpus.get(index as usize)
    }

    /// The CPUs sharing a core with `index`, itself included, by hardware thread.
    pub fn core_threads(&self, index: u32) -> &[u32] {
        match self.core_of.get(index as usize) {
            Some(&(start, length)) => &self.by_place[start as usize..(start + length) as usize],
            None => &[],
        }
    }

    fn check_loads(&self, loads: &[CpuLoad]) -> Result<(), PlacementError> {
        if loads.len() == self.cpus.len() {
            Ok(())
        } else {
            Err(PlacementError::LoadCount { expected: self.cpus.len(), found: loads.len() })
        }
    }

    /// `loads` has been checked to have one entry per CPU.
    fn preference(&self, loads: &[CpuLoad], index: u32) -> Preference {
        let load = loads[index as usize];
        let mut sibling_busy = false;
        let mut core_load = 0;
        for &thread in self.core_threads(index) {
            let thread_load = loads[thread as usize];
            core_load += thread_load.load();
            sibling_busy |= thread != index && !thread_load.is_idle();
        }
        let class = match (load.is_idle(), sibling_busy) {
            (true, false) => 0,
            (true, true) => 1,
            (false, _) => 2,
        };
        Preference { class, load: load.load(), core_load, smt: self.cpus[index as usize].smt, index }
    }

    /// Fills `out` with the CPUs that `allowed` accepts, best first for new
    /// work: idle CPUs whose whole core is idle (primary threads first), then
    /// idle CPUs whose SMT sibling is busy, then busy CPUs by load, where at
    /// equal load one whose core is busier comes later. Ties go to the lower
    /// index. Allocates only if `out` lacks room.
    pub fn preference_order(
        &self,
        loads: &[CpuLoad],
        allowed: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<u32>,
    ) -> Result<(), PlacementError> {
        self.check_loads(loads)?;
        out.clear();
        out.extend((0..self.cpus.len() as u32).filter(|&index| allowed(index)));
        out.sort_unstable_by_key(|&index| self.preference(loads, index));
        Ok(())
    }

    /// The first CPU of [`Topology::preference_order`], without allocating;
    /// `None` if `allowed` accepts no CPU.
    pub fn choose_cpu(
        &self,
        loads: &[CpuLoad],
        allowed: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Option<u32>, PlacementError> {
        self.check_loads(loads)?;
        Ok((0..self.cpus.len() as u32)
            .filter(|&index| allowed(index))
            .min_by_key(|&index| self.preference(loads, index)))
    }

    /// Which CPU `this_cpu` should pull work from: one with something queued
    /// whose load exceeds this CPU's by at least `imbalance_threshold`, the
    /// busiest first; at equal load the nearest (same core, then same
    /// package, since a move there keeps more caches warm), then the lowest
    /// index. `allowed` filters sources, e.g. to those holding a thread whose
    /// affinity admits `this_cpu`. A threshold of 2 pulls only when moving one
    /// thread narrows the gap; 0 or 1 lets two CPUs trade a thread back and forth.
    pub fn busiest(
        &self,
        loads: &[CpuLoad],
        this_cpu: u32,
        imbalance_threshold: u32,
        allowed: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Option<u32>, PlacementError> {
        self.check_loads(loads)?;
        let this = *self.cpu(this_cpu).ok_or(PlacementError::UnknownCpu { index: this_cpu })?;
        let floor = loads[this_cpu as usize].load() + u64::from(imbalance_threshold);
        let distance = |other: &CpuInfo| -> u8 {
            if (other.package, other.core) == (this.package, this.core) {
                0
            } else if other.package == this.package {
                1
            } else {
                2
            }
        };
        Ok(self
            .cpus
            .iter()
            .filter(|cpu| {
                let load = loads[cpu.index as usize];
                cpu.index != this_cpu && load.queued > 0 && load.load() >= floor
            })
            .filter(|cpu| allowed(cpu.index))
            .min_by_key(|cpu| (Reverse(loads[cpu.index as usize].load()), distance(cpu), cpu.index))
            .map(|cpu| cpu.index))
    }
}

#[cfg(test)]
mod tests {
    //! Placement on a small SMT machine, with exact expected orders.
    use super::*;

    /// 4 cores × 2 threads; CPU `2 * core + smt`, as a BIOS that lists
    /// siblings adjacently would number them.
    fn four_by_two() -> Topology {
        let cpus: Vec<CpuInfo> =
            (0..8).map(|index| CpuInfo { index, package: 0, core: index / 2, smt: index % 2 }).collect();
        Topology::new(&cpus).unwrap()
    }

    fn busy(queued: u32) -> CpuLoad {
        CpuLoad { queued, running: true }
    }

    fn order(topology: &Topology, loads: &[CpuLoad]) -> Vec<u32> {
        let mut out = Vec::new();
        topology.preference_order(loads, &mut |_| true, &mut out).unwrap();
        out
    }

    #[test]
    fn all_idle_uses_primary_threads_first() {
        let topology = four_by_two();
        let loads = [CpuLoad::IDLE; 8];
        assert_eq!(order(&topology, &loads), [0, 2, 4, 6, 1, 3, 5, 7]);
    }

    #[test]
    fn siblings_of_busy_cores_come_after_idle_cores() {
        let topology = four_by_two();
        let mut loads = [CpuLoad::IDLE; 8];
        loads[0] = busy(0); // core 0 busy on its first thread
        loads[5] = busy(2); // core 2 busy on its second thread
        // Idle cores 1 and 3 first (primary threads first), then the idle
        // siblings 1 and 4 of the busy cores, then the busy CPUs by load.
        assert_eq!(order(&topology, &loads), [2, 6, 3, 7, 1, 4, 0, 5]);
        assert_eq!(topology.choose_cpu(&loads, &mut |_| true), Ok(Some(2)));
        // Affinity to core 2 only: its idle sibling beats its busy thread.
        assert_eq!(topology.choose_cpu(&loads, &mut |cpu| cpu / 2 == 2), Ok(Some(4)));
    }

    #[test]
    fn busy_cpus_by_load_then_by_core_load() {
        let topology = four_by_two();
        let loads = [busy(1), busy(1), busy(1), CpuLoad::IDLE, busy(0), busy(0), busy(3), busy(0)];
        // 3 is the only idle CPU (beside busy 2). Load 1: CPUs 4, 5, 7; 4 and
        // 5 share a core of load 2, 7 shares one of load 5 with 6, so 7 is
        // last of them. Load 2: 0, 1, 2; 2's core has the idle 3.
        assert_eq!(order(&topology, &loads), [3, 4, 5, 7, 2, 0, 1, 6]);
    }

    #[test]
    fn choose_cpu_honours_affinity_and_matches_order() {
        let topology = four_by_two();
        let loads = [busy(0), CpuLoad::IDLE, busy(0), busy(0), CpuLoad::IDLE, CpuLoad::IDLE, busy(4), busy(4)];
        let mut out = Vec::new();
        for mask in 0u32..256 {
            topology.preference_order(&loads, &mut |cpu| mask & (1 << cpu) != 0, &mut out).unwrap();
            let chosen = topology.choose_cpu(&loads, &mut |cpu| mask & (1 << cpu) != 0).unwrap();
            assert_eq!(chosen, out.first().copied(), "mask {mask:#b}");
        }
        assert_eq!(topology.choose_cpu(&loads, &mut |_| false), Ok(None));
    }

    #[test]
    fn busiest_prefers_load_then_nearness() {
        let topology = four_by_two();
        let loads = [CpuLoad::IDLE, busy(2), busy(1), busy(0), busy(2), busy(0), busy(0), CpuLoad::IDLE];
        // CPU 0 is idle: 1 (same core, load 3) and 4 (load 3) tie on load; 1 is nearer.
        assert_eq!(topology.busiest(&loads, 0, 2, &mut |_| true), Ok(Some(1)));
        // From CPU 7, 1 and 4 are equally far; the lower index wins.
        assert_eq!(topology.busiest(&loads, 7, 2, &mut |_| true), Ok(Some(1)));
        // Affinity forbids 1: 4 it is.
        assert_eq!(topology.busiest(&loads, 0, 2, &mut |cpu| cpu != 1), Ok(Some(4)));
        // Threshold 3 still admits 1 (3 - 0); threshold 4 admits nobody.
        assert_eq!(topology.busiest(&loads, 0, 3, &mut |_| true), Ok(Some(1)));
        assert_eq!(topology.busiest(&loads, 0, 4, &mut |_| true), Ok(None));
        // A busy CPU with nothing queued has nothing to give.
        let loads = [CpuLoad::IDLE, busy(0), busy(0), busy(0), busy(0), busy(0), busy(0), busy(0)];
        assert_eq!(topology.busiest(&loads, 0, 1, &mut |_| true), Ok(None));
    }

    #[test]
    fn busiest_prefers_same_package() {
        let cpus: Vec<CpuInfo> =
            (0..4).map(|index| CpuInfo { index, package: index / 2, core: index % 2, smt: 0 }).collect();
        let topology = Topology::new(&cpus).unwrap();
        let loads = [CpuLoad::IDLE, busy(1), busy(1), busy(1)];
        assert_eq!(topology.busiest(&loads, 2, 2, &mut |_| true), Ok(None));
        assert_eq!(topology.busiest(&loads, 0, 2, &mut |_| true), Ok(Some(1)));
        let loads = [busy(1), busy(1), CpuLoad::IDLE, busy(1)];
        assert_eq!(topology.busiest(&loads, 2, 2, &mut |_| true), Ok(Some(3)));
    }

    #[test]
    fn bad_input_is_reported() {
        let cpu = |index, core, smt| CpuInfo { index, package: 0, core, smt };
        assert_eq!(Topology::new(&[]), Err(TopologyError::Empty));
        assert_eq!(
            Topology::new(&[cpu(0, 0, 0), cpu(2, 0, 1)]),
            Err(TopologyError::IndexOutOfRange { index: 2, count: 2 })
        );
        assert_eq!(Topology::new(&[cpu(1, 0, 0), cpu(1, 1, 0)]), Err(TopologyError::DuplicateIndex { index: 1 }));
        assert_eq!(
            Topology::new(&[cpu(0, 3, 1), cpu(1, 3, 1)]),
            Err(TopologyError::DuplicatePlace { first: 0, second: 1 })
        );
        let topology = four_by_two();
        assert_eq!(
            topology.choose_cpu(&[CpuLoad::IDLE; 3], &mut |_| true),
            Err(PlacementError::LoadCount { expected: 8, found: 3 })
        );
        assert_eq!(
            topology.busiest(&[CpuLoad::IDLE; 8], 8, 1, &mut |_| true),
            Err(PlacementError::UnknownCpu { index: 8 })
        );
        assert_eq!(topology.core_threads(8), &[] as &[u32]);
        assert_eq!(topology.core_threads(5), &[4, 5]);
    }
}
