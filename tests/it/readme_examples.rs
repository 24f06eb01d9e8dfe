//! The README's shell examples run as written.
//!
//! Every ```` ```sh ```` block of README.md runs, in order, with `bash -e` in one scratch
//! directory, unless the line before it is `<!-- readme-examples: skip (<why>) -->`. The
//! blocks see the `bikeshare` binary under test on `PATH`, `python3` as the Python that has
//! DuckDB (the analyst example's one dependency), `infra/` of this checkout, and
//! `../shared/data/real/bluebikes-boston-2021/` holding the real `stations.csv` and the first
//! two days of January 2021 under the January file's name (the whole month takes minutes in a
//! debug build; the commands are the same). Each block must exit 0 and print something.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::BIN;

const BLUEBIKES: &str = "real/bluebikes-boston-2021";
const JANUARY: &str = "station_status_2021-01.csv.bz2";

/// The README's `sh` blocks: (line of the fence, text, skip reason).
fn blocks(readme: &str) -> Vec<(usize, String, Option<String>)> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate().peekable();
    let mut previous = "";
    while let Some((n, line)) = lines.next() {
        if line.trim() == "```sh" {
            let skip = previous
                .trim()
                .strip_prefix("<!-- readme-examples: skip (")
                .and_then(|r| r.strip_suffix(") -->"))
                .map(str::to_owned);
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            out.push((n + 1, text, skip));
        }
        previous = line;
    }
    out
}

/// `../shared/data/real/bluebikes-boston-2021` of the scratch directory: the real stations and
/// the first two days of January.
fn small_bluebikes(shared: &Path, into: &Path) {
    let real = shared.join(BLUEBIKES);
    std::fs::create_dir_all(into).unwrap();
    std::fs::copy(real.join("stations.csv"), into.join("stations.csv")).unwrap();
    let status = Command::new("bzcat")
        .arg(real.join(JANUARY))
        .output()
        .unwrap();
    assert!(status.status.success(), "bzcat failed");
    let text = String::from_utf8(status.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let day = header.split(',').position(|c| c == "day").unwrap();
    let mut slice = format!("{header}\n");
    for l in lines.filter(|l| matches!(l.split(',').nth(day), Some("1" | "2"))) {
        slice.push_str(l);
        slice.push('\n');
    }
    let mut bz = Command::new("bzip2")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(into.join(JANUARY)).unwrap())
        .spawn()
        .unwrap();
    bz.stdin
        .take()
        .unwrap()
        .write_all(slice.as_bytes())
        .unwrap();
    assert!(bz.wait().unwrap().success());
}

#[test]
fn every_readme_shell_example_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(shared) =
        bikeshare_testkit::shared_data::shared_data_or_skip("every_readme_shell_example_runs")
    else {
        return;
    };
    let Ok(python) = std::env::var("BIKESHARE_TEST_DUCKDB_PYTHON") else {
        eprintln!("skipped: BIKESHARE_TEST_DUCKDB_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 3, "the README's sh blocks: {blocks:?}");

    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("bikeshare")).unwrap();
    std::os::unix::fs::symlink(&python, bin.join("python3")).unwrap();
    std::os::unix::fs::symlink(root.join("infra"), work.join("infra")).unwrap();
    small_bluebikes(
        &shared,
        &scratch.path().join("shared").join("data").join(BLUEBIKES),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    for (line, text, skip) in &blocks {
        if let Some(why) = skip {
            eprintln!("README.md:{line}: not run ({why})");
            continue;
        }
        let out = Command::new("bash")
            .args(["-e", "-c", text])
            .current_dir(&work)
            .env("PATH", &path)
            .env("RUST_LOG", "warn")
            .env_remove("BIKESHARE_DATA_DIR")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "README.md:{line} failed ({}):\n{text}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
        assert!(
            last.is_some(),
            "README.md:{line} printed nothing:\n{text}\nstderr:\n{stderr}"
        );
        ran += 1;
    }
    assert!(ran >= 2, "only {ran} README examples ran");
}

#[test]
fn the_example_reader_sees_blocks_and_skips() {
    let md = "x\n<!-- readme-examples: skip (slow) -->\n```sh\na \\\n  b\n```\n```sh\nc\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0], (3, "a \\\n  b\n".to_owned(), Some("slow".to_owned())));
    assert_eq!(b[1], (7, "c\n".to_owned(), None));
}
