//! Labs as JUnit XML, for CI systems: a lab is a test suite, each
//! expectation a test case, the failed check's detail its message.

use std::fmt::Write as _;

use foodlab_lab::LabReport;

/// The document for labs run (name, report) and labs that could not run
/// (name, error): the latter are one errored case each.
pub fn document(reports: &[(String, LabReport)], errors: &[(String, String)]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = reports
        .iter()
        .map(|(_, r)| r.results.checks.len())
        .sum::<usize>()
        + errors.len();
    let failures: usize = reports
        .iter()
        .map(|(_, r)| r.results.checks.iter().filter(|c| !c.passed).count())
        .sum();
    let _ = writeln!(
        xml,
        "<testsuites name=\"foodlab\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{}\">",
        errors.len()
    );
    for (name, report) in reports {
        let checks = &report.results.checks;
        let failed = checks.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{:.3}\">",
            escape(name),
            checks.len(),
            report.elapsed_seconds
        );
        let _ = writeln!(
            xml,
            "    <properties><property name=\"transport\" value=\"{}\"/><property name=\"verdict\" value=\"{:?}\"/></properties>",
            report.transport.part(),
            report.verdict
        );
        for check in checks {
            let case = format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(name),
                escape(&check.name)
            );
            if check.passed {
                let _ = writeln!(xml, "{case}/>");
            } else {
                let _ = writeln!(
                    xml,
                    "{case}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(&check.detail),
                    escape(&check.detail)
                );
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    for (name, error) in errors {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{0}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"{0}\" name=\"lab runs\">\n      <error message=\"{1}\">{1}</error>\n    </testcase>\n  </testsuite>",
            escape(name),
            escape(error)
        );
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("p50 < 5 & \"x\"\u{1}"),
            "p50 &lt; 5 &amp; &quot;x&quot; "
        );
    }
}
