//! The analysts' view of the lake: the Glue/Athena table definitions
//! (`infra/athena/tables.sql`) and the named analyst queries (`infra/athena/queries.sql`),
//! embedded here so that tests can hold them against the lake's Arrow schemas and run them.
//!
//! - [`tables_sql`] writes the table definitions from the datasets' columns
//!   ([`crate::column`]), then the analysts' views ([`views`]); `infra/athena/tables.sql` is
//!   its output, committed for analysts to paste, and a test fails when the file differs
//!   (`BIKESHARE_BLESS=1 cargo test -p bikeshare-lake tables_sql` rewrites it);
//! - [`views`]: the Athena views over those tables, each defined once here —
//!   `prediction_answers`, each prediction id's last revision (the `answers` step, decision
//!   087), which every query over predictions reads; `bikeshare infra catalog` writes each as a
//!   Glue view ([`ViewDef::presto_view`]) (decision 098);
//! - [`athena_type`] is the Athena (Hive DDL) type of an Arrow column type of the lake;
//! - [`parse_tables`] reads the `CREATE EXTERNAL TABLE` statements (columns, partition keys,
//!   location, table properties) — `lake/tests/it/athena.rs` fails if any column differs from
//!   [`Dataset::schema`](crate::Dataset::schema);
//! - [`parse_queries`] reads the named queries: a `-- name:` header, a `-- description:`,
//!   one `-- param:` line per `?` placeholder (in order), then one SQL statement.
//!
//! `infra/athena/duckdb_lake.py` runs the same SQL text on a local lake with DuckDB
//! (docs/decisions/055).

use std::fmt::Write as _;

use arrow_schema::DataType;

use crate::Dataset;

/// `infra/athena/tables.sql`: one `CREATE EXTERNAL TABLE` per dataset.
pub const TABLES_SQL: &str = include_str!("../../../infra/athena/tables.sql");
/// `infra/athena/queries.sql`: the named analyst queries.
pub const QUERIES_SQL: &str = include_str!("../../../infra/athena/queries.sql");

/// A DDL or query file that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("athena sql: {0}")]
pub struct SqlFileError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SqlFileError> {
    Err(SqlFileError(msg.into()))
}

/// The Athena column type of a lake column type; `None` for a type the lake does not use.
pub fn athena_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Utf8 => "string".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::List(item) => format!("array<{}>", athena_type(item.data_type())?),
        _ => return None,
    })
}

/// The head of `infra/athena/tables.sql`.
const TABLES_HEADER: &str = "\
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
";

/// What a dataset's table holds, its comment in `tables.sql`.
fn table_comment(d: Dataset) -> &'static str {
    match d {
        Dataset::RawEvents => "one row per input event of every kind (partition: event_time)",
        Dataset::StationStatus => "one row per station report, curated (partition: last_reported)",
        Dataset::Features => {
            "one row per feature vector; names of feature_values in the schema schema_id \
             (partition: as_of)"
        }
        Dataset::Predictions => {
            "one row per prediction; p_empty/p_full null when nobody scored (partition: as_of)"
        }
        Dataset::Labels => {
            "one row per labelled prediction, same prediction_id (partition: as_of of the \
             prediction)"
        }
        Dataset::DeadLetters => {
            "one row per rejected input, with the rule it broke (partition: at)"
        }
    }
}

/// Athena's reserved DDL keywords: column names among them are quoted in backticks.
const RESERVED: &str = "\
     all alter and array as authorization between bigint binary boolean both by case cast char \
     column conf constraint commit create cross cube current cursor database date decimal \
     delete describe distinct double drop else end exchange exists extended external extract \
     false fetch float following for foreign from full function grant group grouping having if \
     import in inner insert int integer intersect interval into is join lateral left less like \
     local macro map more none not null numeric of on only or order out outer over partition \
     percent preceding precision preserve primary procedure range reads reduce references \
     regexp revoke right rlike rollback rollup row rows select set smallint start table \
     tablesample then time timestamp to transform trigger true truncate unbounded union \
     uniquejoin update user using values varchar views when where window with";

/// Partition projection of every table: integer `year, month, day, hour` over these ranges,
/// month/day/hour zero-padded like the lake's folder names ([`crate::layout::Hour::path`]).
const PROJECTION: [(&str, &str, Option<&str>); 4] = [
    ("year", "2010,2040", None),
    ("month", "1,12", Some("2")),
    ("day", "1,31", Some("2")),
    ("hour", "0,23", Some("2")),
];

