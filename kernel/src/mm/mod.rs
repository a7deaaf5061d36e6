//! Memory management: physical frames, the kernel heap and kernel stacks.
//!
//! Page tables and address spaces are mechanism and live in
//! [`crate::arch::paging`]; this module owns the policies on top: where
//! frames come from, how the heap grows, how stacks are laid out.

pub mod frames;
pub mod heap;
pub mod stacks;
