//! Reading recorded text: transparent decompression, lines, and CSV rows with their raw text.
//!
//! A row that fails a rule becomes a dead letter carrying the row as it was written, so
//! [`CsvRows`] hands out each CSV record with its 1-based line number and its raw text next to
//! its fields. Records are read with the `csv` crate (RFC 4180: a quoted field may hold commas,
//! doubled quotes and line breaks; CRLF, LF and CR end records); blank lines and a leading
//! byte-order mark are skipped.
//! [`Lines`] reads line-oriented text (JSON lines). Used by [`crate::replay`] and by the
//! Meteostat bulk CSV of [`crate::weather`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Read buffer for recorded files (they are read front to back, once).
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Opens `path` for reading, decompressing bzip2 or gzip when its first bytes say so
/// (the extension is not trusted: a `.gz` served already decoded is plain text).
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(path)?);
    let magic = file.fill_buf()?;
    Ok(if magic.starts_with(b"BZh") {
        let decoder = bzip2::read::MultiBzDecoder::new(file);
        Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, decoder))
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::read::MultiGzDecoder::new(file);
        Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, decoder))
    } else {
        Box::new(file)
    })
}

/// Reads everything from `reader`, refusing more than `limit` bytes.
pub fn read_capped(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {limit} bytes after decompression"),
        ));
    }
    Ok(out)
}

/// Lines of a reader without their `\n` / `\r\n`, with their 1-based line numbers. Invalid
/// UTF-8 is replaced (the row then fails to parse and is dead-lettered with what it was).
#[derive(Debug)]
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(256),
            line_no: 0,
        }
    }

    /// The next line that is not blank, or `None` at the end of the input.
    pub fn next_row(&mut self) -> io::Result<Option<(u64, Cow<'_, str>)>> {
        loop {
            self.buf.clear();
            if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            // A visible ASCII character makes the line not blank (a JSON line's first byte);
            // only a line without one is decoded to look for other visible text.
            let visible_ascii = self
                .buf
                .iter()
                .any(|&b| b.is_ascii() && !char::from(b).is_whitespace());
            if visible_ascii || !String::from_utf8_lossy(&self.buf).trim().is_empty() {
                break;
            }
        }
        // One UTF-8 check per line; the replacing copy only for invalid text.
        let text = match std::str::from_utf8(&self.buf) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&self.buf),
        };
        Ok(Some((self.line_no, text)))
    }
}

/// One CSV record: where it starts, its text as written and its fields. Invalid UTF-8 is
/// replaced (the row then fails to parse and is dead-lettered with what it was).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow<'a> {
    /// The 1-based line the record starts on.
    pub line_no: u64,
    /// The record as written, without its line end (line breaks inside quotes are kept).
    pub raw: Cow<'a, str>,
    pub fields: Vec<Cow<'a, str>>,
}

/// The CSV records of a reader (see the module docs). The first record of a file with a
/// header is the header: read it with [`CsvRows::header`].
#[derive(Debug)]
pub struct CsvRows<R> {
    reader: csv::Reader<Tap<R>>,
    record: csv::ByteRecord,
    /// The offset just after the last record read.
    end: u64,
    /// The line breaks (`\n`) before `end`.
    newlines: u64,
}

