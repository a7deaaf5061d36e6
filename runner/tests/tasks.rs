//! Boots the kernel and checks the task system from the outside: the whole
//! in-kernel suite under the round-robin policy too, sleep accuracy with an
//! exact clock, and the scheduling trace the runner turns into a timeline.

use std::time::Duration;

use orrery_runner::{Machine, Outcome, QemuConfig, TestReport, trace::Trace};

fn boot(smp: &str, cmdline: &str, icount: bool) -> Outcome {
    let config = QemuConfig {
        machine: Machine::Q35,
        smp: smp.into(),
        cmdline: cmdline.into(),
        icount,
        timeout: Some(Duration::from_secs(600)),
        ..QemuConfig::default()
    };
    config.run().unwrap_or_else(|error| panic!("cannot run QEMU: {error}"))
}

fn assert_all_pass(outcome: &Outcome) -> TestReport {
    let report = TestReport::parse(&outcome.output);
    assert!(
        report.all_passed() && outcome.succeeded(),
        "{}; failures: {:?}\n--- serial output ---\n{}",
        outcome.describe(),
        report.failures().collect::<Vec<_>>(),
        outcome.output.join("\n")
    );
    report
}

#[test]
fn every_kernel_test_passes_under_round_robin() {
    let outcome = boot("4", "test sched=rr slice_us=2000", false);
    assert_all_pass(&outcome);
    assert!(outcome.output.iter().any(|line| line.contains("round-robin policy, 2000 us slices")));
}

#[test]
fn sleep_is_accurate_with_an_exact_clock() {
    // Under -icount the guest TSC counts instructions, so lateness is exact
    // and the in-kernel test applies its tight bound (50 us).
    let outcome = boot("1", "test=sleep_until_deadline_is_accurate icount", true);
    assert_all_pass(&outcome);
    let line = outcome.output.iter().find(|line| line.contains("worst sleep lateness")).expect("lateness reported");
    assert!(line.ends_with("(icount)"), "{line}");
}

#[test]
fn the_trace_shows_two_threads_taking_turns() {
    let outcome = boot("4", "test=yield_alternates_on_one_cpu trace", false);
    assert_all_pass(&outcome);
    let trace = Trace::parse(&outcome.output).expect("a trace block");
    assert_eq!(trace.bad_lines, 0);
    assert!(trace.tsc_hz > 0);
    let yielders: Vec<u64> = trace.names.iter().filter(|(_, name)| name == "yielder").map(|(id, _)| *id).collect();
    assert_eq!(yielders.len(), 2, "names: {:?}", trace.names);
    // The two yielders hand the CPU to each other directly, many times.
    let handovers = trace
        .events
        .iter()
        .filter(|event| {
            event.kind == orrery_trace::EventKind::Switch
                && yielders.contains(&event.a)
                && yielders.contains(&event.b)
                && event.a != event.b
        })
        .count();
    assert!(handovers >= 90, "only {handovers} direct switches between the yielders");
    let json = trace.to_json().expect("json");
    assert!(json.contains("\"yielder\""), "thread names reach the timeline");
}
