//! In-kernel benchmarks, one file per subsystem (see [`crate::bench`]).

mod foundation;
mod processes;
mod tasks;
