//! The run's one JUnit XML file, in pytest's schema.
//!
//! Each worker's pytest builds the `<testcase>` elements itself (so `junit_family`,
//! `junit_logging`, `record_property` and `record_xml_attribute` behave exactly as in pytest);
//! this module assembles them into the `<testsuite>` with the run's totals, and stands in for
//! pytest where a worker died before it could report a test.

use std::{collections::BTreeMap, fs, io, path::PathBuf, time::Duration};

use quick_xml::{
    events::{BytesDecl, BytesText, Event},
    Writer,
};
use shoal_protocol::{JunitSettings, Outcome};

use crate::{
    results::Results,
    shard::manifest::{Manifest, PROPERTY},
};

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
    manifest: Option<&Manifest>,
) -> Result<(), JunitError> {
    let path = PathBuf::from(&settings.path);
    let error = |source| JunitError {
        path: path.clone(),
        source,
    };
    let xml = document(settings, results, elapsed, manifest).map_err(error)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(error)?;
    }
    fs::write(&path, xml).map_err(error)
}

/// The whole file: pytest's `<testcase>` elements (with earlier attempts added) and ours for
/// the tests pytest never reported, inside the `<testsuite>` with the run's totals.
fn document(
    settings: &JunitSettings,
    results: &Results,
    elapsed: Duration,
    manifest: Option<&Manifest>,
) -> io::Result<Vec<u8>> {
    let mut stats: BTreeMap<&str, i64> = BTreeMap::new();
    let mut double_failures = 0;
    let mut cases = Writer::new(Vec::new());
    if let Some(delta) = results.collect_junit() {
        for (key, n) in &delta.stats {
            *stats.entry(key.as_str()).or_default() += n;
        }
        for case in &delta.testcases {
            cases.get_mut().extend_from_slice(case.as_bytes());
        }
    }
    for record in results.records() {
        match &record.junit {
            Some(delta) => {
                for (key, n) in &delta.stats {
                    *stats.entry(key.as_str()).or_default() += n;
                }
                double_failures += delta.double_failures;
                let retries = retry_elements(record)?;
                let verdict = results.verdict_of(record.index);
                for case in &delta.testcases {
                    let case = with_children(case, &retries);
                    let case = match verdict {
                        Some(verdict) => with_property(&case, TRIAGE_PROPERTY, verdict.name()),
                        None => case,
                    };
                    cases.get_mut().extend_from_slice(case.as_bytes());
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
                cases
                    .create_element("testcase")
                    .with_attributes([
                        ("classname", classname.as_str()),
                        ("name", &name),
                        ("time", "0.000"),
                    ])
                    .write_inner_content(|case| {
                        if let Some(verdict) = results.verdict_of(record.index) {
                            case.create_element("properties")
                                .write_inner_content(|list| {
                                    list.create_element("property")
                                        .with_attributes([
                                            ("name", TRIAGE_PROPERTY),
                                            ("value", verdict.name()),
                                        ])
                                        .write_empty()
                                        .map(drop)
                                })?;
                        }
                        text_element(case, "failure", message, message).map(drop)
                    })?;
                *stats.entry("failure").or_default() += 1;
            }
        }
    }
    let count = |key: &str| stats.get(key).copied().unwrap_or(0);
    let tests =
        count("passed") + count("failure") + count("skipped") + count("error") - double_failures;
    let mut properties: Vec<(&str, &str)> = Vec::new();
    for (name, value) in results.junit_properties() {
        // Every worker may record the same suite property.
        if !properties.contains(&(name, value)) {
            properties.push((name, value));
        }
    }
    let manifest = manifest.map(|m| serde_json::to_string(m).expect("JSON serializes"));
    if let Some(manifest) = &manifest {
        properties.push((PROPERTY, manifest));
    }
    let mut xml = Writer::new(Vec::new());
    xml.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
    let suites = xml.create_element("testsuites");
    let suites = match &settings.suites_name {
        Some(name) => suites.with_attribute(("name", name.as_str())),
        None => suites,
    };
    let totals = [
        ("errors", count("error")),
        ("failures", count("failure")),
        ("skipped", count("skipped")),
        ("tests", tests),
    ]
    .map(|(key, n)| (key, n.to_string()));
    let time = format!("{:.3}", elapsed.as_secs_f64());
    let host = hostname();
    suites.write_inner_content(|suites| {
        suites
            .create_element("testsuite")
            .with_attribute(("name", settings.suite_name.as_str()))
            .with_attributes(totals.iter().map(|(key, n)| (*key, n.as_str())))
            .with_attributes([
                ("time", time.as_str()),
                ("timestamp", &settings.timestamp),
                ("hostname", &host),
            ])
            .write_inner_content(|suite| {
                if !properties.is_empty() {
                    suite
                        .create_element("properties")
                        .write_inner_content(|list| {
                            for (name, value) in &properties {
                                list.create_element("property")
                                    .with_attributes([("name", *name), ("value", *value)])
                                    .write_empty()?;
                            }
                            Ok(())
                        })?;
                }
                suite.get_mut().extend_from_slice(cases.get_ref());
                Ok(())
            })
            .map(drop)
    })?;
    Ok(xml.into_inner())
}

/// `<tag message="...">text</tag>`.
fn text_element<'w>(
    writer: &'w mut Writer<Vec<u8>>,
    tag: &'w str,
    message: &str,
    text: &str,
) -> io::Result<&'w mut Writer<Vec<u8>>> {
    writer
        .create_element(tag)
        .with_attribute(("message", message))
        .write_text_content(BytesText::new(text))
}

