//! A reader of the Prometheus text exposition format, for the consumers of our own
//! `/metrics` output in-process: the alert rules, the CloudWatch exporter and the dashboard.
//! It reads what `metrics-exporter-prometheus` writes (no exemplars, no timestamps).

use std::collections::BTreeMap;

/// One sample: a series name, its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Every sample of `text`; comment lines and lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => {
            let (s, v) = line.split_once(' ')?;
            (s, v.trim())
        }
    };
    let value = match value.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.find('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some(open) => (
            series[..open].to_owned(),
            parse_labels(&series[open + 1..series.len() - 1])?,
        ),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_owned();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key, value);
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP x y\n# TYPE a counter\na 3\nb{k=\"v\",q=\"a\\\"b,c\"} 1.5\n\
                    h_bucket{le=\"+Inf\"} 7\nbroken{ 1\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].name.as_str(), s[0].value), ("a", 3.0));
        assert_eq!(s[1].label("q"), Some("a\"b,c"));
        assert_eq!(s[1].label("k"), Some("v"));
        assert_eq!(s[2].label("le"), Some("+Inf"));
    }
}
