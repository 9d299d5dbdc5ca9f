//! Labs as JUnit XML, for CI systems: a lab is a test suite, each
//! expectation a test case, the failed check's detail its message.

use std::time::Duration;

use anyhow::Context;
use foodlab_lab::LabReport;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

/// The document for labs run (name, report) and labs that could not run
/// (name, error): the latter are one errored case each.
pub fn document(
    reports: &[(String, LabReport)],
    errors: &[(String, String)],
) -> anyhow::Result<String> {
    let mut document = Report::new("foodlab");
    for (name, report) in reports {
        let mut suite = TestSuite::new(name);
        suite
            .set_time(Duration::try_from_secs_f64(report.elapsed_seconds).unwrap_or_default())
            .add_properties([
                Property::new("transport", report.transport.part()),
                Property::new("verdict", report.verdict.to_string()),
            ]);
        for check in &report.results.checks {
            let status = if check.passed {
                TestCaseStatus::success()
            } else {
                not_passed(NonSuccessKind::Failure, &check.detail)
            };
            let mut case = TestCase::new(&check.name, status);
            case.set_classname(name);
            suite.add_test_case(case);
        }
        document.add_test_suite(suite);
    }
    for (name, error) in errors {
        let mut case = TestCase::new("lab runs", not_passed(NonSuccessKind::Error, error));
        case.set_classname(name);
        let mut suite = TestSuite::new(name);
        suite.add_test_case(case);
        document.add_test_suite(suite);
    }
    document
        .to_string()
        .context("the labs cannot be written as JUnit XML")
}

/// A failed or errored case: `why` as its message and its text.
fn not_passed(kind: NonSuccessKind, why: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    status.set_message(why).set_description(why);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use foodlab_lab::results::{Check, LabResults};
    use foodlab_lab::{Transport, Verdict};

    fn lab(checks: Vec<Check>, verdict: Verdict) -> LabReport {
        LabReport {
            transport: Transport::Rabbitmq,
            results: LabResults {
                checks,
                ..LabResults::default()
            },
            chaos: Vec::new(),
            verdict,
            elapsed_seconds: 12.3456,
            series: Default::default(),
            unreleased: Vec::new(),
        }
    }

    #[test]
    fn a_lab_is_a_suite_its_checks_the_cases_and_a_lab_that_could_not_run_an_error() {
        let reports = [(
            "async <1>".to_owned(),
            lab(
                vec![
                    Check {
                        name: "allOrdersTerminal".into(),
                        passed: true,
                        detail: "100 of 100".into(),
                    },
                    Check {
                        name: "latency".into(),
                        passed: false,
                        detail: "p50 < 5 & \"x\"\u{1}".into(),
                    },
                ],
                Verdict::Fail,
            ),
        )];
        let errors = [("broken".to_owned(), "invalid lab: orders".to_owned())];
        assert_eq!(
            document(&reports, &errors).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"foodlab\" tests=\"3\" skipped=\"0\" failures=\"1\" errors=\"1\">\n\
             \x20   <testsuite name=\"async &lt;1&gt;\" tests=\"2\" skipped=\"0\" errors=\"0\" failures=\"1\" time=\"12.346\">\n\
             \x20       <properties>\n\
             \x20           <property name=\"transport\" value=\"async-rabbitmq\"/>\n\
             \x20           <property name=\"verdict\" value=\"Fail\"/>\n\
             \x20       </properties>\n\
             \x20       <testcase name=\"allOrdersTerminal\" classname=\"async &lt;1&gt;\"/>\n\
             \x20       <testcase name=\"latency\" classname=\"async &lt;1&gt;\">\n\
             \x20           <failure message=\"p50 &lt; 5 &amp; &quot;x&quot;\">p50 &lt; 5 &amp; &quot;x&quot;</failure>\n\
             \x20       </testcase>\n\
             \x20   </testsuite>\n\
             \x20   <testsuite name=\"broken\" tests=\"1\" skipped=\"0\" errors=\"1\" failures=\"0\">\n\
             \x20       <testcase name=\"lab runs\" classname=\"broken\">\n\
             \x20           <error message=\"invalid lab: orders\">invalid lab: orders</error>\n\
             \x20       </testcase>\n\
             \x20   </testsuite>\n\
             </testsuites>\n"
        );
    }
}
