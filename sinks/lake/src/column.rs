//! A dataset's columns, declared once: each [`Column`] has a name, a type and the function
//! that reads its value from a record. A dataset's column table
//! ([`LakeRecord::COLUMNS`](crate::LakeRecord::COLUMNS)) is all its schema, and everything
//! else is derived from it:
//! - the Arrow fields of its files ([`fields`], behind [`Dataset::schema`](crate::Dataset::schema));
//! - the Arrow arrays of a batch of records ([`encode`]);
//! - its row as one JSON object ([`write_json`], behind [`JsonRow`](crate::JsonRow));
//! - its Athena table ([`crate::athena::tables_sql`]).
//!
//! Decoding goes the other way, from named columns back to a record ([`Columns`]), and is
//! checked against the table by the round-trip tests.
//!
//! This module knows no dataset: [`crate::dataset`] holds the tables and calls it with
//! them, so the two do not import each other.
//!
//! | column | Arrow type | JSON |
//! | --- | --- | --- |
//! | [`Column::str`], [`Column::text`] | `Utf8` | string |
//! | [`Column::opt_text`] | `Utf8`, nullable | string or `null` |
//! | [`Column::time`] | `Timestamp(ms)`, no time zone | integer milliseconds since the epoch |
//! | [`Column::int`] | `Int32` (larger values saturate) | integer |
//! | [`Column::opt_int`] | `Int32`, nullable | integer or `null` |
//! | [`Column::bool`] | `Boolean` | `true`/`false` |
//! | [`Column::prob`] | `Float32`, nullable (NaN is null) | shortest `f32` or `null` |
//! | [`Column::floats`] | `List(Float32, items nullable)` | array of shortest `f32` or `null` |

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use bikeshare_types::Timestamp;
use serde::Serialize;

use crate::LakeError;

/// One column of `T`'s dataset: its name, and its value in a record by type.
pub struct Column<T> {
    name: &'static str,
    value: Value<T>,
}

impl<T> std::fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column")
            .field("name", &self.name)
            .field("type", &self.data_type())
            .finish()
    }
}

/// How a column reads its value from a record, by column type.
enum Value<T> {
    Str(fn(&T) -> &str),
    Text(fn(&T) -> String),
    OptText(fn(&T) -> Option<String>),
    Time(fn(&T) -> Timestamp),
    Int(fn(&T) -> i64),
    OptInt(fn(&T) -> Option<u32>),
    Bool(fn(&T) -> bool),
    Prob(fn(&T) -> f32),
    Floats(fn(&T) -> &[Option<f32>]),
}

impl<T> Column<T> {
    /// A string borrowed from the record.
    pub const fn str(name: &'static str, get: fn(&T) -> &str) -> Self {
        Self::of(name, Value::Str(get))
    }
    /// A string computed from the record (JSON text of a nested value).
    pub const fn text(name: &'static str, get: fn(&T) -> String) -> Self {
        Self::of(name, Value::Text(get))
    }
    /// A computed string, or null.
    pub const fn opt_text(name: &'static str, get: fn(&T) -> Option<String>) -> Self {
        Self::of(name, Value::OptText(get))
    }
    /// A timestamp in milliseconds, UTC, stored without a time zone.
    pub const fn time(name: &'static str, get: fn(&T) -> Timestamp) -> Self {
        Self::of(name, Value::Time(get))
    }
    /// An integer stored as `int32` (Athena has no unsigned types).
    pub const fn int(name: &'static str, get: fn(&T) -> i64) -> Self {
        Self::of(name, Value::Int(get))
    }
    /// An optional unsigned integer stored as a nullable `int32`.
    pub const fn opt_int(name: &'static str, get: fn(&T) -> Option<u32>) -> Self {
        Self::of(name, Value::OptInt(get))
    }
    pub const fn bool(name: &'static str, get: fn(&T) -> bool) -> Self {
        Self::of(name, Value::Bool(get))
    }
    /// A probability; NaN (nobody computed it) is stored as null.
    pub const fn prob(name: &'static str, get: fn(&T) -> f32) -> Self {
        Self::of(name, Value::Prob(get))
    }
    /// A list of floats, each possibly missing (null).
    pub const fn floats(name: &'static str, get: fn(&T) -> &[Option<f32>]) -> Self {
        Self::of(name, Value::Floats(get))
    }

