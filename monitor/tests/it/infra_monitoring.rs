//! Lints `infra/monitoring/`: the Prometheus rule file is exactly what the default alert
//! rules generate, is well-formed (groups, alert, expr, for, severity, summary), and every
//! metric a rule or a Grafana panel names is in the metrics table of `common/types/src/metrics.rs`
//! (histograms through `_bucket`, `_sum` or `_count`). The dashboard covers every area ops
//! watch. Regenerate the rule file with
//! `BIKESHARE_UPDATE_INFRA=1 cargo test -p bikeshare-monitor --test it infra_monitoring`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use bikeshare_monitor::alerts::{default_rules, prometheus_rules_yaml, rules::promql_duration};
use bikeshare_types::metrics::{self as m, Kind};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

fn infra(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/monitoring")
        .join(file)
}

/// Every `bikeshare_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("bikeshare_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// A referenced name must be a documented metric; a histogram only through its series.
fn check_name(name: &str, context: &str) {
    let def = m::lookup(name)
        .unwrap_or_else(|| panic!("{context}: {name} is not in common/types/src/metrics.rs"));
    if def.kind == Kind::Histogram {
        assert_ne!(
            name, def.name,
            "{context}: histogram {name} must be queried as _bucket, _sum or _count"
        );
    }
}

#[test]
fn prometheus_rules_are_the_default_rules_and_well_formed() {
    let path = infra("prometheus-rules.yml");
    let expected = prometheus_rules_yaml(&default_rules());
    if std::env::var("BIKESHARE_UPDATE_INFRA").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &expected).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        expected,
        "{} is out of date with default_rules(): regenerate it (see this file's header)",
        path.display()
    );

    let doc: Yaml = serde_norway::from_str(&text).unwrap();
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    for g in groups {
        assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()));
        for r in g["rules"].as_sequence().expect("rules: a list") {
            let alert = r["alert"].as_str().expect("alert: a name").to_owned();
            assert!(alerts.insert(alert.clone()), "alert {alert} twice");
            let expr = r["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert}: no metric in {expr}");
            for n in &names {
                check_name(n, &alert);
            }
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{expr}"
            );
            if let Some(f) = r.get("for") {
                let f = f.as_str().expect("for: a duration");
                assert!(
                    f.len() > 1
                        && f[..f.len() - 1].chars().all(|c| c.is_ascii_digit())
                        && f.ends_with(['s', 'm', 'h']),
                    "{alert}: for {f:?}"
                );
            }
            let sev = r["labels"]["severity"].as_str().expect("severity");
            assert!(
                ["info", "warning", "critical"].contains(&sev),
                "{alert}: {sev}"
            );
            let summary = r["annotations"]["summary"].as_str().expect("summary");
            assert!(
                !summary.contains("{value}"),
                "{alert}: untranslated template"
            );
        }
    }
    for rule in default_rules() {
        let yaml_rule = groups
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap())
            .find(|r| r["alert"].as_str() == Some(rule.name.as_str()))
            .unwrap_or_else(|| panic!("default rule {} missing from the YAML", rule.name));
        assert_eq!(yaml_rule["expr"].as_str(), Some(rule.promql().as_str()));
        assert_eq!(
            yaml_rule
                .get("for")
                .and_then(|f| f.as_str())
                .map(str::to_owned),
            (rule.for_secs > 0).then(|| promql_duration(rule.for_secs))
        );
    }
}

#[test]
fn grafana_dashboard_names_only_documented_metrics_and_covers_every_area() {
    let text = std::fs::read_to_string(infra("grafana-dashboard.json")).unwrap();
    let dash: Json = serde_json::from_str(&text).unwrap();
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = dash["panels"].as_array().unwrap();
    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "panel id twice");
        let title = p["title"].as_str().unwrap();
        titles.push(title.to_lowercase());
        let pos = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(pos[k].as_i64().is_some(), "{title}: gridPos.{k}");
        }
        assert!(
            pos["x"].as_i64().unwrap() + pos["w"].as_i64().unwrap() <= 24,
            "{title}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: no metric in {expr}");
            for n in names {
                check_name(&n, title);
                used.insert(m::lookup(&n).unwrap().name);
            }
            if expr.contains("histogram_quantile") {
                assert!(expr.contains("_bucket") && expr.contains("le"), "{expr}");
            }
        }
    }
    for area in [
        "shard lag",
        "throughput",
        "latency",
        "dead letters",
        "feed age",
        "pr-auc",
        "brier",
        "drift",
        "alerts",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(area)),
            "no panel about {area}: {titles:?}"
        );
    }
    // Every metric ops can act on is on the dashboard.
    let missing: Vec<&str> = m::ALL
        .iter()
        .map(|d| d.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(missing.is_empty(), "metrics on no panel: {missing:?}");
}

#[test]
fn the_name_scanner_finds_names_and_only_names() {
    let names = metric_names(
        "histogram_quantile(0.9, sum by (le) (rate(bikeshare_x_bucket[5m]))) / my_bikeshare_y + bikeshare_z",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["bikeshare_x_bucket", "bikeshare_z"]
    );
}