/// The Athena table of every dataset, from its columns: the text of
/// `infra/athena/tables.sql`.
pub fn tables_sql() -> String {
    let mut out = String::from(TABLES_HEADER);
    for d in Dataset::ALL {
        let schema = d.schema();
        let columns: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|f| {
                let name = if reserved(f.name()) {
                    format!("`{}`", f.name())
                } else {
                    f.name().clone()
                };
                // Every type of `Column` has an Athena type; an Arrow name would fail the tests.
                let ty = athena_type(f.data_type()).unwrap_or_else(|| f.data_type().to_string());
                (name, ty)
            })
            .collect();
        let width = columns.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let columns: Vec<String> = columns
            .iter()
            .map(|(n, t)| format!("  {n:<width$} {t}"))
            .collect();
        let mut properties = vec![("projection.enabled".to_owned(), "true".to_owned())];
        for (key, range, digits) in PROJECTION {
            properties.push((format!("projection.{key}.type"), "integer".into()));
            properties.push((format!("projection.{key}.range"), range.into()));
            if let Some(digits) = digits {
                properties.push((format!("projection.{key}.digits"), digits.into()));
            }
        }
        properties.push((
            "storage.location.template".into(),
            format!("${{lake}}/{d}/year=${{year}}/month=${{month}}/day=${{day}}/hour=${{hour}}/"),
        ));
        properties.push(("parquet.compression".into(), "ZSTD".into()));
        let properties: Vec<String> = properties
            .iter()
            .map(|(k, v)| format!("  '{k}' = '{v}'"))
            .collect();
        let _ = write!(
            out,
            "\n-- {d}: {comment}\n\
             CREATE EXTERNAL TABLE IF NOT EXISTS ${{database}}.{d} (\n{columns}\n)\n\
             PARTITIONED BY (year int, month int, day int, hour int)\n\
             STORED AS PARQUET\n\
             LOCATION '${{lake}}/{d}/'\n\
             TBLPROPERTIES (\n{properties}\n);\n",
            comment = table_comment(d),
            columns = columns.join(",\n"),
            properties = properties.join(",\n"),
        );
    }
    for v in views() {
        let _ = write!(
            out,
            "\n-- {name} (a view): {comment}\n\
             CREATE OR REPLACE VIEW ${{database}}.{name} AS\n{sql};\n",
            name = v.name,
            comment = v.comment,
            sql = v.sql,
        );
    }
    out
}

/// A column name as Athena's DDL and Trino's SQL both read it: backticks in DDL, double
/// quotes in SQL, for the names in [`RESERVED`].
fn reserved(name: &str) -> bool {
    RESERVED.split_whitespace().any(|w| w == name)
}

/// The partition keys every table has, after its columns.
const PARTITION_KEYS: [&str; 4] = ["year", "month", "day", "hour"];

/// An Athena view over the lake's tables: a query analysts read as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDef {
    pub name: &'static str,
    /// One line: what a row is.
    pub comment: &'static str,
    /// `(name, Athena type)` in the order the query yields them.
    pub columns: Vec<(String, String)>,
    /// The `SELECT`, over unqualified table names (the view's database).
    pub sql: String,
}

/// The views of `tables.sql` and the catalog template.
///
/// `prediction_answers`: the predictions table holds one row per revision of a prediction id
/// (the update trigger scores a report on arrival and may correct it later, decision 083);
/// an id's answer is its row of the highest revision, a missing revision (rows written
/// before schema version 3) counting as 0 (decision 087). Its columns are the predictions'
/// and the partition keys. The window is partitioned by the partition keys too: an id's
/// revisions share its `as_of`, hence its hour folder, so this changes no answer and lets
/// Athena push a `year`/`month`/`day`/`hour` filter on the view down to the folders.
pub fn views() -> Vec<ViewDef> {
    let schema = Dataset::Predictions.schema();
    let mut columns: Vec<(String, String)> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = athena_type(f.data_type()).unwrap_or_else(|| f.data_type().to_string());
            (f.name().clone(), ty)
        })
        .collect();
    columns.extend(PARTITION_KEYS.map(|k| (k.to_owned(), "int".to_owned())));
    let select: Vec<String> = columns
        .iter()
        .map(|(n, _)| {
            if reserved(n) {
                format!("  \"{n}\"")
            } else {
                format!("  {n}")
            }
        })
        .collect();
    let window = PARTITION_KEYS.map(|k| format!("p.{k}")).join(", ");
    let sql = format!(
        "SELECT\n{select}\n\
         FROM (\n  \
           SELECT\n    \
             p.*,\n    \
             row_number() OVER (\n      \
               PARTITION BY {window}, p.prediction_id\n      \
               ORDER BY COALESCE(p.revision, 0) DESC\n    \
             ) AS revision_rank\n  \
           FROM {table} p\n\
         ) ranked\n\
         WHERE revision_rank = 1",
        select = select.join(",\n"),
        table = Dataset::Predictions,
    );
    vec![ViewDef {
        name: "prediction_answers",
        comment: "each prediction id's answer, its row of the last revision (decision 087)",
        columns,
        sql,
    }]
}

