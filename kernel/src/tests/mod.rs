//! In-kernel tests, one file per subsystem. They run in QEMU when the command
//! line says `test` (see [`crate::ktest`]).

mod debug;
mod foundation;
mod futures;
mod fuzz;
mod processes;
mod sharing;
mod tasks;
mod tlb;
