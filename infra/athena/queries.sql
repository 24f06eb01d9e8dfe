-- Named analyst queries over the lake's tables (infra/athena/tables.sql), docs/decisions/055.
--
-- One source of truth for Athena (Trino) and DuckDB: the same text runs on both, run on a
-- small known history by `lake/tests/athena.rs`, and locally with
-- `python3 infra/athena/duckdb_lake.py --lake <dir> [--query NAME] [--param name=value]`.
-- To keep it portable the queries use only what both engines read the same way: CASE sums
-- rather than count_if/filter, ordinals in GROUP BY, date_diff('millisecond', ...), casts to
-- double before dividing, no greatest/least over nullable values, and "at" quoted.
--
-- Format of each query: `-- name:`, `-- description:` (one or more lines), one
-- `-- param: <name> <type> <default> <doc>` per `?` placeholder in order, then one
-- statement. In Athena, select the lake's database, run the statement and give the
-- parameters when asked (or `--execution-parameters` of `aws athena start-query-execution`).
-- Times are UTC. On Athena, add `year = ... AND month = ...` (and `day`, `hour`) predicates
-- to read only those partitions.
--
-- A prediction id may have several rows: the update trigger scores a report on arrival and
-- may correct it later (same prediction_id, revision 1; decision 083). Every query over
-- predictions reads the view `prediction_answers` (tables.sql): each id's last revision only
-- (the `answers` step, decision 087; rows written before schema version 3 have no revision,
-- NULL, and count as revision 0). Read it, not `predictions`, for answers of your own
-- (decision 098).

-- name: stockout_rate_by_station_hour
-- description: Share of an installed station's reports that found it empty (no bike to rent)
-- description: or full (no dock to return), by station and UTC hour of day.
SELECT
  system_id,
  station_id,
  CAST(extract(hour FROM last_reported) AS integer) AS hour_of_day,
  count(*) AS reports,
  sum(CASE WHEN is_empty THEN 1 ELSE 0 END) AS empty_reports,
  sum(CASE WHEN is_full THEN 1 ELSE 0 END) AS full_reports,
  CAST(sum(CASE WHEN is_empty THEN 1 ELSE 0 END) AS double) / count(*) AS empty_rate,
  CAST(sum(CASE WHEN is_full THEN 1 ELSE 0 END) AS double) / count(*) AS full_rate
FROM station_status
WHERE is_installed
GROUP BY 1, 2, 3
ORDER BY system_id, station_id, hour_of_day;

