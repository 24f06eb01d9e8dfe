//! Long commands show progress on a terminal, and nothing of it elsewhere.
//!
//! `replay`, `process --until-caught-up`, `lake write`, `monitor baseline`, `backfill` and
//! `simulate --backfill` run with stderr on a
//! pseudo-terminal; `replay` and `process` also
//! with stderr to a pipe (util-linux `script` makes the terminal): the bar (its label, rate and, for
//! `process`, the lag left) appears only on the terminal; the pipe gets plain lines, no
//! carriage returns or colour codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use crate::support::{self, BIN, History, bikeshare};

/// Runs `bikeshare args…` with its output on a pseudo-terminal; returns what it printed.
fn on_a_terminal(data_dir: &std::path::Path, args: &str) -> String {
    let out = Command::new("script")
        .args(["-qefc", &format!("{BIN} {args}"), "/dev/null"])
        .env("BIKESHARE_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .env("BIKESHARE_RUNNER__BATCH", "20")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args} on a terminal failed:\n{text}");
    text
}

/// Runs `c` with its stderr to a pipe, asserting success and that stderr holds plain lines
/// (no carriage return, no colour code); returns stderr.
fn piped_plain(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    err
}

#[test]
fn long_commands_show_progress_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let history = History::simulate(40, 3, "2026-03-02T06:00:00Z", "2026-03-02T10:00:00Z");
    let dir = history.dir();

    let tty = dir.join("tty");
    let shown = on_a_terminal(
        &tty,
        &format!("replay --format jsonl {}", history.file().display()),
    );
    assert!(shown.contains("replaying:"), "{shown}");
    assert!(shown.contains("/s"), "a rate: {shown}");
    let shown = on_a_terminal(&tty, "process --until-caught-up");
    assert!(shown.contains("processing"), "{shown}");
    let shown = on_a_terminal(&tty, "lake write --until-caught-up");
    assert!(shown.contains("archiving:"), "{shown}");
    let shown = on_a_terminal(&tty, "monitor baseline");
    assert!(
        shown.contains("monitor baseline: reading feature rows"),
        "{shown}"
    );
    let csv = dir.join("rows.csv");
    let shown = on_a_terminal(
        &tty,
        &format!(
            "backfill --format jsonl {} -o {}",
            history.file().display(),
            csv.display()
        ),
    );
    assert!(shown.contains("backfilling:"), "{shown}");
    let shown = on_a_terminal(
        &tty,
        &format!(
            "simulate --station-count 40 --start 2026-03-02T00:00:00Z \
             --until 2026-03-03T00:00:00Z --backfill {}",
            dir.join("day.jsonl").display()
        ),
    );
    assert!(shown.contains("simulating"), "{shown}");
    assert!(shown.contains("minutes"), "{shown}");

    let piped = dir.join("piped");
    let err = piped_plain(
        bikeshare(&piped)
            .args(["replay", "--format", "jsonl"])
            .arg(history.file()),
    );
    assert!(!err.contains("replaying:"), "{err}");
    let err = piped_plain(bikeshare(&piped).args(["process", "--until-caught-up"]));
    assert!(!err.contains("processing ["), "{err}");
    support::stream_records(&piped, "predictions")
        .first()
        .expect("the piped run predicted");
}
