//! Reading the kernel's test report from its serial output.
//!
//! The kernel's test mode prints `ktest: running N tests`, then one line per
//! test (`ktest: NAME ... ok` or `ktest: NAME ... FAILED: why`), then
//! `ktest: P passed, F failed`. A report is only trusted when the summary is
//! there and agrees with the lines before it.

/// The verdict on one in-kernel test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// True when it passed.
    pub passed: bool,
    /// The failure message, or the text after `ok`.
    pub detail: String,
}

/// A whole test run as the kernel reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestReport {
    /// Tests the kernel said it would run.
    pub planned: Option<usize>,
    /// Every test line, in order.
    pub outcomes: Vec<TestOutcome>,
    /// The closing `P passed, F failed` line, if it came.
    pub summary: Option<(usize, usize)>,
}

impl TestReport {
    /// Parses the serial output of a test boot.
    pub fn parse(lines: &[String]) -> Self {
        let mut report = TestReport::default();
        for line in lines {
            let Some(rest) = line.split_once("ktest: ").map(|(_, rest)| rest) else { continue };
            if let Some(count) = rest.strip_prefix("running ").and_then(|r| r.strip_suffix(" tests")) {
                report.planned = count.parse().ok();
            } else if let Some((name, verdict)) = rest.split_once(" ... ") {
                let passed = verdict.starts_with("ok");
                let detail = verdict.strip_prefix("ok").or_else(|| verdict.strip_prefix("FAILED:")).unwrap_or(verdict);
                report.outcomes.push(TestOutcome { name: name.to_string(), passed, detail: detail.trim().to_string() });
            } else if let Some((passed, failed)) = rest.split_once(" passed, ")
                && let (Ok(passed), Some(Ok(failed))) = (passed.parse(), failed.strip_suffix(" failed").map(str::parse))
            {
                report.summary = Some((passed, failed));
            }
        }
        report
    }

    /// The failed tests.
    pub fn failures(&self) -> impl Iterator<Item = &TestOutcome> {
        self.outcomes.iter().filter(|outcome| !outcome.passed)
    }

    /// True when the run completed, every planned test reported, the summary
    /// agrees with the lines, and nothing failed.
    pub fn all_passed(&self) -> bool {
        let passed = self.outcomes.iter().filter(|outcome| outcome.passed).count();
        let failed = self.outcomes.len() - passed;
        self.summary == Some((passed, failed)) && failed == 0 && self.planned == Some(self.outcomes.len())
    }

    /// The outcome of the test called `name`.
    pub fn outcome(&self, name: &str) -> Option<&TestOutcome> {
        self.outcomes.iter().find(|outcome| outcome.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn parses_a_complete_run() {
        let report = TestReport::parse(&lines(
            "noise\n[ 0.1 cpu0] INFO ktest: running 2 tests\nktest: a ... ok (12 us)\nktest: b ... FAILED: 1 != 2\nktest: 1 passed, 1 failed\n",
        ));
        assert_eq!(report.planned, Some(2));
        assert_eq!(report.summary, Some((1, 1)));
        assert_eq!(report.outcome("a").unwrap().detail, "(12 us)");
        assert_eq!(report.outcome("b").unwrap().detail, "1 != 2");
        assert!(!report.all_passed());
        assert_eq!(report.failures().count(), 1);
    }

    #[test]
    fn a_missing_summary_or_test_is_not_a_pass() {
        let cut_short = TestReport::parse(&lines("ktest: running 2 tests\nktest: a ... ok\n"));
        assert!(!cut_short.all_passed());
        let lying = TestReport::parse(&lines("ktest: running 1 tests\nktest: a ... ok\nktest: 2 passed, 0 failed\n"));
        assert!(!lying.all_passed());
        let good = TestReport::parse(&lines("ktest: running 1 tests\nktest: a ... ok\nktest: 1 passed, 0 failed\n"));
        assert!(good.all_passed());
    }
}