/// Earlier failed attempts, as Maven Surefire records reruns: `flakyFailure` when the test
/// passed in the end, `rerunFailure` when it never did.
fn retry_elements(record: &crate::results::TestRecord) -> io::Result<String> {
    let tag = if record.failed() {
        "rerunFailure"
    } else {
        "flakyFailure"
    };
    let mut out = Writer::new(Vec::new());
    for attempt in &record.earlier_attempts {
        let failed = attempt
            .reports
            .iter()
            .find(|r| r.outcome == Outcome::Failed);
        let message = failed
            .and_then(|r| r.message.as_deref())
            .unwrap_or("failed");
        let text = failed.and_then(|r| r.text.as_deref()).unwrap_or("");
        text_element(&mut out, tag, message, text)?;
    }
    Ok(String::from_utf8_lossy(&out.into_inner()).into_owned())
}

/// Inserts child elements at the end of a `<testcase>` element. One that holds retry elements
/// already (a shard's, merged) is left as it is: pytest writes none of its own.
fn with_children(case: &str, children: &str) -> String {
    if children.is_empty() || case.contains("<flakyFailure") || case.contains("<rerunFailure") {
        return case.to_owned();
    }
    let case = expanded(case);
    match case.rfind("</testcase>") {
        Some(at) => format!("{}{children}{}", &case[..at], &case[at..]),
        None => case,
    }
}

/// A `<testcase .../>` element with an end tag to put children before.
fn expanded(case: &str) -> String {
    match case
        .strip_suffix("/>")
        .filter(|c| !c.contains("</testcase>"))
    {
        Some(open) => format!("{}></testcase>", open.trim_end()),
        None => case.to_owned(),
    }
}

/// The testcase property that carries `--triage`'s verdict.
const TRIAGE_PROPERTY: &str = "shoal.triage";

/// Adds `<property name value/>` to a `<testcase>` element: into its `<properties>`, which
/// pytest writes first, or as a new one in that place. `name` and `value` need no escaping.
fn with_property(case: &str, name: &str, value: &str) -> String {
    let property = format!(r#"<property name="{name}" value="{value}"/>"#);
    if let Some(at) = case.find("<properties>") {
        let at = at + "<properties>".len();
        return format!("{}{property}{}", &case[..at], &case[at..]);
    }
    let case = expanded(case);
    match case.find('>') {
        Some(at) => format!(
            "{}<properties>{property}</properties>{}",
            &case[..=at],
            &case[at + 1..]
        ),
        None => case,
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
    fn a_property_goes_first_in_the_testcase() {
        let property = r#"<property name="p" value="v"/>"#;
        assert_eq!(
            with_property(r#"<testcase name="a" />"#, "p", "v"),
            format!(r#"<testcase name="a"><properties>{property}</properties></testcase>"#)
        );
        assert_eq!(
            with_property(r#"<testcase name="a"><failure/></testcase>"#, "p", "v"),
            format!(
                r#"<testcase name="a"><properties>{property}</properties><failure/></testcase>"#
            )
        );
        assert_eq!(
            with_property(
                r#"<testcase name="a"><properties><property name="q" value="w"/></properties></testcase>"#,
                "p",
                "v"
            ),
            format!(
                r#"<testcase name="a"><properties>{property}<property name="q" value="w"/></properties></testcase>"#
            )
        );
    }

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
