//! Progress of long commands on stderr (`indicatif`): position, rate and, when the end is
//! known, ETA. Hidden when stderr is not a terminal, so logs, pipes and CI stay clean.
//!
//! A command hands over a probe, called a few times a second, that reads its own counters
//! (the runner's stats, the stream output's); the bar is drawn by a task that ends with the
//! command.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a probe reports: how far along (`position`), out of how much when known (`total`),
/// and a short note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub position: u64,
    pub total: Option<u64>,
    pub note: String,
}

/// Draws `probe`'s readings under `label` until `stop` resolves, then clears the bar.
pub fn spawn(
    label: &'static str,
    unit: &'static str,
    mut probe: impl FnMut() -> Reading + Send + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
    } else {
        ProgressBar::hidden()
    };
    // Without a unit, there is nothing to count: a spinner, the note and the time spent.
    let counting = if unit.is_empty() {
        ProgressStyle::with_template(&format!("{{spinner}} {label}: {{msg}} [{{elapsed}}]"))
    } else {
        ProgressStyle::with_template(&format!(
            "{{spinner}} {label}: {{human_pos}} {unit} ({{per_sec}}) {{msg}} [{{elapsed}}]"
        ))
    }
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bounded = ProgressStyle::with_template(&format!(
        "{label} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(counting.clone());
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        loop {
            let r = probe();
            match r.total {
                Some(total) if bar.length() != Some(total) => {
                    bar.set_style(bounded.clone());
                    bar.set_length(total);
                }
                _ => {}
            }
            bar.set_position(r.position);
            bar.set_message(r.note);
            tokio::select! {
                () = &mut stop => break,
                _ = ticker.tick() => {}
            }
        }
        bar.finish_and_clear();
    })
}

/// Runs `work` with a bar of `probe`'s readings under `label` (see [`spawn`]), clears the bar
/// when the work ends, and returns its result.
pub async fn while_probing<T>(
    label: &'static str,
    unit: &'static str,
    probe: impl FnMut() -> Reading + Send + 'static,
    work: impl std::future::Future<Output = T>,
) -> T {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bar = spawn(label, unit, probe, crate::app::stopped(stop_rx));
    let out = work.await;
    let _ = stop_tx.send(true);
    let _ = bar.await;
    out
}

/// Runs `work` with a spinner saying `note` under `label` (work with no count to show, such as
/// one read of the lake), and returns its result.
pub async fn while_running<T>(
    label: &'static str,
    note: &'static str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let probe = move || Reading {
        note: note.to_owned(),
        ..Reading::default()
    };
    while_probing(label, "", probe, work).await
}

/// A reading for work measured by how far behind its input it is (`behind_ms`, e.g. a
/// consumer's lag): the bar fills as the lag first seen shrinks to zero.
pub fn catching_up(first_behind_ms: &mut Option<u64>, behind_ms: u64, records: u64) -> Reading {
    let first = first_behind_ms.map_or(behind_ms, |f| f.max(behind_ms));
    *first_behind_ms = Some(first);
    Reading {
        position: first.saturating_sub(behind_ms) / 1000,
        total: (first > 0).then_some(first / 1000),
        note: format!("{records} records, {} s behind", behind_ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catching_up_fills_as_the_lag_shrinks_and_never_moves_back() {
        let mut first = None;
        let r = catching_up(&mut first, 100_000, 0);
        assert_eq!((r.position, r.total), (0, Some(100)));
        let r = catching_up(&mut first, 40_000, 10);
        assert_eq!((r.position, r.total), (60, Some(100)));
        assert!(r.note.contains("40 s behind"), "{}", r.note);
        // A lag that grows past the first one widens the bar rather than going negative.
        let r = catching_up(&mut first, 150_000, 20);
        assert_eq!((r.position, r.total), (0, Some(150)));
        let r = catching_up(&mut first, 0, 30);
        assert_eq!((r.position, r.total), (150, Some(150)));
    }

    #[tokio::test]
    async fn a_hidden_bar_ends_with_its_command() {
        // Tests do not run on a terminal: the bar is hidden, and the task ends on stop.
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let task = spawn("test", "items", Reading::default, async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        let _ = tx.send(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
