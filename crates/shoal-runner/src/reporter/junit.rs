//! The run's one JUnit XML file, in pytest's schema.
//!
//! Each worker's pytest builds the `<testcase>` elements itself (so `junit_family`,
//! `junit_logging`, `record_property` and `record_xml_attribute` behave exactly as in pytest);
//! this module assembles them into the `<testsuite>` with the run's totals, and stands in for
//! pytest where a worker died before it could report a test.

use std::{collections::BTreeMap, fs, path::PathBuf, time::Duration};

use quick_xml::escape::escape;
use shoal_protocol::{JunitSettings, Outcome};

use crate::results::Results;

/// The JUnit file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write the JUnit XML file {path}")]
pub struct JunitError {
    path: PathBuf,
    source: std::io::Error,
}

/// Writes the run's results to the file `--junitxml` named.
pub fn write(
    settings: &JunitSettings,
    results: &Results,
    elapsed: Duration,
) -> Result<(), JunitError> {
    let mut stats: BTreeMap<&str, i64> = BTreeMap::new();
    let mut double_failures = 0;
    let mut cases = String::new();
    if let Some(delta) = results.collect_junit() {
        for (key, n) in &delta.stats {
            *stats.entry(key.as_str()).or_default() += n;
        }
        delta.testcases.iter().for_each(|case| cases.push_str(case));
    }
    for record in results.records() {
        match &record.junit {
            Some(delta) => {
                for (key, n) in &delta.stats {
                    *stats.entry(key.as_str()).or_default() += n;
                }
                double_failures += delta.double_failures;
                let retries = retry_elements(record);
                for case in &delta.testcases {
                    cases.push_str(&with_children(case, &retries));
                }
            }
            None => {
                // A test pytest never reported (its worker died): a failure, in pytest's shape.
                let (classname, name) = mangle(&record.nodeid, settings.prefix.as_deref());
                let message = record
                    .reports
                    .iter()
                    .find_map(|r| r.message.as_deref())
                    .unwrap_or("test did not report");
                cases.push_str(&format!(
                    "<testcase classname=\"{}\" name=\"{}\" time=\"0.000\"><failure message=\"{}\">{}</failure></testcase>",
                    escape(&classname),
                    escape(&name),
                    escape(message),
                    escape(message),
                ));
                *stats.entry("failure").or_default() += 1;
            }
        }
    }
    let count = |key: &str| stats.get(key).copied().unwrap_or(0);
    let tests =
        count("passed") + count("failure") + count("skipped") + count("error") - double_failures;
    let mut properties = String::new();
    let mut seen = Vec::new();
    for (name, value) in results.junit_properties() {
        if seen.contains(&(name, value)) {
            continue; // every worker may record the same suite property
        }
        seen.push((name, value));
        properties.push_str(&format!(
            "<property name=\"{}\" value=\"{}\" />",
            escape(name),
            escape(value)
        ));
    }
    if !properties.is_empty() {
        properties = format!("<properties>{properties}</properties>");
    }
    let suites = match &settings.suites_name {
        Some(name) => format!("<testsuites name=\"{}\">", escape(name)),
        None => "<testsuites>".to_owned(),
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>{suites}<testsuite name=\"{}\" errors=\"{}\" failures=\"{}\" skipped=\"{}\" tests=\"{tests}\" time=\"{:.3}\" timestamp=\"{}\" hostname=\"{}\">{properties}{cases}</testsuite></testsuites>",
        escape(&settings.suite_name),
        count("error"),
        count("failure"),
        count("skipped"),
        elapsed.as_secs_f64(),
        escape(&settings.timestamp),
        escape(hostname()),
    );
    let path = PathBuf::from(&settings.path);
    let error = |source| JunitError {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    fs::write(&path, xml).map_err(error)
}

/// Earlier failed attempts, as Maven Surefire records reruns: `flakyFailure` when the test
/// passed in the end, `rerunFailure` when it never did.
fn retry_elements(record: &crate::results::TestRecord) -> String {
    let tag = if record.failed() {
        "rerunFailure"
    } else {
        "flakyFailure"
    };
    let mut out = String::new();
    for attempt in &record.earlier_attempts {
        let failed = attempt
            .reports
            .iter()
            .find(|r| r.outcome == Outcome::Failed);
        let message = failed
            .and_then(|r| r.message.as_deref())
            .unwrap_or("failed");
        let text = failed.and_then(|r| r.text.as_deref()).unwrap_or("");
        out.push_str(&format!(
            "<{tag} message=\"{}\">{}</{tag}>",
            escape(message),
            escape(text)
        ));
    }
    out
}

/// Inserts child elements at the end of a `<testcase>` element.
fn with_children(case: &str, children: &str) -> String {
    if children.is_empty() {
        return case.to_owned();
    }
    if let Some(open) = case
        .strip_suffix("/>")
        .filter(|c| !c.contains("</testcase>"))
    {
        return format!("{}>{children}</testcase>", open.trim_end());
    }
    match case.rfind("</testcase>") {
        Some(at) => format!("{}{children}{}", &case[..at], &case[at..]),
        None => case.to_owned(),
    }
}

/// pytest's `mangle_test_address`: `dir/test_a.py::Cls::test[x]` -> (`dir.test_a.Cls`, `test[x]`).
fn mangle(nodeid: &str, prefix: Option<&str>) -> (String, String) {
    let (path, params) = match nodeid.find('[') {
        Some(at) => nodeid.split_at(at),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    names[0] = names[0].replace('/', ".");
    if let Some(stripped) = names[0].strip_suffix(".py") {
        names[0] = stripped.to_owned();
    }
    let name = format!("{}{params}", names.pop().unwrap_or_default());
    let mut classname = names.join(".");
    if let Some(prefix) = prefix {
        classname = format!("{prefix}.{classname}");
    }
    (classname, name)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_mangle_like_pytest() {
        assert_eq!(
            mangle("tests/test_a.py::TestX::test_y[1-a::b]", None),
            ("tests.test_a.TestX".into(), "test_y[1-a::b]".into())
        );
        assert_eq!(
            mangle("test_a.py::test_z", Some("pre")),
            ("pre.test_a".into(), "test_z".into())
        );
    }
}
