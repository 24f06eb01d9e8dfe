//! Every metric of the catalogue (`bikeshare_types::metrics::ALL`) is recorded by some code
//! path: it has a typed recording function in `common/types/src/metrics.rs`, and that
//! function is called from the workspace's non-test sources. A metric that nothing records
//! is an alert that can never fire and a dashboard panel that stays empty (as the endpoint
//! metrics once were), so it fails here.
//!
//! The check reads the sources: the catalogue's `defs!` table gives each constant's metric,
//! the recording functions name the constants they record, and a call is
//! `metrics::<function>(` or `m::<function>(` (the two ways the workspace imports the
//! module) in a `.rs` file outside `tests/`, `benches/` and `#[cfg(test)]` modules.
//! `metrics_compliance` checks, by running the commands, that the always-present metrics
//! are really emitted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bikeshare_types::metrics::ALL;

const CATALOGUE: &str = "common/types/src/metrics.rs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text before the first `#[cfg(test)]` (the unit tests at a file's end).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// `IDENT = "name"` entries of the `defs!` table: constant → metric name.
fn constants(catalogue: &str) -> BTreeMap<String, String> {
    catalogue
        .lines()
        .filter_map(|l| {
            let (ident, rest) = l.trim().split_once(" = \"")?;
            let name = rest.split('"').next()?;
            (ident.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && name.starts_with("bikeshare_"))
            .then(|| (ident.to_owned(), name.to_owned()))
        })
        .collect()
}

/// Each `pub fn` of the catalogue with the constants its body names.
fn recording_functions(
    catalogue: &str,
    constants: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let code = without_tests(catalogue);
    let mut out = BTreeMap::new();
    for chunk in code.split("\npub fn ").skip(1) {
        let name: String = chunk
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let body = chunk.split("\n}").next().unwrap_or("");
        let named: BTreeSet<String> = constants
            .keys()
            .filter(|c| {
                body.match_indices(c.as_str()).any(|(i, _)| {
                    let before = body[..i].chars().last();
                    let after = body[i + c.len()..].chars().next();
                    let word = |ch: Option<char>| {
                        ch.is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    };
                    !word(before) && !word(after)
                })
            })
            .cloned()
            .collect();
        out.insert(name, named);
    }
    out
}

/// Every `.rs` file of the workspace that is not a test, a bench or build output.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | "tests" | "benches" | "node_modules" | ".git" | "var"
            ) && !name.starts_with('.')
            {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Whether `text` calls or passes on the recording function `f`: `metrics::f` or `m::f`
/// followed by anything but an identifier character (`m::labels(..)`, `m::labels)`).
fn uses(text: &str, f: &str) -> bool {
    ["metrics::", "m::"].iter().any(|module| {
        let path = format!("{module}{f}");
        text.match_indices(&path).any(|(i, _)| {
            let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
            !text[..i].chars().last().is_some_and(ident)
                && !text[i + path.len()..].chars().next().is_some_and(ident)
        })
    })
}

#[test]
fn every_metric_in_the_catalogue_is_recorded_by_some_code_path() {
    let catalogue = std::fs::read_to_string(root().join(CATALOGUE)).unwrap();
    let constants = constants(&catalogue);
    let listed: BTreeSet<&str> = ALL.iter().map(|d| d.name).collect();
    let parsed: BTreeSet<&str> = constants.values().map(String::as_str).collect();
    assert_eq!(parsed, listed, "the defs! table as read here is ALL");
    let functions = recording_functions(&catalogue, &constants);

    let mut files = Vec::new();
    sources(&root(), &mut files);
    let catalogue_path = root().join(CATALOGUE);
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter(|p| *p != catalogue_path)
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, without_tests(&text).to_owned())
        })
        .collect();
    assert!(texts.len() > 50, "found only {} sources", texts.len());
    let called = |f: &str| texts.iter().any(|(_, t)| uses(t, f));

    let mut unrecorded = Vec::new();
    for (constant, name) in &constants {
        let recorders: Vec<&String> = functions
            .iter()
            .filter(|(_, named)| named.contains(constant))
            .map(|(f, _)| f)
            .collect();
        if recorders.is_empty() {
            unrecorded.push(format!("{name}: no recording function names {constant}"));
        } else if !recorders.iter().any(|f| called(f)) {
            unrecorded.push(format!(
                "{name}: its recording function(s) {recorders:?} have no caller"
            ));
        }
    }
    assert!(
        unrecorded.is_empty(),
        "metrics that no code path records:\n{}",
        unrecorded.join("\n")
    );
}

#[test]
fn the_scanner_sees_a_recording_function_and_its_constants() {
    let catalogue = "defs! {\n    A_B = \"bikeshare_a_b\", Counter;\n    A = \"bikeshare_a\", Gauge;\n}\n\
                     pub fn record_a(n: u64) {\n    gauge!(A.name).set(n);\n}\n\
                     pub fn record_both() {\n    counter!(A_B.name);\n    for d in [A] {}\n}\n\
                     #[cfg(test)]\nmod tests {\n    pub fn fake() { A_B }\n}\n";
    let c = constants(catalogue);
    assert_eq!(
        c.keys().map(String::as_str).collect::<Vec<_>>(),
        ["A", "A_B"]
    );
    assert!(uses("m::labels(x, 1)", "labels"));
    assert!(uses("count_by(l, s, m::labels);", "labels"));
    assert!(uses("bikeshare_types::metrics::labels(x)", "labels"));
    assert!(!uses("m::labels_total(x)", "labels"));
    assert!(!uses("item::labels(x)", "labels"));
    assert!(!uses("labels(x)", "labels"));
    let f = recording_functions(catalogue, &c);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f["record_a"], BTreeSet::from(["A".to_owned()]));
    assert_eq!(
        f["record_both"],
        BTreeSet::from(["A".to_owned(), "A_B".to_owned()])
    );
}
