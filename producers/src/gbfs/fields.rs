//! Reading typed fields out of GBFS JSON objects, leniently where GBFS versions differ.
//!
//! Every reader returns a [`RuleViolation`] naming the rule (`gbfs.field.missing`,
//! `gbfs.type`, `gbfs.time.invalid`) and the field, so the caller can dead-letter one record
//! and keep going. `null` counts as absent. Leniency is limited to what real feeds do across
//! versions: booleans as `0`/`1` (GBFS 1.x), integers written as `3.0` (JSON Schema counts
//! them as integers too), timestamps as POSIX seconds or RFC 3339, names as a plain string or
//! a GBFS 3.0 list of `{text, language}`.

use bikeshare_types::Timestamp;
use serde_json::{Map, Value};

use super::rules::{RuleViolation, rule};

/// The JSON type name of `v`, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A field, or `None` when absent or `null`.
pub(crate) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A required field. `what` names the record in messages (`station 42`).
pub(crate) fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<&'a Value, RuleViolation> {
    get(obj, key).ok_or_else(|| missing(what, key))
}

pub(crate) fn missing(what: &str, key: &str) -> RuleViolation {
    RuleViolation::new(
        rule::FIELD_MISSING,
        format!("{what}: required field `{key}` is missing"),
    )
}

pub(crate) fn wrong_type(what: &str, key: &str, expected: &str, found: &Value) -> RuleViolation {
    RuleViolation::new(
        rule::TYPE,
        format!(
            "{what}: `{key}` must be {expected}, found {} {}",
            kind(found),
            short(found)
        ),
    )
}

/// A value cut for messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        return s;
    }
    let mut end = 60;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn as_str<'a>(v: &'a Value, what: &str, key: &str) -> Result<&'a str, RuleViolation> {
    v.as_str()
        .ok_or_else(|| wrong_type(what, key, "a string", v))
}

/// An integer; `3.0` counts (as in JSON Schema), `3.5` and `"3"` do not.
pub(crate) fn as_i64(v: &Value, what: &str, key: &str) -> Result<i64, RuleViolation> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    if v.is_u64() {
        // Larger than i64::MAX: certainly not a count or a time.
        return Ok(i64::MAX);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(wrong_type(what, key, "an integer", v)),
    }
}

pub(crate) fn opt_i64(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<i64>, RuleViolation> {
    get(obj, key).map(|v| as_i64(v, what, key)).transpose()
}

/// An optional count: absent is `None`, but an explicit `null` is a type error. GBFS types
/// every count as an integer; a feed that writes `"num_docks_available": null` says it does not
/// know, which must not pass as "this station has no docks to report" (the field is absent
/// only for stations without docks).
pub(crate) fn opt_count(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<i64>, RuleViolation> {
    match obj.get(key) {
        Some(Value::Null) => Err(wrong_type(what, key, "an integer", &Value::Null)),
        _ => opt_i64(obj, key, what),
    }
}

pub(crate) fn as_f64(v: &Value, what: &str, key: &str) -> Result<f64, RuleViolation> {
    v.as_f64()
        .ok_or_else(|| wrong_type(what, key, "a number", v))
}

/// A boolean; GBFS 1.x feeds write `1`/`0`.
pub(crate) fn as_bool(v: &Value, what: &str, key: &str) -> Result<bool, RuleViolation> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        other => Err(wrong_type(what, key, "a boolean (or 0/1)", other)),
    }
}

pub(crate) fn opt_bool(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<bool>, RuleViolation> {
    get(obj, key).map(|v| as_bool(v, what, key)).transpose()
}

/// A time: POSIX seconds (GBFS 1.x/2.x, fractions allowed) or an RFC 3339 string (3.0).
pub(crate) fn as_timestamp(v: &Value, what: &str, key: &str) -> Result<Timestamp, RuleViolation> {
    match v {
        Value::Number(n) => {
            if let Some(s) = n.as_i64() {
                Ok(Timestamp::from_secs(s))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.abs() < 1.0e13) {
                Ok(Timestamp::from_millis((f * 1000.0).round() as i64))
            } else {
                Err(RuleViolation::new(
                    rule::TIME_INVALID,
                    format!("{what}: `{key}` is out of range: {n}"),
                ))
            }
        }
        Value::String(s) => Timestamp::parse_rfc3339(s).ok_or_else(|| {
            RuleViolation::new(
                rule::TIME_INVALID,
                format!("{what}: `{key}` is not an RFC 3339 time: {}", short(v)),
            )
        }),
        other => Err(wrong_type(
            what,
            key,
            "POSIX seconds or an RFC 3339 string",
            other,
        )),
    }
}

/// Text that GBFS 3.0 localises: a plain string, or `[{"text", "language"}]` from which the
/// `preferred` language is taken, else English, else the first entry.
pub(crate) fn localized_text(
    v: &Value,
    preferred: Option<&str>,
    what: &str,
    key: &str,
) -> Result<String, RuleViolation> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let mut entries = Vec::with_capacity(items.len());
            for item in items {
                let Some(obj) = item.as_object() else {
                    return Err(wrong_type(what, key, "a list of {text, language}", item));
                };
                let text = as_str(required(obj, "text", what)?, what, &format!("{key}[].text"))?;
                let language = get(obj, "language").and_then(Value::as_str);
                entries.push((text, language));
            }
            pick_language(&entries, preferred, |(_, l)| *l)
                .map(|(t, _)| (*t).to_owned())
                .ok_or_else(|| {
                    RuleViolation::new(rule::FIELD_MISSING, format!("{what}: `{key}` is empty"))
                })
        }
        other => Err(wrong_type(
            what,
            key,
            "a string or a list of {text, language}",
            other,
        )),
    }
}

