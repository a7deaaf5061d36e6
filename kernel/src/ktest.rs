//! The in-kernel test runner.
//!
//! Tests are registered with [`ktest!`] into the `.ktests` link section and
//! selected by the `test=` command-line word. Each prints one line, and the
//! run closes with `ktest: P passed, F failed` and leaves QEMU through
//! `isa-debug-exit` with the success or failure code. The host harness
//! (`runner/src/report.rs`) checks these lines; a panic or a hang leaves no
//! summary, which the harness counts as failure.

use alloc::{string::String, vec::Vec};

use orrery_cmdline::Selection;

use crate::arch::{qemu, tsc};

/// Why a test failed.
pub type TestResult = Result<(), String>;

/// One registered test.
pub struct KernelTest {
    /// Name used to select it and in its report line.
    pub name: &'static str,
    /// The test.
    pub function: fn() -> TestResult,
    /// Run only when selected by name (tests of the harness itself).
    pub explicit_only: bool,
}

unsafe extern "C" {
    static __ktests_start: u8;
    static __ktests_end: u8;
}

/// Every registered test, sorted by name.
pub fn all_tests() -> Vec<&'static KernelTest> {
    // SAFETY: the linker script collects the `KernelTest` statics that
    // `ktest!` emits between these symbols; they are properly aligned and
    // immutable.
    let tests = unsafe {
        let start = (&raw const __ktests_start).cast::<KernelTest>();
        let end = (&raw const __ktests_end).cast::<KernelTest>();
        let count = (end as usize - start as usize) / core::mem::size_of::<KernelTest>();
        core::slice::from_raw_parts(start, count)
    };
    let mut tests: Vec<_> = tests.iter().collect();
    tests.sort_by_key(|test| test.name);
    tests
}

/// Registers a kernel test: `ktest!(name, || { ...; Ok(()) })`.
#[macro_export]
macro_rules! ktest {
    ($name:ident, $function:expr) => {
        $crate::ktest!(@register $name, $function, false);
    };
    (explicit $name:ident, $function:expr) => {
        $crate::ktest!(@register $name, $function, true);
    };
    (@register $name:ident, $function:expr, $explicit:expr) => {
        #[allow(non_upper_case_globals, reason = "the static is named after the test")]
        #[used]
        #[unsafe(link_section = ".ktests")]
        static $name: $crate::ktest::KernelTest =
            $crate::ktest::KernelTest { name: stringify!($name), function: $function, explicit_only: $explicit };
    };
}

/// Fails the test unless `condition` holds.
#[macro_export]
macro_rules! check {
    ($condition:expr) => {
        if !$condition {
            return Err(alloc::format!("{}:{}: check failed: {}", file!(), line!(), stringify!($condition)));
        }
    };
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(alloc::format!("{}:{}: {}", file!(), line!(), alloc::format!($($message)+)));
        }
    };
}

/// Fails the test unless the two values are equal, showing both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(alloc::format!(
                "{}:{}: {} == {} failed: {:?} != {:?}",
                file!(), line!(), stringify!($left), stringify!($right), left, right
            ));
        }
    }};
    ($left:expr, $right:expr, $($message:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(alloc::format!(
                "{}:{}: {:?} != {:?}: {}", file!(), line!(), left, right, alloc::format!($($message)+)
            ));
        }
    }};
}

/// Longest a test may take before it is declared hung.
const TEST_TIMEOUT_SECONDS: u64 = 60;

/// Runs one test in a kernel thread of its own, so a hang is caught: after
/// the time-out the runner prints every thread's state and fails the run.
fn run_one(test: &'static KernelTest) -> TestResult {
    use alloc::sync::Arc;
    let result: Arc<crate::sync::SpinLock<Option<TestResult>>> = Arc::new(crate::sync::SpinLock::new(None));
    let slot = result.clone();
    let handle = match crate::task::Builder::new(test.name).spawn(move || {
        let outcome = (test.function)();
        *slot.lock() = Some(outcome);
    }) {
        Ok(handle) => handle,
        Err(error) => return Err(alloc::format!("cannot start the test thread: {error:?}")),
    };
    let deadline = tsc::now() + tsc::hz() * TEST_TIMEOUT_SECONDS;
    match handle.join_until(deadline) {
        Some(crate::task::ExitStatus::Exited(_)) => {
            result.lock().take().unwrap_or_else(|| Err("the test thread ended without a result".into()))
        }
        Some(status) => Err(alloc::format!("the test thread ended with {status:?}")),
        None => {
            crate::println!("ktest: {} ... FAILED: hung for {TEST_TIMEOUT_SECONDS} s; threads:", test.name);
            crate::task::dump_threads();
            crate::println!("ktest: 0 passed, 1 failed");
            qemu::exit(qemu::ExitCode::Failure)
        }
    }
}

/// Runs the selected tests and prints the report; returns the exit code.
pub fn run(selection: Selection<'_>) -> qemu::ExitCode {
    let tests = all_tests();
    let mut unknown: Vec<&str> = selection.names().filter(|name| !tests.iter().any(|t| t.name == *name)).collect();
    unknown.dedup();
    let chosen: Vec<_> = tests
        .into_iter()
        .filter(|test| {
            if test.explicit_only { selection.names().any(|n| n == test.name) } else { selection.selects(test.name) }
        })
        .collect();
    crate::println!("ktest: running {} tests", chosen.len() + unknown.len());
    let mut passed = 0;
    let mut failed = 0;
    for name in unknown {
        crate::println!("ktest: {name} ... FAILED: no test has this name");
        failed += 1;
    }
    for test in chosen {
        let frames_before = crate::mm::frames::free_count();
        let start = tsc::now();
        let result = run_one(test);
        let micros = tsc::ticks_to_nanos(tsc::now() - start) / 1000;
        match result {
            Ok(()) => {
                passed += 1;
                crate::println!("ktest: {} ... ok ({micros} us)", test.name);
            }
            Err(message) => {
                failed += 1;
                crate::println!("ktest: {} ... FAILED: {message}", test.name);
            }
        }
        let frames_after = crate::mm::frames::free_count();
        if frames_after < frames_before {
            log::debug!("{}: {} frames fewer free afterwards", test.name, frames_before - frames_after);
        }
    }
    crate::println!("ktest: {passed} passed, {failed} failed");
    if failed == 0 { qemu::ExitCode::Success } else { qemu::ExitCode::Failure }
}
