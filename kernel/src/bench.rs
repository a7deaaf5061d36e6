//! Benchmarks that run inside the kernel and print figures.
//!
//! Run with `cargo run -- --bench [NAMES]`. With one CPU the runner boots
//! QEMU with `-icount shift=0,sleep=off` and adds `icount` to the command
//! line: the TSC then advances once per guest instruction, so every figure
//! is an exact instruction count. Cross-CPU benchmarks need several CPUs and
//! run in plain TCG, where figures are emulated wall time in nanoseconds.
//! Each prints `kbench: NAME: VALUE UNIT (detail)`.

use alloc::{format, string::String, vec::Vec};

use orrery_cmdline::Selection;

use crate::arch::{qemu, tsc};

/// One registered benchmark.
pub struct KernelBench {
    /// Name used to select it and in its report line.
    pub name: &'static str,
    /// Runs it and returns the report (value, unit, detail), or why it
    /// could not run here.
    pub function: fn(&Context) -> Result<Figure, String>,
}

/// What a benchmark knows of how it runs.
pub struct Context {
    /// The TSC counts instructions.
    pub icount: bool,
    /// The running benchmark's name.
    pub name: &'static str,
}

impl Context {
    /// The unit of a TSC delta in this run.
    pub fn tick_unit(&self) -> &'static str {
        if self.icount { "instructions" } else { "TSC ticks" }
    }

    /// Prints a further figure of the running benchmark, as
    /// `kbench: NAME/LABEL: ...`.
    pub fn extra(&self, label: &str, figure: &Figure) {
        crate::println!("kbench: {}/{label}: {:.1} {} ({})", self.name, figure.value, figure.unit, figure.detail);
    }

    /// Turns a TSC delta per operation into a figure in this run's unit:
    /// instructions under icount, nanoseconds otherwise.
    pub fn per_operation(&self, ticks: u64, operations: u64, detail: String) -> Figure {
        if self.icount {
            Figure { value: ticks as f64 / operations as f64, unit: "instructions/op", detail }
        } else {
            Figure {
                value: tsc::ticks_to_nanos(ticks) as f64 / operations as f64,
                unit: "ns/op (TCG wall time)",
                detail,
            }
        }
    }
}

/// A benchmark's result.
pub struct Figure {
    /// The number.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// How it was measured, and what the path contains.
    pub detail: String,
}

unsafe extern "C" {
    static __benches_start: u8;
    static __benches_end: u8;
}

/// Registers a benchmark: `kbench!(name, |context| { ... })`.
#[macro_export]
macro_rules! kbench {
    ($name:ident, $function:expr) => {
        #[allow(non_upper_case_globals, reason = "the static is named after the benchmark")]
        #[used]
        #[unsafe(link_section = ".kbenches")]
        static $name: $crate::bench::KernelBench =
            $crate::bench::KernelBench { name: stringify!($name), function: $function };
    };
}

fn all_benches() -> Vec<&'static KernelBench> {
    // SAFETY: the linker script gathers the `KernelBench` statics between
    // these symbols.
    let benches = unsafe {
        let start = (&raw const __benches_start).cast::<KernelBench>();
        let end = (&raw const __benches_end).cast::<KernelBench>();
        core::slice::from_raw_parts(start, (end as usize - start as usize) / core::mem::size_of::<KernelBench>())
    };
    let mut benches: Vec<_> = benches.iter().collect();
    benches.sort_by_key(|bench| bench.name);
    benches
}

/// Runs the selected benchmarks and prints their figures; returns the exit code.
pub fn run(selection: Selection<'_>) -> qemu::ExitCode {
    let icount = crate::OPTIONS_ICOUNT.load(core::sync::atomic::Ordering::Relaxed);
    let benches = all_benches();
    let mut failed = false;
    for name in selection.names() {
        if !benches.iter().any(|bench| bench.name == name) {
            crate::println!("kbench: {name}: no benchmark has this name");
            failed = true;
        }
    }
    crate::println!(
        "kbench: clock: {} ({} CPUs)",
        if icount { "icount: 1 TSC tick = 1 instruction" } else { "TCG wall time" },
        crate::arch::smp::cpu_count()
    );
    for bench in benches.into_iter().filter(|bench| selection.selects(bench.name)) {
        let context = Context { icount, name: bench.name };
        match (bench.function)(&context) {
            Ok(figure) => {
                crate::println!("kbench: {}: {:.1} {} ({})", bench.name, figure.value, figure.unit, figure.detail)
            }
            Err(why) => crate::println!("kbench: {}: skipped: {why}", bench.name),
        }
    }
    crate::println!("kbench: done");
    if failed { qemu::ExitCode::Failure } else { qemu::ExitCode::Success }
}

/// Median of some samples (sorts them).
pub fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0)
}

/// Formats the figure of a measured path's privileged instructions.
pub fn privileged(list: &[&str]) -> String {
    if list.is_empty() {
        String::from("no privileged instructions")
    } else {
        format!("privileged: {}", list.join(", "))
    }
}
