//! The analysts' SQL against the lake:
//! - the Glue/Athena DDL (`infra/athena/tables.sql`) declares exactly the lake's Arrow schemas,
//!   and its partition projection finds the folders the lake writes;
//! - every named query (`infra/athena/queries.sql`), run by DuckDB on a small known history
//!   written by the real lake writer, returns the numbers computed here, independently, from
//!   that history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bikeshare_lake::athena::{
    QUERIES_SQL, TABLES_SQL, athena_type, parse_queries, parse_tables, presto_type, views,
};
use bikeshare_lake::layout::{Hour, file_path};
use bikeshare_lake::staging::Staging;
use bikeshare_lake::{Dataset, EpochWriter, LakeConfig, open_store};
use bikeshare_testkit::envelopes;
use bikeshare_types::contracts::{
    DeadLetter, Envelope, Event, Label, ModelRef, Prediction, PredictionTrigger, ScoredBy,
    StationStatus,
};
use bikeshare_types::{StationId, SystemId, Timestamp};
use serde_json::{Value, json};

const PARTITION_KEYS: [&str; 4] = ["year", "month", "day", "hour"];

#[test]
fn athena_tables_match_the_lake_schemas() {
    let tables = parse_tables(TABLES_SQL).unwrap();
    let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
    want.sort_unstable();
    assert_eq!(names, want, "one table per dataset, no other");

    for d in Dataset::ALL {
        let t = tables.iter().find(|t| t.name == d.name()).unwrap();
        let expected: Vec<(String, String)> = d
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let ty = athena_type(f.data_type()).unwrap_or_else(|| {
                    panic!("{d}.{}: no Athena type for {}", f.name(), f.data_type())
                });
                (f.name().clone(), ty)
            })
            .collect();
        assert_eq!(
            t.columns, expected,
            "{d}: DDL columns differ from the Arrow schema"
        );
        assert_eq!(
            t.partition_keys,
            PARTITION_KEYS.map(|k| (k.to_owned(), "int".to_owned())),
            "{d}"
        );
        assert_eq!(t.stored_as, "PARQUET", "{d}");
        assert_eq!(t.location, format!("${{lake}}/{d}/"), "{d}");

        // Partition projection: integer keys, zero-padded like the lake's folder names, over
        // ranges that hold every month, day and hour, and a template that is the layout.
        assert_eq!(t.property("projection.enabled"), Some("true"), "{d}");
        for (key, lo, hi) in [("month", 1, 12), ("day", 1, 31), ("hour", 0, 23)] {
            assert_eq!(
                t.property(&format!("projection.{key}.type")),
                Some("integer")
            );
            assert_eq!(
                t.property(&format!("projection.{key}.range")),
                Some(format!("{lo},{hi}").as_str()),
                "{d}.{key}"
            );
            assert_eq!(
                t.property(&format!("projection.{key}.digits")),
                Some("2"),
                "{d}.{key}"
            );
        }
        assert_eq!(t.property("projection.year.type"), Some("integer"));
        let (lo, hi) = t
            .property("projection.year.range")
            .unwrap()
            .split_once(',')
            .unwrap();
        let (lo, hi): (i32, i32) = (lo.parse().unwrap(), hi.parse().unwrap());
        assert!(
            lo <= 2013 && hi >= 2035,
            "{d}: years {lo}..{hi} miss the replayed data"
        );
        let template = t.property("storage.location.template").unwrap();
        let hour = Hour {
            year: 2026,
            month: 3,
            day: 2,
            hour: 7,
        };
        let folder = template
            .replace("${lake}/", "")
            .replace("${year}", "2026")
            .replace("${month}", "03")
            .replace("${day}", "02")
            .replace("${hour}", "07");
        let file = file_path(d, hour, "processor-0", 1);
        assert_eq!(
            format!("{folder}processor-0-000000000001.parquet"),
            file,
            "{d}: the projection template is not the lake's layout"
        );
        assert!(template.starts_with(&t.location), "{d}");
    }
}

