//! CPU topology: which package, core and SMT thread an APIC id names.
//!
//! x86 packs a CPU's place into its APIC id: the low `smt_bits` bits number
//! the hardware thread within its core, the next bits number the core within
//! its package, and the rest number the package. CPUID says how wide each
//! field is (leaf 0xB or 0x1F on current CPUs, leaves 1 and 4 before them).
//! The kernel reads the CPUID registers and hands the raw values to this
//! crate, which does the decoding and is tested on the host; the scheduler's
//! placement code then uses [`Location`] to keep SMT siblings apart.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// Where a CPU sits in the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Physical package (socket).
    pub package: u32,
    /// Core within the package.
    pub core: u32,
    /// Hardware thread within the core (0 on a CPU without SMT).
    pub thread: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package {} core {} thread {}", self.package, self.core, self.thread)
    }
}

/// Widths of the APIC id fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shifts {
    /// Bits of the APIC id that number the thread within a core.
    pub smt_bits: u32,
    /// Bits below the package number (thread and core fields together).
    pub package_shift: u32,
}

/// Why the CPUID values could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyError {
    /// The extended topology leaf reports no levels.
    NoLevels,
    /// A level's shift is smaller than the level below it, or beyond 32.
    BadShift {
        /// The level type CPUID gave (1 = SMT, 2 = core, ...).
        level_type: u8,
        /// Its shift.
        shift: u32,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::NoLevels => write!(f, "CPUID topology leaf lists no levels"),
            TopologyError::BadShift { level_type, shift } => {
                write!(f, "CPUID topology level type {level_type} has bad shift {shift}")
            }
        }
    }
}

/// Level type numbers of CPUID leaves 0xB and 0x1F.
pub mod level_type {
    /// Hardware threads of one core.
    pub const SMT: u8 = 1;
    /// Cores of one module/die/package.
    pub const CORE: u8 = 2;
}

impl Shifts {
    /// No SMT, one core per package: every APIC id is its own package.
    pub const FLAT: Shifts = Shifts { smt_bits: 0, package_shift: 0 };

    /// Decodes the sub-leaves of CPUID leaf 0xB or 0x1F, given in order as
    /// `(level type ECX[15:8], shift EAX[4:0])` up to (not including) the first
    /// sub-leaf of type 0. Levels above core (module, die) count as part of the
    /// package-local id, so the package shift is the last level's shift.
    pub fn from_extended_leaf(levels: impl IntoIterator<Item = (u8, u32)>) -> Result<Shifts, TopologyError> {
        let mut smt_bits = 0;
        let mut last_shift = None;
        for (level_type, shift) in levels {
            if shift > 32 || last_shift.is_some_and(|last| shift < last) {
                return Err(TopologyError::BadShift { level_type, shift });
            }
            if level_type == level_type::SMT {
                smt_bits = shift;
            }
            last_shift = Some(shift);
        }
        let package_shift = last_shift.ok_or(TopologyError::NoLevels)?;
        Ok(Shifts { smt_bits, package_shift })
    }

    /// Decodes the older leaves: CPUID.1:EBX[23:16] (addressable logical
    /// processors per package, valid when CPUID.1:EDX.HTT) and
    /// CPUID.4:EAX[31:26] + 1 (addressable cores per package).
    pub fn from_legacy(logical_per_package: u32, cores_per_package: u32) -> Shifts {
        let logical = logical_per_package.max(1);
        let cores = cores_per_package.clamp(1, logical);
        let package_shift = bits_for(logical);
        let smt_bits = bits_for(logical / cores);
        Shifts { smt_bits, package_shift: package_shift.max(smt_bits) }
    }

    /// The place of the CPU with this APIC id.
    pub fn locate(&self, apic_id: u32) -> Location {
        let field = |shift: u32| if shift >= 32 { 0 } else { apic_id >> shift };
        let mask = |bits: u32| if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 };
        Location {
            package: field(self.package_shift),
            core: (apic_id >> self.smt_bits.min(31)) & mask(self.package_shift - self.smt_bits),
            thread: apic_id & mask(self.smt_bits),
        }
    }
}

/// Bits needed to number `count` things (`ceil(log2(count))`).
fn bits_for(count: u32) -> u32 {
    count.max(1).next_power_of_two().trailing_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_leaf_with_smt() {
        // 4 cores x 2 threads per package, like `-smp 8,sockets=1,cores=4,threads=2`.
        let shifts = Shifts::from_extended_leaf([(level_type::SMT, 1), (level_type::CORE, 3)]).unwrap();
        assert_eq!(shifts, Shifts { smt_bits: 1, package_shift: 3 });
        assert_eq!(shifts.locate(0), Location { package: 0, core: 0, thread: 0 });
        assert_eq!(shifts.locate(1), Location { package: 0, core: 0, thread: 1 });
        assert_eq!(shifts.locate(6), Location { package: 0, core: 3, thread: 0 });
        assert_eq!(shifts.locate(9), Location { package: 1, core: 0, thread: 1 });
    }

    #[test]
    fn extended_leaf_without_smt() {
        let shifts = Shifts::from_extended_leaf([(level_type::SMT, 0), (level_type::CORE, 2)]).unwrap();
        assert_eq!(shifts.locate(3), Location { package: 0, core: 3, thread: 0 });
        assert_eq!(shifts.locate(5), Location { package: 1, core: 1, thread: 0 });
    }

    #[test]
    fn extended_leaf_errors() {
        assert_eq!(Shifts::from_extended_leaf([]), Err(TopologyError::NoLevels));
        assert_eq!(
            Shifts::from_extended_leaf([(1, 2), (2, 1)]),
            Err(TopologyError::BadShift { level_type: 2, shift: 1 })
        );
        assert_eq!(Shifts::from_extended_leaf([(1, 40)]), Err(TopologyError::BadShift { level_type: 1, shift: 40 }));
    }

    #[test]
    fn legacy_leaves() {
        assert_eq!(Shifts::from_legacy(8, 4), Shifts { smt_bits: 1, package_shift: 3 });
        assert_eq!(Shifts::from_legacy(6, 6), Shifts { smt_bits: 0, package_shift: 3 });
        assert_eq!(Shifts::from_legacy(1, 1), Shifts::FLAT);
        assert_eq!(Shifts::from_legacy(0, 0), Shifts::FLAT);
        assert_eq!(Shifts::from_legacy(4, 9), Shifts { smt_bits: 0, package_shift: 2 });
    }

    proptest::proptest! {
        /// Decoding is lossless: the fields put back together give the id.
        #[test]
        fn locate_round_trips(smt in 0u32..4, core in 0u32..6, apic_id in 0u32..1 << 16) {
            let shifts = Shifts { smt_bits: smt, package_shift: smt + core };
            let place = shifts.locate(apic_id);
            let rebuilt = (place.package << shifts.package_shift) | (place.core << smt) | place.thread;
            proptest::prop_assert_eq!(rebuilt, apic_id);
        }
    }
}
