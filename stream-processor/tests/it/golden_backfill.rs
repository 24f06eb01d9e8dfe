//! Golden test of the backfill: the golden city's history (the one of
//! [`crate::golden_features`]) through [`Backfill`] gives a fixed file of training rows.
//!
//! Every labelled row, as `bikeshare backfill` writes it ([`write_csv_row`]: the key columns,
//! the label, every feature value), must equal the committed file byte for byte, so a change
//! of the backfill's join, of the rows waiting for their label or of the processor that moves
//! a single training row fails here. The processor's configuration does not change a training
//! row of an in-order history (decision 095): backfill's offline settings (lateness 0, no
//! early firing), the live defaults (lateness 2 min, through the reorder buffer) and the
//! update trigger (rows scored on arrival, then corrected at release) give the same file.
//!
//! Regenerate after an *intended* change of outputs with
//! `BLESS=1 cargo test -p bikeshare-stream-processor --test it golden_backfill`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bikeshare_stream_processor::backfill::{Backfill, write_csv_header, write_csv_row};
use bikeshare_stream_processor::{Processor, ProcessorConfig};

use crate::golden_features::{assert_golden, events};

/// The rows file of `config` over the golden history, with its summary line last.
fn render(config: &ProcessorConfig) -> String {
    let mut backfill = Backfill::new(Processor::new(config.clone()));
    let mut out = Vec::new();
    write_csv_header(&mut out, backfill.schema()).unwrap();
    let mut write = |row| write_csv_row(&mut out, &row).unwrap();
    for env in events() {
        backfill.push(env, &mut write);
    }
    let stats = backfill.finish(&mut write);
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(&format!(
        "# events={} rows={} unlabelled={} late={} duplicates={}\n",
        stats.events, stats.rows, stats.unlabelled, stats.late, stats.duplicates
    ));
    text
}

const GOLDEN: &str = "tests/golden/backfill.csv";

#[test]
fn golden_backfill_rows_are_stable_under_every_in_order_config() {
    let offline = ProcessorConfig {
        lateness_ms: 0,
        score_on_arrival: false,
        ..ProcessorConfig::default()
    };
    let got = render(&offline);
    let rows = got.lines().filter(|l| !l.starts_with('#')).count() - 1;
    assert!(
        rows > 300,
        "only {rows} rows: the history is too short to test"
    );
    for other in [
        ProcessorConfig::default(),
        ProcessorConfig {
            score_on_arrival: true,
            ..ProcessorConfig::default()
        },
    ] {
        assert!(
            render(&other) == got,
            "{other:?} gives other training rows than the offline settings"
        );
    }
    assert_golden(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN),
        &got,
    );
}