/// The Trino (Presto) type of an Athena DDL type, as a Glue view's definition names it.
pub fn presto_type(athena: &str) -> String {
    let t = athena.trim();
    if let Some(item) = t.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
        return format!("array({})", presto_type(item));
    }
    match t {
        "string" => "varchar".into(),
        "int" => "integer".into(),
        "float" => "real".into(),
        other => other.into(),
    }
}

impl ViewDef {
    /// The view as Athena stores it in Glue: the JSON that `ViewOriginalText` holds in base64
    /// (`/* Presto View: <base64> */`): the SQL, the catalog and database it reads, and its
    /// columns with their Trino types (in the query's order; Athena calls the view stale when
    /// they differ from what the SQL yields).
    pub fn presto_view(&self, database: &str) -> serde_json::Value {
        serde_json::json!({
            "originalSql": self.sql,
            "catalog": "awsdatacatalog",
            "schema": database,
            "columns": self
                .columns
                .iter()
                .map(|(n, t)| serde_json::json!({ "name": n, "type": presto_type(t) }))
                .collect::<Vec<_>>(),
        })
    }
}

/// One `CREATE EXTERNAL TABLE` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The table name, without the `${database}.` qualifier.
    pub name: String,
    /// `(name, type)` in order, names without backticks, types lower case.
    pub columns: Vec<(String, String)>,
    pub partition_keys: Vec<(String, String)>,
    /// The `STORED AS` format, upper case.
    pub stored_as: String,
    pub location: String,
    /// `TBLPROPERTIES`, in order.
    pub properties: Vec<(String, String)>,
}

impl TableDef {
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Removes `--` comments (outside single-quoted strings).
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for line in sql.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '\'' {
                in_str = !in_str;
            } else if c == '-' && prev == '-' && !in_str {
                cut = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// Splits on `;` outside single-quoted strings; empty statements are dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                in_str = !in_str;
                cur.push(c);
            }
            ';' if !in_str => {
                out.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The text inside the parentheses that open at `open` (an index of `(` in `s`), and the
/// index after the closing one.
fn parenthesized(s: &str, open: usize) -> Result<(&str, usize), SqlFileError> {
    let mut depth = 0usize;
    let mut in_str = false;
    for (i, c) in s[open..].char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok((&s[open + 1..open + i], open + i + 1));
                }
            }
            _ => {}
        }
    }
    err(format!("unbalanced parentheses in {:?}", &s[open..]))
}

/// Splits on commas outside `()`, `<>` and quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut in_str, mut start) = (0i32, false, 0usize);
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' | '<' if !in_str => depth += 1,
            ')' | '>' if !in_str => depth -= 1,
            ',' if !in_str && depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

fn parse_columns(list: &str, table: &str) -> Result<Vec<(String, String)>, SqlFileError> {
    split_top_level(list)
        .into_iter()
        .map(|c| {
            let Some((name, ty)) = c.split_once(char::is_whitespace) else {
                return err(format!("{table}: column {c:?} has no type"));
            };
            let ty: String = ty.split_whitespace().collect::<Vec<_>>().join(" ");
            Ok((name.trim_matches('`').to_owned(), ty.to_ascii_lowercase()))
        })
        .collect()
}

fn quoted(s: &str) -> Result<String, SqlFileError> {
    let s = s.trim();
    match s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(v) => Ok(v.to_owned()),
        None => err(format!("expected a quoted string, found {s:?}")),
    }
}

/// Finds `keyword` (case-insensitive, as a word) in `upper` (the upper-cased statement) at or
/// after `from`.
fn find_kw(upper: &str, keyword: &str, from: usize) -> Option<usize> {
    upper[from..].find(keyword).map(|i| i + from)
}

