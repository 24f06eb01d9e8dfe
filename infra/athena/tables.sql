-- Glue / Athena tables over the Parquet lake, one per dataset (docs/decisions/055).
--
-- Substitute before running (each statement separately, in the Athena console or
-- `aws athena start-query-execution`):
--   ${database}  the Glue database, e.g. bikeshare_dev (CREATE DATABASE IF NOT EXISTS first)
--   ${lake}      the lake's location, e.g. s3://bikeshare-dev-387706002632-ca-central-1/lake
--                (no trailing slash; the `[lake] url` the jobs write to)
-- `${year}`, `${month}`, `${day}` and `${hour}` in storage.location.template are Athena's own
-- projection placeholders: leave them as they are.
--
-- Layout: <dataset>/year=YYYY/month=MM/day=DD/hour=HH/<writer>-<epoch>.parquet, the UTC hour of
-- each row's event time. Partitions are projected (no crawler, no MSCK REPAIR): integer year,
-- month, day, hour, month/day/hour zero-padded to two digits. Filter on year/month/day(/hour)
-- to read only those folders.
--
-- After the tables, the views (CREATE OR REPLACE VIEW): run those with ${database} as the
-- query's database (the console's Database, or `--query-execution-context
-- Database=${database}`), since a view reads its tables unqualified.
--
-- Generated from the lake's column tables (sinks/lake/src/dataset.rs) and the views of
-- `bikeshare_lake::athena::views` by `bikeshare_lake::athena::tables_sql`: do not edit. The test
-- `tables_sql_is_generated_from_the_lake_schemas` fails when this file differs
-- (`BIKESHARE_BLESS=1 cargo test -p bikeshare-lake tables_sql` rewrites it), and
-- `athena_tables_match_the_lake_schemas` (sinks/lake/tests/it/athena.rs) parses it and checks
-- names, order and types against the Arrow schemas.

-- raw_events: one row per input event of every kind (partition: event_time)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.raw_events (
  event_id       string,
  system_id      string,
  source         string,
  kind           string,
  event_time     timestamp,
  ingest_time    timestamp,
  schema_version int,
  payload        string
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/raw_events/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/raw_events/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- station_status: one row per station report, curated (partition: last_reported)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.station_status (
  event_id             string,
  system_id            string,
  station_id           string,
  last_reported        timestamp,
  ingest_time          timestamp,
  num_bikes_available  int,
  num_ebikes_available int,
  num_bikes_disabled   int,
  num_docks_available  int,
  num_docks_disabled   int,
  is_installed         boolean,
  is_renting           boolean,
  is_returning         boolean,
  is_empty             boolean,
  is_full              boolean,
  vehicle_types_json   string
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/station_status/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/station_status/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- features: one row per feature vector; names of feature_values in the schema schema_id (partition: as_of)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.features (
  system_id      string,
  station_id     string,
  as_of          timestamp,
  schema_id      string,
  feature_values array<float>
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/features/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/features/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- predictions: one row per prediction; p_empty/p_full null when nobody scored (partition: as_of)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.predictions (
  prediction_id     string,
  system_id         string,
  station_id        string,
  as_of             timestamp,
  horizon_minutes   int,
  p_empty           float,
  p_full            float,
  model_name        string,
  model_version     string,
  feature_schema_id string,
  `trigger`         string,
  scored_by         string,
  schema_version    int,
  revision          int
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/predictions/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/predictions/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- labels: one row per labelled prediction, same prediction_id (partition: as_of of the prediction)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.labels (
  prediction_id   string,
  system_id       string,
  station_id      string,
  as_of           timestamp,
  horizon_minutes int,
  went_empty      boolean,
  went_full       boolean,
  empty_at_as_of  boolean,
  full_at_as_of   boolean,
  observations    int,
  schema_version  int
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/labels/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/labels/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- dead_letters: one row per rejected input, with the rule it broke (partition: at)
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.dead_letters (
  dead_letter_id string,
  system_id      string,
  source         string,
  rule           string,
  message        string,
  raw            string,
  raw_truncated  boolean,
  at             timestamp,
  schema_version int
)
PARTITIONED BY (year int, month int, day int, hour int)
STORED AS PARQUET
LOCATION '${lake}/dead_letters/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2010,2040',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = '${lake}/dead_letters/year=${year}/month=${month}/day=${day}/hour=${hour}/',
  'parquet.compression' = 'ZSTD'
);

-- prediction_answers (a view): each prediction id's answer, its row of the last revision (decision 087)
CREATE OR REPLACE VIEW ${database}.prediction_answers AS
SELECT
  prediction_id,
  system_id,
  station_id,
  as_of,
  horizon_minutes,
  p_empty,
  p_full,
  model_name,
  model_version,
  feature_schema_id,
  "trigger",
  scored_by,
  schema_version,
  revision,
  year,
  month,
  day,
  hour
FROM (
  SELECT
    p.*,
    row_number() OVER (
      PARTITION BY p.year, p.month, p.day, p.hour, p.prediction_id
      ORDER BY COALESCE(p.revision, 0) DESC
    ) AS revision_rank
  FROM predictions p
) ranked
WHERE revision_rank = 1;