#[test]
fn the_answers_view_has_the_predictions_columns_and_every_query_reads_it() {
    let views = views();
    let names: Vec<&str> = views.iter().map(|v| v.name).collect();
    assert_eq!(names, ["prediction_answers"]);
    let v = &views[0];
    let mut want: Vec<(String, String)> = Dataset::Predictions
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), athena_type(f.data_type()).unwrap()))
        .collect();
    want.extend(PARTITION_KEYS.map(|k| (k.to_owned(), "int".to_owned())));
    assert_eq!(
        v.columns, want,
        "the view's columns are the table's and its partition keys"
    );
    assert!(
        TABLES_SQL.contains(&format!(
            "CREATE OR REPLACE VIEW ${{database}}.{} AS\n{};",
            v.name, v.sql
        )),
        "tables.sql does not define the view"
    );
    // The Glue view's definition: Trino types, in the view's column order.
    let presto = v.presto_view("bikeshare_dev");
    assert_eq!(presto["schema"], "bikeshare_dev");
    assert_eq!(presto["originalSql"], v.sql.as_str());
    let columns: Vec<(&str, &str)> = presto["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(columns.len(), want.len());
    assert_eq!(columns[0], ("prediction_id", "varchar"));
    assert!(columns.contains(&("p_empty", "real")));
    assert!(columns.contains(&("as_of", "timestamp")));
    assert!(columns.contains(&("revision", "integer")));
    assert_eq!(presto_type("array<float>"), "array(real)");

    // Every named query that reads predictions reads them through the view (each id once).
    for q in parse_queries(QUERIES_SQL).unwrap() {
        let words: Vec<String> = q
            .sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        assert!(
            !words
                .windows(2)
                .any(|w| (w[0] == "from" || w[0] == "join") && w[1] == "predictions"),
            "{}: reads the predictions table itself, not prediction_answers",
            q.name
        );
    }
}

