//! Boots the kernel in QEMU and checks the foundation: every test passes on
//! 1, 2, 4, 8 (SMT) and 16 CPUs, the topology the kernel reports matches
//! what QEMU was asked for, faults are reported as such, and the harness
//! notices failures.

use orrery_runner::{Machine, Outcome, QemuConfig, TestReport};

fn boot(machine: Machine, smp: &str, cmdline: &str) -> Outcome {
    QemuConfig::for_tests(machine, smp, cmdline).run_for_tests()
}

/// `(cpu, apic id, package, core, thread)` from the topology test's lines.
fn reported_cpus(outcome: &Outcome) -> Vec<(u32, u32, u32, u32, u32)> {
    outcome
        .output
        .iter()
        .filter_map(|line| line.strip_prefix("ktest-info: cpu "))
        .map(|rest| {
            let numbers: Vec<u32> = rest.split_whitespace().filter_map(|word| word.parse().ok()).collect();
            (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4])
        })
        .collect()
}

#[test]
fn every_kernel_test_passes_on_four_cpus_q35() {
    let outcome = boot(Machine::Q35, "4", "test");
    let report = outcome.assert_all_passed();
    assert!(report.outcomes.len() >= 8, "too few tests ran: {:?}", report.outcomes);
    assert_eq!(reported_cpus(&outcome).len(), 4);
}

#[test]
fn every_kernel_test_passes_on_one_cpu() {
    let outcome = boot(Machine::Microvm, "1", "test");
    outcome.assert_all_passed();
    assert_eq!(reported_cpus(&outcome), vec![(0, 0, 0, 0, 0)]);
}

#[test]
fn every_kernel_test_passes_on_two_cpus() {
    let outcome = boot(Machine::Microvm, "2", "test");
    outcome.assert_all_passed();
    assert_eq!(reported_cpus(&outcome).len(), 2);
}

#[test]
fn smt_topology_is_found() {
    let outcome = boot(Machine::Q35, "8,sockets=1,cores=4,threads=2", "test");
    outcome.assert_all_passed();
    let cpus = reported_cpus(&outcome);
    assert_eq!(cpus.len(), 8);
    for (cpu, apic_id, package, core, thread) in cpus {
        assert_eq!(package, 0, "cpu{cpu}");
        assert_eq!(core, apic_id / 2, "cpu{cpu}: two threads per core");
        assert_eq!(thread, apic_id % 2, "cpu{cpu}");
    }
}

#[test]
fn sixteen_cpus_and_two_packages() {
    let outcome = boot(Machine::Q35, "16,sockets=2,cores=8,threads=1", "test");
    outcome.assert_all_passed();
    let cpus = reported_cpus(&outcome);
    assert_eq!(cpus.len(), 16);
    assert_eq!(cpus.iter().filter(|cpu| cpu.2 == 1).count(), 8, "8 CPUs in package 1: {cpus:?}");
}

#[test]
fn a_failing_test_fails_the_run() {
    let outcome = boot(Machine::Microvm, "2", "test=harness_must_fail");
    let report = TestReport::parse(&outcome.output);
    assert!(!outcome.succeeded(), "the kernel reported success: {}", outcome.describe());
    assert!(!report.all_passed());
    let failure = report.outcome("harness_must_fail").expect("the failing test reported");
    assert!(!failure.passed);
    assert!(failure.detail.contains("fails on purpose"), "{failure:?}");
    assert_eq!(report.summary, Some((0, 1)));
}

#[test]
fn an_unknown_test_name_is_an_error() {
    let outcome = boot(Machine::Microvm, "1", "test=no_such_test");
    let report = TestReport::parse(&outcome.output);
    assert!(!outcome.succeeded());
    assert!(report.outcome("no_such_test").is_some_and(|o| o.detail.contains("no test has this name")));
}

#[test]
fn bad_command_line_words_are_reported_and_ignored() {
    let outcome = boot(Machine::Microvm, "1", "frobnicate sched=lottery test=cpus_online_with_topology");
    outcome.assert_all_passed();
    let text = outcome.output.join("\n");
    assert!(text.contains("command line word `frobnicate`: unknown setting"), "{text}");
    assert!(text.contains("command line word `sched=lottery`: value not accepted"), "{text}");
}

#[test]
fn too_little_memory_for_the_cpus_is_reported_not_a_panic() {
    // 5 MiB boots one CPU but not the stacks of eight; 3 MiB holds the
    // kernel image but not its page tables.
    for (memory, cpus, needle) in [("5M", "8", "8 CPUs need at least"), ("3M", "1", "page tables need at least")] {
        let config = QemuConfig { memory: memory.into(), ..QemuConfig::for_tests(Machine::Q35, cpus, "") };
        let outcome = config.run_for_tests();
        let text = outcome.output.join("\n");
        assert!(!outcome.succeeded() && !outcome.timed_out(), "{memory}: {}", outcome.describe());
        assert!(text.contains("not enough memory") && text.contains(needle), "{memory}: {text}");
        assert!(!text.contains("KERNEL PANIC"), "{memory}: {text}");
    }
}

fn assert_death(test: &str, expected: &[&str]) {
    let outcome = boot(Machine::Microvm, "2", &format!("test={test}"));
    assert!(!outcome.succeeded() && !outcome.timed_out(), "{test}: {}", outcome.describe());
    let text = outcome.output.join("\n");
    for needle in expected {
        assert!(text.contains(needle), "{test}: output lacks {needle:?}:\n{text}");
    }
}

#[test]
fn faults_are_reported_with_cpu_kind_address_and_registers() {
    assert_death(
        "die_by_page_fault",
        &[
            "CPU EXCEPTION on cpu",
            ": #PF page fault in kernel mode",
            "address 0x10: kernel read, page not present",
            "rip=0x",
            "cr3=0x",
        ],
    );
    assert_death("die_by_general_protection", &["#GP general protection in kernel mode", "rax=0x8000000000000000"]);
    assert_death("die_by_invalid_opcode", &["#UD invalid opcode in kernel mode", "rip=0x"]);
    assert_death("die_by_panic", &["KERNEL PANIC on cpu", "panicking on purpose"]);
}

#[test]
fn stack_overflow_hits_the_guard_page_and_double_faults_on_its_own_stack() {
    assert_death(
        "die_by_stack_overflow",
        &["#DF double fault in kernel mode", "kernel stack overflow: guard page hit at"],
    );
}
