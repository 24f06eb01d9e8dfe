//! The recorded-history readers of `bikeshare replay` and `backfill`: Bluebikes' stations and
//! change-log CSVs, hourly snapshot CSVs, envelope JSON lines. Each input is written to a
//! file (the readers read paths, decompressing by extension) and read by every reader: rows
//! become events or dead letters, a file that cannot be read is an error.
use std::sync::Arc;

use bikeshare_producers::gbfs::RuleConfig;
use bikeshare_producers::replay::{RowContext, bluebikes, jsonl, snapshots};
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SystemId, Timestamp};

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Named as the recorded files are: the change log's month bounds its times.
    let path = dir.path().join("station_status_2021-01.csv");
    // The context is only read; a panic ends the run (AFL++ reports it), so no state is
    // observed broken after one.
    let ctx = std::panic::AssertUnwindSafe(RowContext {
        system_id: SystemId::new("fuzz"),
        rules: RuleConfig::default(),
        side_file_capacity_rule: true,
        clock: Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000))),
    });
    afl::fuzz!(|data: &[u8]| {
        if std::fs::write(&path, data).is_err() {
            return;
        }
        let stations = match bluebikes::read_stations(&path, &ctx) {
            Ok((stations, _)) => stations,
            Err(_) => Default::default(),
        };
        let _ = bluebikes::read_status_file(&path, &stations, &ctx);
        let _ = snapshots::read_station_information(std::slice::from_ref(&path), &ctx);
        let _ = snapshots::SnapshotReader::new(stations).read_file(&path, &ctx);
        let _ = jsonl::read_file(&path, &ctx);
    });
}
