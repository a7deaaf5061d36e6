//! Memory management: physical frames, the kernel heap and kernel stacks.
//!
//! Page tables and address spaces are mechanism and live in
//! [`crate::arch::paging`]; this module owns the policies on top: where
//! frames come from, how the heap grows, how stacks are laid out.

pub mod frames;
pub mod heap;
pub mod stacks;

/// Frames held as capacity that is kept once grown: the heap's arenas and
/// the kernel half's page tables. Free frames plus these stay constant over
/// work that leaks nothing, which is what the leak tests check.
pub fn capacity_frames() -> u64 {
    heap::claimed_frames() + crate::arch::paging::kernel_table_frames()
}