    const fn of(name: &'static str, value: Value<T>) -> Self {
        Self { name, value }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn data_type(&self) -> DataType {
        match self.value {
            Value::Str(_) | Value::Text(_) | Value::OptText(_) => DataType::Utf8,
            Value::Time(_) => DataType::Timestamp(TimeUnit::Millisecond, None),
            Value::Int(_) | Value::OptInt(_) => DataType::Int32,
            Value::Bool(_) => DataType::Boolean,
            Value::Prob(_) => DataType::Float32,
            Value::Floats(_) => {
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
            }
        }
    }

    pub fn nullable(&self) -> bool {
        matches!(
            self.value,
            Value::OptText(_) | Value::OptInt(_) | Value::Prob(_)
        )
    }

    pub fn field(&self) -> Field {
        Field::new(self.name, self.data_type(), self.nullable())
    }

    /// The column's values in `rows`.
    fn array(&self, rows: &[T]) -> ArrayRef {
        let rows = rows.iter();
        match self.value {
            Value::Str(get) => Arc::new(StringArray::from_iter_values(rows.map(get))),
            Value::Text(get) => Arc::new(StringArray::from_iter_values(rows.map(get))),
            Value::OptText(get) => Arc::new(StringArray::from_iter(rows.map(get))),
            Value::Time(get) => Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.map(|r| get(r).0),
            )),
            Value::Int(get) => {
                Arc::new(Int32Array::from_iter_values(rows.map(|r| saturate(get(r)))))
            }
            Value::OptInt(get) => Arc::new(Int32Array::from_iter(
                rows.map(|r| get(r).map(|v| saturate(i64::from(v)))),
            )),
            Value::Bool(get) => Arc::new(BooleanArray::from_iter(rows.map(|r| Some(get(r))))),
            Value::Prob(get) => Arc::new(Float32Array::from_iter(rows.map(|r| prob(get(r))))),
            Value::Floats(get) => Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
                rows.map(|r| Some(get(r).iter().copied())),
            )),
        }
    }

    /// The column's value in `row` as JSON.
    fn write_json_value(&self, row: &T, out: &mut Vec<u8>) {
        match self.value {
            Value::Str(get) => json(out, get(row)),
            Value::Text(get) => json(out, &get(row)),
            Value::OptText(get) => json(out, &get(row)),
            Value::Time(get) => json(out, &get(row).0),
            Value::Int(get) => json(out, &get(row)),
            Value::OptInt(get) => json(out, &get(row)),
            Value::Bool(get) => json(out, &get(row)),
            Value::Prob(get) => json(out, &prob(get(row))),
            Value::Floats(get) => json(out, get(row)),
        }
    }
}

fn saturate(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// NaN (a probability nobody computed) is null.
fn prob(p: f32) -> Option<f32> {
    (!p.is_nan()).then_some(p)
}

fn json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    // Serialising strings, numbers and lists of them into a Vec cannot fail (no I/O, no maps);
    // a `null` would be caught by the schema tests.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// The Arrow fields of a column table, in order.
pub fn fields<T>(columns: &[Column<T>]) -> Vec<Field> {
    columns.iter().map(Column::field).collect()
}

/// `rows` as one record batch of `schema`, the fields of `columns` (the table of the dataset
/// named `dataset`).
pub fn encode<T>(
    dataset: &'static str,
    schema: SchemaRef,
    columns: &[Column<T>],
    rows: &[T],
) -> Result<RecordBatch, LakeError> {
    let arrays = columns.iter().map(|c| c.array(rows)).collect();
    RecordBatch::try_new(schema, arrays).map_err(|e| LakeError::Encode {
        dataset,
        message: e.to_string(),
    })
}

/// `row` as one JSON object (no newline): the `columns` in order, keyed by name.
pub fn write_json<T>(columns: &[Column<T>], row: &T, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json(out, c.name);
        out.push(b':');
        c.write_json_value(row, out);
    }
    out.push(b'}');
}

/// Typed column access for decoding, with a clear error when a file does not match.
pub(crate) struct Columns<'a> {
    dataset: &'static str,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    /// The columns of `batch`, a file of the dataset named `dataset`.
    pub(crate) fn new(dataset: &'static str, batch: &'a RecordBatch) -> Self {
        Self { dataset, batch }
    }
    pub(crate) fn rows(&self) -> std::ops::Range<usize> {
        0..self.batch.num_rows()
    }
    pub(crate) fn err(&self, column: &str, what: &str) -> LakeError {
        LakeError::Decode {
            dataset: self.dataset,
            message: format!("column {column}: {what}"),
        }
    }
    fn col(&self, name: &str) -> Result<&'a ArrayRef, LakeError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| self.err(name, "missing"))
    }
    pub(crate) fn str(&self, name: &str) -> Result<&'a StringArray, LakeError> {
        self.col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.err(name, "not a string column"))
    }
    pub(crate) fn int(&self, name: &str) -> Result<&'a Int32Array, LakeError> {
        self.col(name)?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| self.err(name, "not an int32 column"))
    }
    /// An int32 column that older files may lack (`None` then).
    pub(crate) fn opt_int(&self, name: &str) -> Result<Option<&'a Int32Array>, LakeError> {
        match self.batch.column_by_name(name) {
            None => Ok(None),
            Some(_) => self.int(name).map(Some),
        }
    }
    pub(crate) fn float(&self, name: &str) -> Result<&'a Float32Array, LakeError> {
        self.col(name)?
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| self.err(name, "not a float32 column"))
    }
    pub(crate) fn time(&self, name: &str) -> Result<&'a TimestampMillisecondArray, LakeError> {
        self.col(name)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| self.err(name, "not a millisecond timestamp column"))
    }
    pub(crate) fn bool(&self, name: &str) -> Result<&'a BooleanArray, LakeError> {
        self.col(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.err(name, "not a boolean column"))
    }
    pub(crate) fn list(&self, name: &str) -> Result<&'a ListArray, LakeError> {
        self.col(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.err(name, "not a list column"))
    }
}

/// An `int32` read back as the unsigned contract field it stores (0 if negative).
pub(crate) fn uint(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}
/// An `int32` schema version read back (0 if out of range).
pub(crate) fn version(v: i32) -> u16 {
    u16::try_from(v).unwrap_or(0)
}
pub(crate) fn opt_uint(a: &Int32Array, i: usize) -> Option<u32> {
    a.is_valid(i).then(|| uint(a.value(i)))
}
pub(crate) fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}
/// A nullable probability read back: null is NaN, as in the contract.
pub(crate) fn opt_prob(a: &Float32Array, i: usize) -> f32 {
    if a.is_valid(i) { a.value(i) } else { f32::NAN }
}
