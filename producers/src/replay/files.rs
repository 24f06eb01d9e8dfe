//! A replayed file: [`crate::input`]'s readers with errors naming the file.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::Path;

use super::ReplayError;
use crate::input::{self, CsvRow, CsvRows, Header, Lines, read_capped};

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
    read_capped(input::open(path).map_err(io_error(path))?, limit).map_err(io_error(path))
}

/// A recorded file being read through `R` ([`CsvRows`] or [`Lines`]), decompressed, with
/// errors naming the file.
pub struct Recorded<'p, R> {
    path: &'p Path,
    reader: R,
}

/// A recorded CSV file being read.
pub type RecordedCsv<'p> = Recorded<'p, CsvRows<Box<dyn BufRead + Send>>>;

/// A recorded text file being read line by line.
pub type RecordedLines<'p> = Recorded<'p, Lines<Box<dyn BufRead + Send>>>;

impl<'p, R> Recorded<'p, R> {
    fn open_with(
        path: &'p Path,
        reader: impl FnOnce(Box<dyn BufRead + Send>) -> R,
    ) -> Result<Self, ReplayError> {
        let file = input::open(path).map_err(io_error(path))?;
        Ok(Self {
            path,
            reader: reader(file),
        })
    }
}

impl<'p> RecordedCsv<'p> {
    pub fn open(path: &'p Path) -> Result<Self, ReplayError> {
        Self::open_with(path, CsvRows::new)
    }

    /// The first record as the header, or `None` when the file is empty.
    pub fn header(&mut self) -> Result<Option<Header>, ReplayError> {
        self.reader.header().map_err(io_error(self.path))
    }

    /// The next record that is not blank.
    pub fn next_row(&mut self) -> Result<Option<CsvRow<'_>>, ReplayError> {
        self.reader.next_row().map_err(io_error(self.path))
    }
}

impl<'p> RecordedLines<'p> {
    pub fn open(path: &'p Path) -> Result<Self, ReplayError> {
        Self::open_with(path, Lines::new)
    }

    /// The next line that is not blank, with its 1-based number.
    pub fn next_row(&mut self) -> Result<Option<(u64, Cow<'_, str>)>, ReplayError> {
        self.reader.next_row().map_err(io_error(self.path))
    }
}
