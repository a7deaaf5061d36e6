//! Boots the kernel and checks the task system from the outside: the whole
//! in-kernel suite under the round-robin policy too, sleep accuracy with an
//! exact clock, and the scheduling trace the runner turns into a timeline.

use orrery_runner::{Machine, Outcome, QemuConfig, trace::Trace};

fn boot(smp: &str, cmdline: &str, icount: bool) -> Outcome {
    QemuConfig { icount, ..QemuConfig::for_tests(Machine::Q35, smp, cmdline) }.run_for_tests()
}

#[test]
fn every_kernel_test_passes_under_round_robin() {
    let outcome = boot("4", "test sched=rr slice_us=2000", false);
    outcome.assert_all_passed();
    assert!(outcome.output.iter().any(|line| line.contains("round-robin policy, 2000 us slices")));
}

#[test]
fn sleep_is_accurate_with_an_exact_clock() {
    // Under -icount the guest TSC counts instructions, so lateness is exact
    // and the in-kernel test applies its tight bound (50 us).
    let outcome = boot("1", "test=sleep_until_deadline_is_accurate icount", true);
    outcome.assert_all_passed();
    let line = outcome.output.iter().find(|line| line.contains("worst sleep lateness")).expect("lateness reported");
    assert!(line.ends_with("(icount)"), "{line}");
}

#[test]
fn the_trace_shows_two_threads_taking_turns() {
    let outcome = boot("4", "test=yield_alternates_on_one_cpu trace", false);
    outcome.assert_all_passed();
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