/// The entry in `preferred` language, else English (`en`, `en-*`), else the first.
pub(crate) fn pick_language<'a, T>(
    entries: &'a [T],
    preferred: Option<&str>,
    language: impl Fn(&T) -> Option<&str>,
) -> Option<&'a T> {
    let matches = |want: &str, got: Option<&str>| {
        got.is_some_and(|g| {
            g.eq_ignore_ascii_case(want)
                || g.split('-')
                    .next()
                    .is_some_and(|p| p.eq_ignore_ascii_case(want))
        })
    };
    preferred
        .and_then(|p| {
            entries
                .iter()
                .find(|e| language(e).is_some_and(|l| l.eq_ignore_ascii_case(p)))
                .or_else(|| entries.iter().find(|e| matches(p, language(e))))
        })
        .or_else(|| entries.iter().find(|e| matches("en", language(e))))
        .or_else(|| entries.first())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integers_accept_integral_floats_only() {
        assert_eq!(as_i64(&json!(3), "s", "k").unwrap(), 3);
        assert_eq!(as_i64(&json!(3.0), "s", "k").unwrap(), 3);
        assert_eq!(as_i64(&json!(-2), "s", "k").unwrap(), -2);
        assert_eq!(as_i64(&json!(u64::MAX), "s", "k").unwrap(), i64::MAX);
        for bad in [json!(3.5), json!("3"), json!(true), json!([3])] {
            assert_eq!(
                as_i64(&bad, "s", "k").unwrap_err().rule,
                rule::TYPE,
                "{bad}"
            );
        }
    }

    #[test]
    fn booleans_accept_0_and_1() {
        assert!(as_bool(&json!(1), "s", "k").unwrap());
        assert!(!as_bool(&json!(0), "s", "k").unwrap());
        assert!(as_bool(&json!(true), "s", "k").unwrap());
        for bad in [json!(2), json!("true"), json!(-1), json!(1.5)] {
            assert_eq!(
                as_bool(&bad, "s", "k").unwrap_err().rule,
                rule::TYPE,
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_in_both_forms() {
        let t = Timestamp::from_secs(1_609_866_125);
        assert_eq!(as_timestamp(&json!(1_609_866_125), "s", "k").unwrap(), t);
        assert_eq!(
            as_timestamp(&json!("2021-01-05T17:02:05Z"), "s", "k").unwrap(),
            t
        );
        assert_eq!(
            as_timestamp(&json!("2021-01-05T18:02:05+01:00"), "s", "k").unwrap(),
            t,
            "offsets are honoured"
        );
        assert_eq!(
            as_timestamp(&json!(1_609_866_125.5), "s", "k").unwrap(),
            t.plus_millis(500)
        );
        assert_eq!(
            as_timestamp(&json!("yesterday"), "s", "k")
                .unwrap_err()
                .rule,
            rule::TIME_INVALID
        );
        assert_eq!(
            as_timestamp(&json!(true), "s", "k").unwrap_err().rule,
            rule::TYPE
        );
    }

    #[test]
    fn localized_text_prefers_the_configured_language_then_english() {
        let v = json!([
            {"text": "Gare", "language": "fr"},
            {"text": "Station", "language": "en-CA"},
            {"text": "Bahnhof", "language": "de"}
        ]);
        assert_eq!(
            localized_text(&v, Some("de"), "s", "name").unwrap(),
            "Bahnhof"
        );
        assert_eq!(localized_text(&v, None, "s", "name").unwrap(), "Station");
        assert_eq!(
            localized_text(&v, Some("es"), "s", "name").unwrap(),
            "Station"
        );
        let no_en = json!([{"text": "Gare", "language": "fr"}]);
        assert_eq!(localized_text(&no_en, None, "s", "name").unwrap(), "Gare");
        assert_eq!(
            localized_text(&json!("Plain"), Some("fr"), "s", "name").unwrap(),
            "Plain"
        );
        assert_eq!(
            localized_text(&json!([]), None, "s", "name")
                .unwrap_err()
                .rule,
            rule::FIELD_MISSING
        );
        assert_eq!(
            localized_text(&json!([{"language": "en"}]), None, "s", "name")
                .unwrap_err()
                .rule,
            rule::FIELD_MISSING
        );
        assert_eq!(
            localized_text(&json!(5), None, "s", "name")
                .unwrap_err()
                .rule,
            rule::TYPE
        );
    }
}