-- name: model_precision_by_day
-- description: Precision and recall of each model at the operating threshold, per UTC day of
-- description: the prediction: predictions joined to their labels by prediction_id (unlabelled
-- description: and unscored predictions are left out). Positive means p >= threshold. A
-- description: corrected prediction counts once, with its last revision.
-- param: threshold double 0.5 the operating threshold (the model's, from its evaluation)
WITH params AS (
  SELECT CAST(? AS double) AS threshold
),
scored AS (
  SELECT
    CAST(p.as_of AS date) AS prediction_day,
    p.model_name,
    p.model_version,
    CASE WHEN p.p_empty >= params.threshold THEN 1 ELSE 0 END AS predicted_empty,
    CASE WHEN p.p_full >= params.threshold THEN 1 ELSE 0 END AS predicted_full,
    CASE WHEN l.went_empty THEN 1 ELSE 0 END AS went_empty,
    CASE WHEN l.went_full THEN 1 ELSE 0 END AS went_full
  FROM prediction_answers p
  JOIN labels l ON l.prediction_id = p.prediction_id
  CROSS JOIN params
  WHERE p.p_empty IS NOT NULL AND p.p_full IS NOT NULL
)
SELECT
  prediction_day,
  model_name,
  model_version,
  count(*) AS labelled,
  sum(predicted_empty) AS empty_predicted,
  sum(went_empty) AS empty_actual,
  sum(predicted_empty * went_empty) AS empty_true_positives,
  CAST(sum(predicted_empty * went_empty) AS double) / NULLIF(sum(predicted_empty), 0) AS empty_precision,
  CAST(sum(predicted_empty * went_empty) AS double) / NULLIF(sum(went_empty), 0) AS empty_recall,
  sum(predicted_full) AS full_predicted,
  sum(went_full) AS full_actual,
  sum(predicted_full * went_full) AS full_true_positives,
  CAST(sum(predicted_full * went_full) AS double) / NULLIF(sum(predicted_full), 0) AS full_precision,
  CAST(sum(predicted_full * went_full) AS double) / NULLIF(sum(went_full), 0) AS full_recall
FROM scored
GROUP BY 1, 2, 3
ORDER BY prediction_day, model_name, model_version;

-- name: freshness_gaps
-- description: Gaps between consecutive reports of a station longer than a threshold: when
-- description: the station (or its feed) went quiet, longest first.
-- param: min_gap_minutes double 15 report gaps longer than this many minutes
WITH params AS (
  SELECT CAST(? AS double) AS min_gap_minutes
),
reports AS (
  SELECT
    system_id,
    station_id,
    last_reported,
    lag(last_reported) OVER (PARTITION BY system_id, station_id ORDER BY last_reported) AS previous_report
  FROM station_status
)
SELECT
  r.system_id,
  r.station_id,
  r.previous_report AS gap_start,
  r.last_reported AS gap_end,
  CAST(date_diff('millisecond', r.previous_report, r.last_reported) AS double) / 60000 AS gap_minutes
FROM reports r
CROSS JOIN params
WHERE r.previous_report IS NOT NULL
  AND date_diff('millisecond', r.previous_report, r.last_reported) > params.min_gap_minutes * 60000
ORDER BY gap_minutes DESC, r.system_id, r.station_id, gap_start;

-- name: top_risky_stations
-- description: The stations most likely to run empty or full: each station's latest scored
-- description: prediction (its last revision), ranked by its larger probability (ties by
-- description: system and station).
-- param: top_n integer 20 how many stations
WITH params AS (
  SELECT CAST(? AS integer) AS top_n
),
latest AS (
  SELECT
    system_id,
    station_id,
    as_of,
    p_empty,
    p_full,
    model_name,
    model_version,
    row_number() OVER (PARTITION BY system_id, station_id ORDER BY as_of DESC, prediction_id DESC) AS recency
  FROM prediction_answers
  WHERE p_empty IS NOT NULL AND p_full IS NOT NULL
),
ranked AS (
  SELECT
    system_id,
    station_id,
    as_of,
    p_empty,
    p_full,
    model_name,
    model_version,
    CASE WHEN p_empty >= p_full THEN 'empty' ELSE 'full' END AS risk_of,
    CASE WHEN p_empty >= p_full THEN p_empty ELSE p_full END AS risk,
    row_number() OVER (
      ORDER BY CASE WHEN p_empty >= p_full THEN p_empty ELSE p_full END DESC, system_id, station_id
    ) AS risk_rank
  FROM latest
  WHERE recency = 1
)
SELECT
  risk_rank,
  system_id,
  station_id,
  as_of,
  risk_of,
  risk,
  p_empty,
  p_full,
  model_name,
  model_version
FROM ranked
CROSS JOIN params
WHERE risk_rank <= params.top_n
ORDER BY risk_rank;

-- name: calibration_by_bin
-- description: Reliability of the probabilities: labelled predictions in ten equal-width bins
-- description: of p_empty (target empty) and p_full (target full), the mean predicted
-- description: probability against the observed rate in each bin (a corrected prediction
-- description: once, with its last revision).
WITH joined AS (
  SELECT p.p_empty, p.p_full, l.went_empty, l.went_full
  FROM prediction_answers p
  JOIN labels l ON l.prediction_id = p.prediction_id
  WHERE p.p_empty IS NOT NULL AND p.p_full IS NOT NULL
),
binned AS (
  SELECT
    'empty' AS target,
    CAST(p_empty AS double) AS p,
    CASE WHEN went_empty THEN 1 ELSE 0 END AS outcome
  FROM joined
  UNION ALL
  SELECT
    'full' AS target,
    CAST(p_full AS double) AS p,
    CASE WHEN went_full THEN 1 ELSE 0 END AS outcome
  FROM joined
)
SELECT
  target,
  CASE WHEN p >= 1 THEN 9 ELSE CAST(floor(p * 10) AS integer) END AS bin,
  count(*) AS predictions,
  avg(p) AS mean_predicted,
  avg(CAST(outcome AS double)) AS observed_rate
FROM binned
GROUP BY 1, 2
ORDER BY target, bin;

-- name: scoring_path_by_day
-- description: Who scored the predictions, per UTC day: the in-process model, the endpoint,
-- description: the fallback for a failed endpoint, or nobody (unavailable), with each share:
-- description: predictions by who scored their last revision.
WITH daily AS (
  SELECT
    CAST(as_of AS date) AS prediction_day,
    scored_by,
    count(*) AS predictions
  FROM prediction_answers
  GROUP BY 1, 2
)
SELECT
  prediction_day,
  scored_by,
  predictions,
  CAST(predictions AS double) / sum(predictions) OVER (PARTITION BY prediction_day) AS share
FROM daily
ORDER BY prediction_day, scored_by;

-- name: dead_letters_by_rule_and_day
-- description: Rejected inputs per UTC day, system and the rule they broke (raw_truncated:
-- description: how many kept only the head of an oversized input).
SELECT
  CAST("at" AS date) AS dead_letter_day,
  system_id,
  rule,
  count(*) AS dead_letters,
  sum(CASE WHEN raw_truncated THEN 1 ELSE 0 END) AS truncated
FROM dead_letters
GROUP BY 1, 2, 3
ORDER BY dead_letter_day, system_id, dead_letters DESC, rule;
