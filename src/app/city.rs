//! The simulated city's clock, kept with the data so that `bikeshare up` resumes.
//!
//! The processor's watermark only moves forward: a city restarted hours behind the stream
//! would have every report dropped as late. So `up` stores the city's simulated time in
//! `<data_dir>/simulator/clock.json` while it runs (every second, and once more after the
//! producers stop) and a later `up` starts the city there, or at `now − history` when that
//! is later. A kill loses at most a second of wall time, which the catch-up speed turns
//! into a minute of simulated time: less than the processor's allowed lateness.
//!
//! `up --fresh` removes what earlier runs left in the data directory instead.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bikeshare_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The stored clock of one simulated city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CityClock {
    /// Simulated time, epoch milliseconds.
    pub sim_time_ms: i64,
}

/// Where the clock is kept.
pub fn clock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("simulator").join("clock.json")
}

/// The stored clock, `None` when there is none; an unreadable file is an error that says
/// how to start clean.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<CityClock>> {
    let path = clock_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let clock = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a city clock (remove it, or start clean with `bikeshare up --fresh`)",
            path.display()
        )
    })?;
    Ok(Some(clock))
}

/// Stores `clock` atomically (a reader sees the old file or the new one).
pub fn save(data_dir: &Path, clock: CityClock) -> anyhow::Result<()> {
    let path = clock_path(data_dir);
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&clock)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Where the city starts: where it stopped, unless that is more than `history` ago.
pub fn start(stored: Option<CityClock>, now: Timestamp, history_ms: i64) -> Timestamp {
    let earliest = now.plus_millis(-history_ms);
    match stored {
        Some(c) => Timestamp(c.sim_time_ms.max(earliest.millis()).min(now.millis())),
        None => earliest,
    }
}

/// What earlier runs leave in the data directory, resolved against it: only paths inside
/// it (a configured absolute path is someone else's) that exist.
pub fn leftovers(config: &Config) -> Vec<PathBuf> {
    let dir = &config.data_dir.0;
    let relative = [
        config.stream.path.clone(),
        config.stream.path.with_extension("db-wal"),
        config.stream.path.with_extension("db-shm"),
        config.runner.checkpoint_dir.clone(),
        config.registry.path.clone(),
        config.registry.cache_dir.clone(),
        PathBuf::from("lake"),
        PathBuf::from("monitoring"),
        PathBuf::from("simulator"),
    ];
    let mut out: Vec<PathBuf> = relative
        .iter()
        .filter(|p| p.is_relative())
        .filter_map(|p| p.components().next())
        .map(|first| dir.join(first))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Removes [`leftovers`]; returns what was removed.
pub fn remove_leftovers(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let gone = leftovers(config);
    for p in &gone {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        r.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn a_new_city_starts_history_ago() {
        assert_eq!(start(None, Timestamp(10 * H), 6 * H), Timestamp(4 * H));
    }

    #[test]
    fn a_stored_city_resumes_where_it_stopped() {
        let c = CityClock { sim_time_ms: 9 * H };
        assert_eq!(start(Some(c), Timestamp(10 * H), 6 * H), Timestamp(9 * H));
    }

    #[test]
    fn a_city_stopped_long_ago_starts_history_ago_and_never_in_the_future() {
        let old = CityClock { sim_time_ms: H };
        assert_eq!(start(Some(old), Timestamp(10 * H), 6 * H), Timestamp(4 * H));
        let ahead = CityClock {
            sim_time_ms: 11 * H,
        };
        assert_eq!(
            start(Some(ahead), Timestamp(10 * H), 6 * H),
            Timestamp(10 * H)
        );
    }

    #[test]
    fn the_clock_round_trips_and_garbage_says_how_to_start_clean() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let c = CityClock { sim_time_ms: 42 };
        save(dir.path(), c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(c));
        std::fs::write(clock_path(dir.path()), b"{not json").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("--fresh"), "{err}");
    }

    #[test]
    fn leftovers_are_only_ours_and_inside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.data_dir.0 = dir.path().to_owned();
        for d in ["lake", "checkpoints", "simulator", "mine"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("stream.db"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
        let removed = remove_leftovers(&config).unwrap();
        let names: Vec<_> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["checkpoints", "lake", "simulator", "stream.db"]);
        assert!(dir.path().join("mine").exists());
        assert!(dir.path().join("notes.txt").exists());
    }
}