/// Parses every `CREATE EXTERNAL TABLE` of a DDL file (other statements are ignored).
pub fn parse_tables(sql: &str) -> Result<Vec<TableDef>, SqlFileError> {
    let mut out = Vec::new();
    for stmt in statements(&strip_comments(sql)) {
        let upper = stmt.to_ascii_uppercase();
        let Some(create) = find_kw(&upper, "CREATE EXTERNAL TABLE", 0) else {
            continue;
        };
        let mut at = create + "CREATE EXTERNAL TABLE".len();
        if upper[at..].trim_start().starts_with("IF NOT EXISTS") {
            at = find_kw(&upper, "IF NOT EXISTS", at).map_or(at, |i| i + "IF NOT EXISTS".len());
        }
        let Some(open) = stmt[at..].find('(').map(|i| i + at) else {
            return err(format!("no column list in {stmt:?}"));
        };
        let qualified = stmt[at..open].trim();
        let name = qualified
            .rsplit('.')
            .next()
            .unwrap_or(qualified)
            .trim_matches('`')
            .to_owned();
        let (cols, after) = parenthesized(&stmt, open)?;
        let columns = parse_columns(cols, &name)?;

        let partition_keys = match find_kw(&upper, "PARTITIONED BY", after) {
            Some(p) => match stmt[p..].find('(') {
                Some(o) => parse_columns(parenthesized(&stmt, p + o)?.0, &name)?,
                None => return err(format!("{name}: PARTITIONED BY without a list")),
            },
            None => Vec::new(),
        };
        let stored_as = match find_kw(&upper, "STORED AS", after) {
            Some(p) => upper[p + "STORED AS".len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => return err(format!("{name}: no STORED AS")),
        };
        let location = match find_kw(&upper, "LOCATION", after) {
            Some(p) => {
                let rest = &stmt[p + "LOCATION".len()..];
                let end = rest
                    .char_indices()
                    .filter(|(_, c)| *c == '\'')
                    .nth(1)
                    .map_or(rest.len(), |(i, _)| i + 1);
                quoted(&rest[..end])?
            }
            None => return err(format!("{name}: no LOCATION")),
        };
        let properties = match find_kw(&upper, "TBLPROPERTIES", after) {
            Some(p) => match stmt[p..].find('(') {
                Some(o) => split_top_level(parenthesized(&stmt, p + o)?.0)
                    .into_iter()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => Ok((quoted(k)?, quoted(v)?)),
                        None => err(format!("{name}: property {kv:?} is not 'key' = 'value'")),
                    })
                    .collect::<Result<_, _>>()?,
                None => return err(format!("{name}: TBLPROPERTIES without a list")),
            },
            None => Vec::new(),
        };
        out.push(TableDef {
            name,
            columns,
            partition_keys,
            stored_as,
            location,
            properties,
        });
    }
    Ok(out)
}

/// A `?` placeholder of a named query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam {
    pub name: String,
    /// The SQL type it is cast to (`double`, `integer`, ...).
    pub sql_type: String,
    /// The default value, as SQL literal text.
    pub default: String,
    pub doc: String,
}

/// One named analyst query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedQuery {
    pub name: String,
    pub description: String,
    /// In the order of the `?` placeholders.
    pub params: Vec<QueryParam>,
    /// The statement, without its comments and the final `;`.
    pub sql: String,
}

impl NamedQuery {
    /// The `?` placeholders of the statement (outside string literals).
    pub fn placeholders(&self) -> usize {
        let mut in_str = false;
        self.sql
            .chars()
            .filter(|&c| {
                if c == '\'' {
                    in_str = !in_str;
                }
                c == '?' && !in_str
            })
            .count()
    }
}

