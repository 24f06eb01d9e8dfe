//! Reading recorded files: transparent decompression, raw lines and CSV fields.
//!
//! Every reader in [`crate::replay`] keeps the raw text of each row, because a row that fails a
//! rule becomes a dead letter carrying that text. So rows are read as lines (CRLF or LF) and
//! split here, rather than through a CSV reader that would hide the original line. Recorded
//! files have no quoted newlines; quoted fields with commas are handled.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::ReplayError;

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

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Cow<'_, str>)>> {
        if !self.advance()? {
            return Ok(None);
        }
        Ok(Some((self.line_no, String::from_utf8_lossy(&self.buf))))
    }

    /// The next line that is not blank, or `None` at the end of the input.
    pub fn next_row(&mut self) -> io::Result<Option<(u64, Cow<'_, str>)>> {
        loop {
            if !self.advance()? {
                return Ok(None);
            }
            if !String::from_utf8_lossy(&self.buf).trim().is_empty() {
                return Ok(Some((self.line_no, String::from_utf8_lossy(&self.buf))));
            }
        }
    }

    /// Reads the next line into `buf` without its line end; false at the end of the input.
    fn advance(&mut self) -> io::Result<bool> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(true)
    }
}

/// Turns an I/O error on `path` into a [`ReplayError::Io`].
pub fn io_error(path: &Path) -> impl Fn(io::Error) -> ReplayError + Copy + '_ {
    move |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A [`ReplayError::Format`]: `path` is not in the expected format.
pub fn format_error(path: &Path) -> impl Fn(String) -> ReplayError + Copy + '_ {
    move |message| ReplayError::Format {
        path: path.to_owned(),
        message,
    }
}

/// Reads a whole file, decompressed, refusing more than `limit` bytes.
pub fn read_whole(path: &Path, limit: u64) -> Result<Vec<u8>, ReplayError> {
    read_capped(open(path).map_err(io_error(path))?, limit).map_err(io_error(path))
}

/// A recorded text file being read: decompressed [`Lines`], with errors naming the file.
pub struct RecordedLines<'p> {
    path: &'p Path,
    lines: Lines<Box<dyn BufRead + Send>>,
}

impl<'p> RecordedLines<'p> {
    pub fn open(path: &'p Path) -> Result<Self, ReplayError> {
        let reader = open(path).map_err(io_error(path))?;
        Ok(Self {
            path,
            lines: Lines::new(reader),
        })
    }

    /// The first line as a CSV header, or `None` when the file is empty.
    pub fn header(&mut self) -> Result<Option<Header>, ReplayError> {
        let line = self.lines.next_line().map_err(io_error(self.path))?;
        Ok(line.map(|(_, text)| Header::parse(&text)))
    }

    /// The next line that is not blank, with its 1-based number.
    pub fn next_row(&mut self) -> Result<Option<(u64, Cow<'_, str>)>, ReplayError> {
        self.lines.next_row().map_err(io_error(self.path))
    }
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

/// Splits one CSV line into fields (RFC 4180 quoting, no embedded newlines).
pub fn split_csv(line: &str) -> Vec<Cow<'_, str>> {
    if !line.contains('"') {
        return line.split(',').map(Cow::Borrowed).collect();
    }
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(Cow::Owned(std::mem::take(&mut field))),
            (c, _) => field.push(c),
        }
    }
    fields.push(Cow::Owned(field));
    fields
}

/// Column positions by header name.
#[derive(Debug, Clone)]
pub struct Header {
    columns: HashMap<String, usize>,
}

impl Header {
    pub fn parse(line: &str) -> Self {
        let columns = split_csv(line.trim_start_matches('\u{feff}'))
            .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_fields() {
        assert_eq!(split_csv("a,,c"), vec!["a", "", "c"]);
        assert_eq!(
            split_csv(r#"1,"Main St, North","say ""hi""",x"#),
            vec!["1", "Main St, North", r#"say "hi""#, "x"]
        );
    }

    #[test]
    fn lines_strip_crlf_and_count() {
        let mut lines = Lines::new(&b"h1,h2\r\na,b\n\nlast"[..]);
        let mut seen = Vec::new();
        while let Some((n, l)) = lines.next_line().unwrap() {
            seen.push((n, l.into_owned()));
        }
        assert_eq!(
            seen,
            vec![
                (1, "h1,h2".to_owned()),
                (2, "a,b".to_owned()),
                (3, String::new()),
                (4, "last".to_owned())
            ]
        );
        let mut rows = Lines::new(&b"a\n \r\n\nb\n\n"[..]);
        let mut seen = Vec::new();
        while let Some((n, l)) = rows.next_row().unwrap() {
            seen.push((n, l.into_owned()));
        }
        assert_eq!(seen, vec![(1, "a".to_owned()), (4, "b".to_owned())]);
    }

    #[test]
    fn fields_treat_na_and_empty_as_missing() {
        let row = split_csv("3,NA,,x");
        let h = Header::parse("\u{feff}A,b,c,d");
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