#[test]
fn named_queries_are_well_formed_and_cover_the_analysts_questions() {
    let queries = parse_queries(QUERIES_SQL).unwrap();
    let names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
    for required in [
        "stockout_rate_by_station_hour",
        "model_precision_by_day",
        "freshness_gaps",
        "top_risky_stations",
    ] {
        assert!(names.contains(&required), "missing query {required}");
    }
    for q in &queries {
        // Unqualified table names only (the database is the session's), and only ours.
        assert!(!q.sql.contains("${"), "{}: placeholder in the SQL", q.name);
        for p in &q.params {
            assert!(
                q.sql.contains(&format!("CAST(? AS {})", p.sql_type)),
                "{}: parameter {} is not cast to its type",
                q.name,
                p.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The known history.

const T0: i64 = 1_772_431_200_000; // 2026-03-02T06:00:00Z

fn t(minutes: i64) -> Timestamp {
    Timestamp(T0).plus_minutes(minutes)
}

fn report(station: &str, minute: i64, bikes: u32, docks: u32, installed: bool) -> StationStatus {
    StationStatus {
        is_installed: installed,
        ..envelopes::station_status(station, t(minute), bikes, docks)
    }
}

/// Station reports: (system, report).
fn reports() -> Vec<(SystemId, StationStatus)> {
    let (demo, other) = (SystemId::new("demo"), SystemId::new("other"));
    let mut out = Vec::new();
    // demo/A: every 5 minutes 06:00–08:55, silent from 07:10 to 07:50 (a 40-minute gap).
    for m in (0..180).step_by(5).filter(|m| !(71..110).contains(m)) {
        let k = (m / 5) as u32;
        let bikes = if k.is_multiple_of(3) { 0 } else { 4 };
        let docks = if k % 4 == 3 { 0 } else { 6 };
        out.push((demo.clone(), report("A", m, bikes, docks, true)));
    }
    // demo/B: every 10 minutes; not installed from 07:00 to 07:30.
    for m in (0..180).step_by(10) {
        let k = (m / 10) as u32;
        let installed = !(60..=90).contains(&m);
        let bikes = if k.is_multiple_of(2) { 0 } else { 3 };
        let docks = if k.is_multiple_of(5) { 0 } else { 2 };
        out.push((demo.clone(), report("B", m, bikes, docks, installed)));
    }
    // demo/C on the second day: gaps of 5, 20, 12, 1 and 22 minutes.
    for (i, m) in [0, 5, 25, 37, 38, 60].into_iter().enumerate() {
        let bikes = if i % 2 == 0 { 0 } else { 1 };
        out.push((demo.clone(), report("C", 24 * 60 + m, bikes, 5, true)));
    }
    // other/A: the same station id in another system, interleaved with demo/A (a 38-minute
    // gap of its own; read together with demo/A there would be none).
    for m in [2, 40, 41] {
        out.push((other.clone(), report("A", m, 0, 0, true)));
    }
    out
}

const PE: [f32; 11] = [
    0.05, 0.5, 0.95, 0.25, 0.75, 0.15, 0.55, 0.45, 0.85, 0.35, 0.65,
];
const PF: [f32; 7] = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.6];

fn predictions() -> Vec<Prediction> {
    let stations = ["A", "B", "C", "D"];
    let mut out = Vec::new();
    for i in 0..40usize {
        let sys = SystemId::new("demo");
        let st = StationId::new(stations[i % 4]);
        let as_of = t(i as i64 * 60); // two UTC days
        let scored_by = if i % 7 == 6 || i == 39 {
            ScoredBy::Unavailable
        } else if i % 5 == 1 {
            ScoredBy::Fallback
        } else if i % 2 == 0 {
            ScoredBy::Endpoint
        } else {
            ScoredBy::InProcess
        };
        let (p_empty, p_full) = if scored_by == ScoredBy::Unavailable {
            (f32::NAN, f32::NAN)
        } else {
            (PE[i % PE.len()], PF[i % PF.len()])
        };
        let model = if i % 3 == 0 {
            ("xgb", "3")
        } else {
            ("baseline", "1")
        };
        out.push(Prediction {
            model: ModelRef {
                name: model.0.into(),
                version: model.1.into(),
            },
            trigger: PredictionTrigger::Tick,
            scored_by,
            ..envelopes::prediction(sys.as_str(), st.as_str(), as_of, p_empty, p_full)
        });
    }
    // other/A: one prediction, riskier than most.
    let (sys, st) = (SystemId::new("other"), StationId::new("A"));
    out.push(Prediction {
        prediction_id: Prediction::id_for(&sys, &st, t(100), 30),
        system_id: sys,
        station_id: st,
        as_of: t(100),
        p_empty: 0.2,
        p_full: 0.92,
        ..out[0].clone()
    });
    // Corrections (the update trigger's later rows of an id, decision 083), in the second
    // epoch: each id's last revision is its answer, and an earlier one must not count.
    // 1: a fallback's 0.5 becomes the endpoint's 0.92; 6: unavailable, then scored; 12:
    // corrected twice; 38: station C's latest, now the riskiest of all.
    for (i, revision, p_empty, p_full, scored_by) in [
        (1, 1, 0.92, 0.05, ScoredBy::Endpoint),
        (6, 1, 0.61, 0.3, ScoredBy::Endpoint),
        (12, 1, 0.15, 0.8, ScoredBy::Endpoint),
        (12, 2, 0.45, 0.55, ScoredBy::Fallback),
        (38, 1, 0.99, 0.01, ScoredBy::InProcess),
    ] {
        out.push(Prediction {
            revision,
            p_empty,
            p_full,
            scored_by,
            ..out[i].clone()
        });
    }
    out
}

/// Each prediction id's answer: its row of the highest revision.
fn answers(preds: Vec<Prediction>) -> Vec<Prediction> {
    let mut last: BTreeMap<String, Prediction> = BTreeMap::new();
    for p in preds {
        let id = p.prediction_id.as_str().to_owned();
        if last.get(&id).is_none_or(|q| q.revision < p.revision) {
            last.insert(id, p);
        }
    }
    last.into_values().collect()
}

/// Labels of most predictions (every fifth has none yet), written in reverse order: one per
/// prediction id, whatever its revisions.
fn labels(preds: &[Prediction]) -> Vec<Label> {
    let mut out: Vec<Label> = preds
        .iter()
        .filter(|p| p.revision == 0)
        .enumerate()
        .filter(|(i, _)| i % 5 != 4)
        .map(|(i, p)| Label {
            went_empty: (i * 5 + 1) % 7 < 3,
            went_full: (i * 3) % 5 == 1 || i % 11 == 0,
            ..envelopes::label(p, 3)
        })
        .collect();
    out.reverse();
    out
}

fn dead_letters() -> Vec<DeadLetter> {
    let dl = |sys: &str, rule: &str, raw: String, minute: i64| {
        DeadLetter::new(SystemId::new(sys), "events:0", rule, "bad", &raw, t(minute))
    };
    vec![
        dl("demo", "gbfs.counts.negative", "{\"a\":1}".into(), 10),
        dl("demo", "gbfs.counts.negative", "{\"a\":2}".into(), 70),
        dl("demo", "gbfs.counts.negative", "{\"a\":3}".into(), 130),
        dl("demo", "gbfs.schema", "x".repeat(300 * 1024), 20),
        dl("demo", "gbfs.schema", "{\"b\":1}".into(), 24 * 60 + 5),
        dl("demo", "gbfs.schema", "{\"b\":2}".into(), 24 * 60 + 6),
        dl(
            "other",
            "stream.record_too_large",
            "{\"c\":1}".into(),
            24 * 60 + 7,
        ),
    ]
}

/// Writes the history with the real writers: the archiver's and a processor shard's, two
/// epochs each (several files per partition).
async fn write_lake(dir: &Path) {
    let store = open_store(&LakeConfig::default(), dir).unwrap();
    let envs: Vec<Envelope> = reports()
        .into_iter()
        .map(|(sys, s)| {
            let at = s.last_reported;
            Envelope::new(
                sys,
                "simulator",
                at,
                at.plus_minutes(1),
                Event::StationStatus(s),
            )
        })
        .collect();
    let preds = predictions();
    let labs = labels(&preds);
    let dls = dead_letters();

    let archive = EpochWriter::new(store.clone(), "archive");
    let processor = EpochWriter::new(store.clone(), "processor-0");
    for (epoch, half) in [(1u64, 0usize), (2, 1)] {
        let part = |n: usize| if half == 0 { 0..n / 2 } else { n / 2..n };
        let mut a = Staging::default();
        for e in &envs[part(envs.len())] {
            a.push_event(e.clone());
        }
        a.dead_letters.push(dls[part(dls.len())].iter().cloned());
        archive.commit(epoch, a).await.unwrap();
        let mut p = Staging::default();
        p.predictions.push(preds[part(preds.len())].iter().cloned());
        p.labels.push(labs[part(labs.len())].iter().cloned());
        processor.commit(epoch, p).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The expected answers, computed from the history without SQL.

fn day(ts: Timestamp) -> String {
    ts.to_datetime().format("%Y-%m-%d").to_string()
}

fn datetime(ts: Timestamp) -> String {
    ts.to_datetime().format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

fn ratio(n: u64, d: u64) -> Value {
    if d == 0 {
        Value::Null
    } else {
        json!(n as f64 / d as f64)
    }
}

fn expect_stockout() -> Vec<Value> {
    let mut groups: BTreeMap<(String, String, u32), (u64, u64, u64)> = BTreeMap::new();
    for (sys, s) in reports() {
        if !s.is_installed {
            continue;
        }
        let key = (
            sys.as_str().to_owned(),
            s.station_id.as_str().to_owned(),
            Hour::of(s.last_reported).hour,
        );
        let g = groups.entry(key).or_default();
        g.0 += 1;
        g.1 += u64::from(s.num_bikes_available == 0);
        g.2 += u64::from(s.num_docks_available == Some(0));
    }
    groups
        .into_iter()
        .map(|((sys, st, h), (n, e, f))| json!([sys, st, h, n, e, f, ratio(e, n), ratio(f, n)]))
        .collect()
}

fn labelled_scored() -> Vec<(Prediction, Label)> {
    let preds = predictions();
    let by_id: HashMap<String, Label> = labels(&preds)
        .into_iter()
        .map(|l| (l.prediction_id.as_str().to_owned(), l))
        .collect();
    answers(preds)
        .into_iter()
        .filter(|p| !p.p_empty.is_nan() && !p.p_full.is_nan())
        .filter_map(|p| {
            let l = by_id.get(p.prediction_id.as_str())?.clone();
            Some((p, l))
        })
        .collect()
}

fn expect_precision(threshold: f64) -> Vec<Value> {
    #[derive(Default)]
    struct C {
        n: u64,
        pe: u64,
        ae: u64,
        tpe: u64,
        pf: u64,
        af: u64,
        tpf: u64,
    }
    let mut groups: BTreeMap<(String, String, String), C> = BTreeMap::new();
    for (p, l) in labelled_scored() {
        let key = (day(p.as_of), p.model.name.clone(), p.model.version.clone());
        let c = groups.entry(key).or_default();
        let (pe, pf) = (
            f64::from(p.p_empty) >= threshold,
            f64::from(p.p_full) >= threshold,
        );
        c.n += 1;
        c.pe += u64::from(pe);
        c.ae += u64::from(l.went_empty);
        c.tpe += u64::from(pe && l.went_empty);
        c.pf += u64::from(pf);
        c.af += u64::from(l.went_full);
        c.tpf += u64::from(pf && l.went_full);
    }
    groups
        .into_iter()
        .map(|((d, m, v), c)| {
            json!([
                d,
                m,
                v,
                c.n,
                c.pe,
                c.ae,
                c.tpe,
                ratio(c.tpe, c.pe),
                ratio(c.tpe, c.ae),
                c.pf,
                c.af,
                c.tpf,
                ratio(c.tpf, c.pf),
                ratio(c.tpf, c.af)
            ])
        })
        .collect()
}

fn expect_gaps(min_gap_minutes: f64) -> Vec<Value> {
    let mut by_station: BTreeMap<(String, String), Vec<Timestamp>> = BTreeMap::new();
    for (sys, s) in reports() {
        by_station
            .entry((sys.as_str().to_owned(), s.station_id.as_str().to_owned()))
            .or_default()
            .push(s.last_reported);
    }
    let mut gaps = Vec::new();
    for ((sys, st), mut times) in by_station {
        times.sort();
        for w in times.windows(2) {
            let minutes = (w[1].0 - w[0].0) as f64 / 60_000.0;
            if minutes > min_gap_minutes {
                gaps.push((minutes, sys.clone(), st.clone(), w[0], w[1]));
            }
        }
    }
    gaps.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| (&a.1, &a.2, a.3).cmp(&(&b.1, &b.2, b.3)))
    });
    gaps.into_iter()
        .map(|(m, sys, st, a, b)| json!([sys, st, datetime(a), datetime(b), m]))
        .collect()
}

fn expect_top_risky(top_n: usize) -> Vec<Value> {
    let mut latest: BTreeMap<(String, String), Prediction> = BTreeMap::new();
    for p in answers(predictions()) {
        if p.p_empty.is_nan() || p.p_full.is_nan() {
            continue;
        }
        let key = (
            p.system_id.as_str().to_owned(),
            p.station_id.as_str().to_owned(),
        );
        let newer = latest.get(&key).is_none_or(|q| {
            (p.as_of, p.prediction_id.as_str()) > (q.as_of, q.prediction_id.as_str())
        });
        if newer {
            latest.insert(key, p);
        }
    }
    let mut ranked: Vec<(f32, &str, Prediction)> = latest
        .into_values()
        .map(|p| {
            if p.p_empty >= p.p_full {
                (p.p_empty, "empty", p)
            } else {
                (p.p_full, "full", p)
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then_with(|| {
            (a.2.system_id.as_str(), a.2.station_id.as_str())
                .cmp(&(b.2.system_id.as_str(), b.2.station_id.as_str()))
        })
    });
    ranked
        .into_iter()
        .take(top_n)
        .enumerate()
        .map(|(i, (risk, of, p))| {
            json!([
                i + 1,
                p.system_id.as_str(),
                p.station_id.as_str(),
                datetime(p.as_of),
                of,
                f64::from(risk),
                f64::from(p.p_empty),
                f64::from(p.p_full),
                p.model.name,
                p.model.version
            ])
        })
        .collect()
}

fn expect_calibration() -> Vec<Value> {
    let mut bins: BTreeMap<(&str, i64), (u64, f64, u64)> = BTreeMap::new();
    for (p, l) in labelled_scored() {
        for (target, prob, outcome) in [
            ("empty", f64::from(p.p_empty), l.went_empty),
            ("full", f64::from(p.p_full), l.went_full),
        ] {
            let bin = if prob >= 1.0 {
                9
            } else {
                (prob * 10.0).floor() as i64
            };
            let b = bins.entry((target, bin)).or_default();
            b.0 += 1;
            b.1 += prob;
            b.2 += u64::from(outcome);
        }
    }
    bins.into_iter()
        .map(|((target, bin), (n, sum, pos))| {
            json!([target, bin, n, sum / n as f64, pos as f64 / n as f64])
        })
        .collect()
}

fn expect_scoring_paths() -> Vec<Value> {
    let mut counts: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut per_day: BTreeMap<String, u64> = BTreeMap::new();
    for p in answers(predictions()) {
        *counts
            .entry((day(p.as_of), p.scored_by.as_str()))
            .or_default() += 1;
        *per_day.entry(day(p.as_of)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((d, by), n)| {
            let share = n as f64 / per_day[&d] as f64;
            json!([d, by, n, share])
        })
        .collect()
}

fn expect_dead_letters() -> Vec<Value> {
    let mut groups: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for d in dead_letters() {
        let g = groups
            .entry((day(d.at), d.system_id.as_str().to_owned(), d.rule.clone()))
            .or_default();
        g.0 += 1;
        g.1 += u64::from(d.raw_truncated);
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    // day, system, count descending, rule
    rows.sort_by(|a, b| {
        (&a.0.0, &a.0.1)
            .cmp(&(&b.0.0, &b.0.1))
            .then(b.1.0.cmp(&a.1.0))
            .then_with(|| a.0.2.cmp(&b.0.2))
    });
    rows.into_iter()
        .map(|((d, sys, rule), (n, tr))| json!([d, sys, rule, n, tr]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the queries.

/// The Python with `duckdb` installed (`BIKESHARE_TEST_DUCKDB_PYTHON`, set by
/// `scripts/test.sh`). Without it the test is skipped, except in CI (`CI=true`).
fn duckdb_python(test: &str) -> Option<PathBuf> {
    const VAR: &str = "BIKESHARE_TEST_DUCKDB_PYTHON";
    match std::env::var(VAR) {
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: {VAR} is not set in CI; run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: {VAR} is not set (run scripts/test.sh, or \
                 scripts/emulators.sh cargo test -p bikeshare-lake --test it athena)"
            );
            None
        }
    }
}

/// `duckdb_lake.py --json` with `args`: the named queries' results, or with `--view` the
/// views' rows.
fn duckdb_lake(python: &Path, lake: &Path, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/athena/duckdb_lake.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .arg("--lake")
        .arg(lake)
        .arg("--json")
        .args(args);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "duckdb_lake.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_queries(python: &Path, lake: &Path, params: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = params.iter().flat_map(|p| ["--param", p]).collect();
    duckdb_lake(python, lake, &args)["queries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Equal, numbers within 1e-9 (DuckDB's averages may add in another order).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_named_query_returns_the_expected_numbers_on_a_known_history() {
    let test = "every_named_query_returns_the_expected_numbers_on_a_known_history";
    let Some(python) = duckdb_python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path()).await;
    let lake = dir.path().join("lake");

    // The history is what it is meant to be (anchors for the computations below).
    let gaps = expect_gaps(15.0);
    let gap_list: Vec<(String, String, f64)> = gaps
        .iter()
        .map(|g| {
            (
                g[0].as_str().unwrap().to_owned(),
                g[1].as_str().unwrap().to_owned(),
                g[4].as_f64().unwrap(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, m: f64| (a.to_owned(), b.to_owned(), m);
    assert_eq!(
        gap_list,
        vec![
            s("demo", "A", 40.0),
            s("other", "A", 38.0),
            s("demo", "C", 22.0),
            s("demo", "C", 20.0)
        ]
    );
    let precision = expect_precision(0.5);
    assert_eq!(precision.len(), 4, "two days × two models");
    assert!(
        precision
            .iter()
            .any(|r| r[7].as_f64().is_some_and(|p| p > 0.0 && p < 1.0)),
        "a precision strictly between 0 and 1"
    );

    let expected: BTreeMap<&str, Vec<Value>> = BTreeMap::from([
        ("stockout_rate_by_station_hour", expect_stockout()),
        ("model_precision_by_day", precision),
        ("freshness_gaps", gaps),
        ("top_risky_stations", expect_top_risky(3)),
        ("calibration_by_bin", expect_calibration()),
        ("scoring_path_by_day", expect_scoring_paths()),
        ("dead_letters_by_rule_and_day", expect_dead_letters()),
    ]);
    let results = run_queries(&python, &lake, &["top_n=3"]);
    let ran: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let defined: Vec<String> = parse_queries(QUERIES_SQL)
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(ran, defined, "every named query ran");
    for r in &results {
        let name = r["name"].as_str().unwrap();
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("query {name} has no expected answer in this test"));
        let got = r["rows"].as_array().unwrap();
        assert!(!want.is_empty(), "{name}: the history gives it rows");
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: rows\n got {got:?}\nwant {want:?}"
        );
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(same(g, w), "{name} row {i}:\n got {g}\nwant {w}");
        }
    }

    // The view itself: the columns it declares (Glue's copy of them must match, or Athena
    // calls the view stale), and each prediction id once, with its last revision.
    let doc = duckdb_lake(&python, &lake, &["--view", "prediction_answers"]);
    let view = &doc["views"][0];
    let columns: Vec<&str> = view["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let declared: Vec<String> = views()[0].columns.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        columns, declared,
        "prediction_answers yields its declared columns"
    );
    let col = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let (id, rev, by) = (col("prediction_id"), col("revision"), col("scored_by"));
    let mut got: Vec<(String, i64, String)> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[id].as_str().unwrap().to_owned(),
                r[rev].as_i64().unwrap(),
                r[by].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let preds = predictions();
    let want: Vec<(String, i64, String)> = answers(preds.clone())
        .into_iter()
        .map(|p| {
            (
                p.prediction_id.as_str().to_owned(),
                i64::from(p.revision),
                p.scored_by.as_str().to_owned(),
            )
        })
        .collect();
    assert!(want.len() < preds.len(), "the history has corrections");
    assert!(want.iter().any(|w| w.1 == 2), "an id corrected twice");
    assert_eq!(
        got, want,
        "prediction_answers: each id once, its last revision"
    );

    // Parameters change the answer: a higher threshold, a shorter gap.
    let results = run_queries(&python, &lake, &["threshold=0.7", "min_gap_minutes=10"]);
    let rows = |name: &str| {
        results.iter().find(|r| r["name"] == name).unwrap()["rows"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (got, want) = (rows("model_precision_by_day"), expect_precision(0.7));
    assert!(same(&Value::Array(got), &Value::Array(want.clone())));
    assert!(!same(
        &Value::Array(want),
        &Value::Array(expect_precision(0.5))
    ));
    let (got, want) = (rows("freshness_gaps"), expect_gaps(10.0));
    assert_eq!(want.len(), 5, "the 12-minute gap of demo/C too");
    assert!(same(&Value::Array(got), &Value::Array(want)));
}