/// Parses a named-query file: blocks that start at a `-- name:` line (text before the
/// first is the file's preamble).
pub fn parse_queries(sql: &str) -> Result<Vec<NamedQuery>, SqlFileError> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("-- name:") {
            blocks.push(Vec::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    let mut out: Vec<NamedQuery> = Vec::new();
    for block in blocks {
        let header = |key: &str| -> Vec<String> {
            block
                .iter()
                .filter_map(|l| l.trim_start().strip_prefix("--"))
                .filter_map(|l| l.trim_start().strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .collect()
        };
        let name = header("name:").concat();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return err(format!("query name {name:?}: use lower-case letters and _"));
        }
        if out.iter().any(|q| q.name == name) {
            return err(format!("query {name} is defined twice"));
        }
        let description = header("description:").join(" ");
        if description.is_empty() {
            return err(format!("query {name} has no -- description:"));
        }
        let params = header("param:")
            .into_iter()
            .map(|p| {
                let mut it = p.splitn(4, char::is_whitespace);
                match (it.next(), it.next(), it.next()) {
                    (Some(n), Some(t), Some(d)) => Ok(QueryParam {
                        name: n.to_owned(),
                        sql_type: t.to_owned(),
                        default: d.to_owned(),
                        doc: it.next().unwrap_or_default().trim().to_owned(),
                    }),
                    _ => err(format!(
                        "query {name}: param {p:?} is not `name type default doc`"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body: String = block.iter().map(|l| format!("{l}\n")).collect::<String>();
        let stmts = statements(&strip_comments(&body));
        let [stmt] = stmts.as_slice() else {
            return err(format!(
                "query {name} holds {} statements, not one",
                stmts.len()
            ));
        };
        let q = NamedQuery {
            name,
            description,
            params,
            sql: stmt.clone(),
        };
        if q.placeholders() != q.params.len() {
            return err(format!(
                "query {}: {} `?` placeholders but {} -- param: lines",
                q.name,
                q.placeholders(),
                q.params.len()
            ));
        }
        out.push(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_schema::{Field, TimeUnit};

    /// `infra/athena/tables.sql` is [`tables_sql`]'s output; `BIKESHARE_BLESS=1` rewrites it.
    #[test]
    fn tables_sql_is_generated_from_the_lake_schemas() {
        let generated = tables_sql();
        if std::env::var_os("BIKESHARE_BLESS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/athena/tables.sql");
            std::fs::write(path, &generated).unwrap();
            return;
        }
        assert!(
            TABLES_SQL == generated,
            "infra/athena/tables.sql differs from the lake's schemas: run \
             BIKESHARE_BLESS=1 cargo test -p bikeshare-lake tables_sql, and commit the file"
        );
    }

    #[test]
    fn arrow_types_map_to_athena_types() {
        assert_eq!(athena_type(&DataType::Utf8).as_deref(), Some("string"));
        assert_eq!(
            athena_type(&DataType::Timestamp(TimeUnit::Millisecond, None)).as_deref(),
            Some("timestamp")
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
        assert_eq!(athena_type(&list).as_deref(), Some("array<float>"));
        // A zoned timestamp would be read differently by Athena and DuckDB: not mapped.
        assert_eq!(
            athena_type(&DataType::Timestamp(
                TimeUnit::Millisecond,
                Some("UTC".into())
            )),
            None
        );
    }

    #[test]
    fn a_create_table_statement_is_parsed() {
        let ddl = "-- c\nCREATE EXTERNAL TABLE IF NOT EXISTS ${db}.t (\n  a string, -- x\n  `trigger` array<float>,\n  m map<string,int>\n)\nPARTITIONED BY (year int)\nSTORED AS PARQUET\nLOCATION 's3://b/t/'\nTBLPROPERTIES ('projection.enabled' = 'true', 'k' = 'a=b');\nSELECT 1;";
        let t = parse_tables(ddl).unwrap();
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.name, "t");
        assert_eq!(
            t.columns,
            vec![
                ("a".into(), "string".into()),
                ("trigger".into(), "array<float>".into()),
                ("m".into(), "map<string,int>".into())
            ]
        );
        assert_eq!(t.partition_keys, vec![("year".into(), "int".into())]);
        assert_eq!(t.stored_as, "PARQUET");
        assert_eq!(t.location, "s3://b/t/");
        assert_eq!(t.property("projection.enabled"), Some("true"));
        assert_eq!(t.property("k"), Some("a=b"));
    }

    #[test]
    fn named_queries_are_parsed_and_their_placeholders_counted() {
        let q = "preamble\n-- name: a_b\n-- description: first\n--   more\n-- param: t double 0.5 the threshold\nSELECT x FROM y WHERE p >= ? AND s = '?';\n\n-- name: c\n-- description: second\nSELECT 1;\n";
        let qs = parse_queries(q).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].name, "a_b");
        assert_eq!(qs[0].params[0].default, "0.5");
        assert_eq!(qs[0].params[0].doc, "the threshold");
        assert_eq!(qs[0].placeholders(), 1);
        assert_eq!(qs[0].sql, "SELECT x FROM y WHERE p >= ? AND s = '?'");
        assert_eq!(qs[1].params, vec![]);
        assert!(parse_queries("-- name: a\n-- description: d\nSELECT ?;").is_err());
        assert!(parse_queries("-- name: a\nSELECT 1;").is_err());
        assert!(parse_queries("-- name: a\n-- description: d\nSELECT 1; SELECT 2;").is_err());
    }
}