impl<R: Read> CsvRows<R> {
    pub fn new(reader: R) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(Tap {
                inner: reader,
                buf: Vec::new(),
                base: 0,
                keep_from: 0,
                started: false,
            });
        Self {
            reader,
            record: csv::ByteRecord::new(),
            end: 0,
            newlines: 0,
        }
    }

    /// The first record as a header, or `None` when there is no record.
    pub fn header(&mut self) -> io::Result<Option<Header>> {
        Ok(self.next_row()?.map(|row| Header::new(&row.fields)))
    }

    /// The next record that is not blank, or `None` at the end of the input.
    pub fn next_row(&mut self) -> io::Result<Option<CsvRow<'_>>> {
        let (line_no, start, end) = loop {
            if !self.reader.read_byte_record(&mut self.record)? {
                return Ok(None);
            }
            let (start, end) = (self.end, self.reader.position().byte());
            self.end = end;
            let tap = self.reader.get_mut();
            tap.keep_from = end;
            let bytes = tap.span(start, end);
            // What precedes the record: the rest of the previous line end and blank lines.
            let lead = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let line_no = self.newlines + count_newlines(&bytes[..lead]) + 1;
            self.newlines += count_newlines(bytes);
            let mut text = &bytes[lead..];
            while let [rest @ .., b'\r' | b'\n'] = text {
                text = rest;
            }
            if !String::from_utf8_lossy(text).trim().is_empty() {
                let text_start = start + lead as u64;
                break (line_no, text_start, text_start + text.len() as u64);
            }
        };
        let raw = self.reader.get_ref().span(start, end);
        Ok(Some(CsvRow {
            line_no,
            raw: String::from_utf8_lossy(raw),
            fields: self.record.iter().map(String::from_utf8_lossy).collect(),
        }))
    }

    /// The bytes read so far (decompressed).
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A reader that keeps what it read since the start of the record being read, so that the
/// record's raw text is at hand when the CSV reader returns it.
#[derive(Debug)]
struct Tap<R> {
    inner: R,
    buf: Vec<u8>,
    /// The stream offset of `buf[0]`.
    base: u64,
    /// Bytes before this offset are no longer needed.
    keep_from: u64,
    /// Whether anything was read (a byte-order mark is dropped from the first read).
    started: bool,
}

impl<R> Tap<R> {
    /// The bytes at stream offsets `start..end` (still kept).
    fn span(&self, start: u64, end: u64) -> &[u8] {
        let at = |offset: u64| usize::try_from(offset.saturating_sub(self.base)).ok();
        at(start)
            .zip(at(end))
            .and_then(|(start, end)| self.buf.get(start..end))
            .unwrap_or_default()
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // The CSV reader asks for more only when it has parsed all it has: what precedes the
        // record in progress has been handed out.
        let done = usize::try_from(self.keep_from - self.base).unwrap_or(self.buf.len());
        self.buf.drain(..done.min(self.buf.len()));
        self.base = self.keep_from;
        let mut n = self.inner.read(out)?;
        if !std::mem::replace(&mut self.started, true) && out[..n].starts_with(UTF8_BOM) {
            out.copy_within(UTF8_BOM.len()..n, 0);
            n -= UTF8_BOM.len();
        }
        self.buf.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

/// Column positions by header name (trimmed, lower case).
#[derive(Debug, Clone)]
pub struct Header {
    columns: HashMap<String, usize>,
}

impl Header {
    pub fn new(names: &[Cow<'_, str>]) -> Self {
        let columns = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.trim().to_ascii_lowercase(), i))
            .collect();
        Self { columns }
    }

    /// The position of the first of `names` present.
    pub fn find(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| self.columns.get(*n).copied())
    }

    /// The position of `name`, or a message naming the missing column.
    pub fn require(&self, name: &str) -> Result<usize, String> {
        self.find(&[name])
            .ok_or_else(|| format!("missing column {name:?}"))
    }
}

/// One field of a row: `None` when the row is too short, empty or `NA`.
pub fn field<'a>(fields: &'a [Cow<'a, str>], idx: Option<usize>) -> Option<&'a str> {
    let v = fields.get(idx?)?.trim();
    (!v.is_empty() && v != "NA" && v != "null").then_some(v)
}

/// Parses an integer count, accepting `3.0` as 3 (R and pandas write whole floats).
pub fn parse_int(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().or_else(|| {
        let f = v.parse::<f64>().ok()?;
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

/// Parses a GBFS-style flag: `1`/`0`, `true`/`false` in any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" => Some(true),
        "0" => Some(false),
        _ if v.eq_ignore_ascii_case("true") => Some(true),
        _ if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The fields of one CSV line (for tests of row parsing).
#[cfg(test)]
pub(crate) fn csv_fields(line: &str) -> Vec<Cow<'static, str>> {
    let mut rows = CsvRows::new(line.as_bytes());
    let row = rows.next_row().ok().flatten();
    row.map(|r| {
        r.fields
            .into_iter()
            .map(|f| Cow::Owned(f.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `text` as (line number, raw text, fields).
    fn rows(text: &str) -> Vec<(u64, String, Vec<String>)> {
        let mut rows = CsvRows::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(row) = rows.next_row().unwrap() {
            let fields = row.fields.iter().map(|f| f.to_string()).collect();
            out.push((row.line_no, row.raw.into_owned(), fields));
        }
        out
    }

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(csv_fields("a,,c"), vec!["a", "", "c"]);
        assert_eq!(
            csv_fields(r#"1,"Main St, North","say ""hi""",x"#),
            vec!["1", "Main St, North", r#"say "hi""#, "x"]
        );
    }

    #[test]
    fn rows_keep_their_raw_text_and_first_line() {
        let text = "h1,h2\r\na,b\n\n \r\n\"two\nlines\",c\r\n\r\nlast,\"x\"\"y\"";
        assert_eq!(
            rows(text),
            vec![
                (1, "h1,h2".into(), vec!["h1".into(), "h2".into()]),
                (2, "a,b".into(), vec!["a".into(), "b".into()]),
                (
                    5,
                    "\"two\nlines\",c".into(),
                    vec!["two\nlines".into(), "c".into()]
                ),
                (
                    8,
                    "last,\"x\"\"y\"".into(),
                    vec!["last".into(), "x\"y".into()]
                ),
            ]
        );
        // A record after a quoted line break is numbered by the line it starts on.
        assert_eq!(rows("\"a\nb\"\nc\n")[1].0, 3);
    }

    #[test]
    fn rows_are_read_across_buffer_refills() {
        let text: String = (0..20_000).map(|i| format!("{i},\"v,{i}\"\n")).collect();
        let got = rows(&text);
        assert_eq!(got.len(), 20_000);
        for (i, (line_no, raw, fields)) in got.iter().enumerate() {
            assert_eq!(*line_no, i as u64 + 1);
            assert_eq!(*raw, format!("{i},\"v,{i}\""));
            assert_eq!(fields[1], format!("v,{i}"));
        }
    }

    #[test]
    fn lines_strip_crlf_and_skip_blank_ones() {
        let mut rows = Lines::new(&b"a\n \r\n\nb\r\n\n"[..]);
        let mut seen = Vec::new();
        while let Some((n, l)) = rows.next_row().unwrap() {
            seen.push((n, l.into_owned()));
        }
        assert_eq!(seen, vec![(1, "a".to_owned()), (4, "b".to_owned())]);
    }

    #[test]
    fn lines_replace_invalid_utf8_and_skip_unicode_blanks() {
        // A no-break space and an ideographic space are blank; an invalid byte is replaced.
        let text = "\u{a0}\u{3000}\n\u{e9}t\u{e9}\n".as_bytes();
        let mut input = text.to_vec();
        input.extend_from_slice(b"x\xffy\n");
        let mut rows = Lines::new(&input[..]);
        let mut seen = Vec::new();
        while let Some((n, l)) = rows.next_row().unwrap() {
            seen.push((n, matches!(l, Cow::Borrowed(_)), l.into_owned()));
        }
        assert_eq!(
            seen,
            vec![
                (2, true, "\u{e9}t\u{e9}".to_owned()),
                (3, false, "x\u{fffd}y".to_owned())
            ]
        );
    }

    #[test]
    fn fields_treat_na_and_empty_as_missing() {
        let row = csv_fields("3,NA,,x");
        let h = Header::new(&csv_fields("\u{feff}\"A\",b,c,d"));
        assert_eq!(field(&row, h.find(&["a"])), Some("3"));
        assert_eq!(field(&row, h.find(&["b"])), None);
        assert_eq!(field(&row, h.find(&["c"])), None);
        assert_eq!(field(&row, Some(9)), None);
        assert!(h.require("zz").is_err());
        assert_eq!(parse_int("4.0"), Some(4));
        assert_eq!(parse_int("4.5"), None);
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("2"), None);
    }

    #[test]
    fn opens_gzip_bzip2_and_plain_by_content() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text = b"x,y\n1,2\n";
        let plain = dir.path().join("p.gz"); // a misleading extension
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("g");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let bz = dir.path().join("b");
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        enc.write_all(text).unwrap();
        std::fs::write(&bz, enc.finish().unwrap()).unwrap();
        for p in [plain, gz, bz] {
            let mut s = String::new();
            open(&p).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s.as_bytes(), text, "{}", p.display());
        }
        assert!(read_capped(&text[..], 3).is_err());
        assert_eq!(read_capped(&text[..], 8).unwrap(), text);
    }
}
