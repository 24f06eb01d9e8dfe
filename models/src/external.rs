//! XGBoost's external-memory data path (issue 15, decision 096): the one module that calls
//! XGBoost's C API directly (`xgboost-rs-sys`, the XGBoost 1.6.2 that `xgboost-rs` builds).
//!
//! `xgboost-rs` 0.3 only builds in-memory matrices, and XGBoost's in-memory `DMatrix` holds
//! the rows twice more (a CSR copy at 8 bytes a value and the `hist` index at 4 bytes a
//! present value) beside our own `f32` table: about 1.5 KB a row at 88 features. XGBoost
//! 1.6.2 also has an **external-memory** `DMatrix` (`XGDMatrixCreateFromCallback`): it pulls
//! the rows block by block from an iterator of ours (`reset`/`next` callbacks that hand each
//! block to a proxy `DMatrix` as a dense array), writes them to cache files as pages, and
//! `tree_method = hist` then trains page by page (`GetBatches<GHistIndexMatrix>`), so
//! XGBoost's memory is a few pages plus tens of bytes per row (gradients, labels, weights,
//! row partitions), whatever the number of rows.
//!
//! - [`RowBlocks`]: a source of row blocks (row-major `f32`, `NaN` = missing).
//! - [`XgbMatrix`]: the `DMatrix` built from one — external memory with its cache directory
//!   (a temporary directory under `$TMPDIR` or the given parent, removed with the matrix,
//!   locked while it lives so that a later run can remove what a killed one left; a warning
//!   when it is on `tmpfs`, where the pages would take memory, not disk), or in memory for rows
//!   too few to be worth it; labels and weights are set on it afterwards, so one matrix
//!   serves both targets. (XGBoost 1.6.2's cache pages lose their missing flags: training
//!   hands it no missing value, see `training::MISSING_IN_EXTERNAL_MEMORY`.)
//! - [`RawBooster`]: a booster over such a matrix (the `xgboost-rs` `Booster` keeps its
//!   handle private and accepts only its own matrices): parameters, one round, the model
//!   as JSON, the configuration it reports, and one tree alone (for validating natively).
//!
//! Safety: every handle is owned by one value and freed once in its `Drop`; the callbacks
//! never unwind into C (`catch_unwind`), and an error raised in them is kept and returned
//! once XGBoost hands control back.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr;

use xgboost_rs_sys as sys;

use crate::training::TrainError;

/// A source of row blocks for an [`XgbMatrix`].
pub trait RowBlocks {
    /// Values per row.
    fn width(&self) -> usize;
    /// Goes back to the first block.
    fn reset(&mut self);
    /// Replaces `out` with the next block's rows (row-major, `NaN` = missing; a whole number
    /// of rows, at least one); `Ok(false)` after the last block.
    fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, TrainError>;
    /// How many rows all the blocks hold, when known (0: unknown): lets an in-memory matrix
    /// gather them into one allocation instead of a growing one.
    fn rows_hint(&self) -> usize {
        0
    }
}

/// Bytes of the files under `dir` (and its subfolders): how much an external matrix's cache
/// holds on disk; 0 when `dir` cannot be read.
pub fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// XGBoost's last error message on this thread.
fn last_error() -> String {
    // SAFETY: XGBGetLastError returns a pointer to a NUL-terminated thread-local string that
    // XGBoost keeps until the next call on this thread; it is copied at once.
    let p = unsafe { sys::XGBGetLastError() };
    if p.is_null() {
        return "unknown XGBoost error".into();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn check(call: &str, rc: c_int) -> Result<(), TrainError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TrainError::Xgboost(format!("{call}: {}", last_error())))
    }
}

fn cstring(s: &str) -> Result<CString, TrainError> {
    CString::new(s).map_err(|_| TrainError::Internal(format!("NUL byte in {s:?}")))
}

/// A `DMatrix` handle freed on drop.
struct Handle(sys::DMatrixHandle);

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from XGBoost, is owned by this value alone and is freed
            // once, here.
            unsafe { sys::XGDMatrixFree(self.0) };
        }
    }
}

/// What the callbacks see: the source, the proxy to hand blocks to, the current block (kept
/// alive until the next call, since the proxy only points at it) and the first error.
struct Feed<'a> {
    blocks: &'a mut dyn RowBlocks,
    proxy: sys::DMatrixHandle,
    block: Vec<f32>,
    rows: usize,
    error: Option<TrainError>,
}

impl Feed<'_> {
    fn next(&mut self) -> Result<bool, TrainError> {
        if !self.blocks.next_block(&mut self.block)? {
            return Ok(false);
        }
        let width = self.blocks.width();
        let rows = self.block.len() / width.max(1);
        if width == 0 || rows == 0 || rows * width != self.block.len() {
            return Err(TrainError::Internal(format!(
                "a block of {} values for rows of {width}",
                self.block.len()
            )));
        }
        let interface = array_interface(&self.block, rows, width)?;
        // SAFETY: `proxy` is a live proxy DMatrix; `interface` describes `self.block`, which
        // is not touched until the next callback, by when XGBoost has copied the block into
        // its page (it reads the proxy right after `next` returns).
        let rc = unsafe { sys::XGProxyDMatrixSetDataDense(self.proxy, interface.as_ptr()) };
        check("XGProxyDMatrixSetDataDense", rc)?;
        self.rows += rows;
        Ok(true)
    }
}

/// NumPy's array interface of `values`: a C-contiguous `rows × width` array of
/// little-endian f32 (XGBoost reads the memory it points at; keep `values` alive).
fn array_interface(values: &[f32], rows: usize, width: usize) -> Result<CString, TrainError> {
    cstring(&format!(
        r#"{{"data": [{}, true], "shape": [{rows}, {width}], "strides": null, "typestr": "<f4", "version": 3}}"#,
        values.as_ptr() as usize
    ))
}

/// `next` callback: 1 when a block was set on the proxy, 0 at the end or on an error (kept
/// in the feed).
unsafe extern "C" fn next_callback(iter: sys::DataIterHandle) -> c_int {
    // SAFETY: `iter` is the `&mut Feed` given to XGDMatrixCreateFromCallback, which outlives
    // that call; XGBoost calls back on the calling thread, one call at a time.
    let feed = unsafe { &mut *iter.cast::<Feed<'_>>() };
    if feed.error.is_some() {
        return 0;
    }
    match catch_unwind(AssertUnwindSafe(|| feed.next())) {
        Ok(Ok(more)) => c_int::from(more),
        Ok(Err(e)) => {
            feed.error = Some(e);
            0
        }
        Err(_) => {
            feed.error = Some(TrainError::Internal("the row block source panicked".into()));
            0
        }
    }
}

/// `reset` callback.
unsafe extern "C" fn reset_callback(iter: sys::DataIterHandle) {
    // SAFETY: as in `next_callback`.
    let feed = unsafe { &mut *iter.cast::<Feed<'_>>() };
    if catch_unwind(AssertUnwindSafe(|| feed.blocks.reset())).is_err() && feed.error.is_none() {
        feed.error = Some(TrainError::Internal(
            "the row block source panicked on reset".into(),
        ));
    }
}

/// An XGBoost `DMatrix` built from [`RowBlocks`]: external memory (the rows live in cache
/// files under a temporary directory, which goes with the matrix) or in memory (XGBoost's
/// own copy, for rows few enough that re-reading pages would cost more than it saves).
pub struct XgbMatrix {
    handle: Handle,
    rows: usize,
    width: usize,
    /// Dropped after `handle` (fields drop in order): XGBoost deletes its cache files when
    /// the matrix is freed, then the directory goes. `None` in memory.
    cache: Option<Cache>,
}

/// The name every cache directory starts with.
const CACHE_DIR_PREFIX: &str = "bikeshare-xgb-cache-";
/// The file a cache directory's owner holds locked (`flock`) while its matrix lives.
const CACHE_LOCK: &str = "owner.lock";

/// An external matrix's cache directory, locked by this process until dropped.
struct Cache {
    /// Removed first, while still locked.
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl Cache {
    /// A new cache directory under `parent` (default `$TMPDIR`), after removing the ones
    /// that runs which died (killed, out of memory) left there.
    fn create(parent: Option<&Path>) -> std::io::Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        remove_stale_caches(&parent);
        let dir = tempfile::Builder::new()
            .prefix(CACHE_DIR_PREFIX)
            .tempdir_in(&parent)?;
        // Locked under another name, then renamed: no other run ever finds the lock file
        // unlocked while this one lives (a lock goes with the open file, not its name).
        let pending = dir.path().join(format!("{CACHE_LOCK}.new"));
        let lock = std::fs::File::create(&pending)?;
        lock.try_lock().map_err(std::io::Error::from)?;
        std::fs::rename(&pending, dir.path().join(CACHE_LOCK))?;
        if on_tmpfs(dir.path()) {
            tracing::warn!(
                cache = %dir.path().display(),
                "XGBoost's external-memory cache is on tmpfs, where its pages take memory, not \
                 disk: set TMPDIR to a directory on disk"
            );
        }
        Ok(Self { dir, _lock: lock })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the cache directories under `parent` whose lock no live process holds (the run
/// that made them ended without cleaning up); directories without a lock file (made by
/// another program, or an older build) are left alone.
fn remove_stale_caches(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(CACHE_DIR_PREFIX)
        {
            continue;
        }
        let dir = e.path();
        let Ok(lock) = std::fs::File::open(dir.join(CACHE_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // a live run's, or one we cannot judge
        }
        let bytes = bytes_under(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(
                cache = %dir.display(),
                bytes,
                "removed an XGBoost cache left by a run that did not end cleanly"
            ),
            Err(err) => tracing::warn!(
                cache = %dir.display(),
                %err,
                "could not remove an XGBoost cache left by an earlier run"
            ),
        }
    }
}

/// Whether `path` lies on a `tmpfs` mount; `false` where that cannot be told (not Linux).
fn on_tmpfs(path: &Path) -> bool {
    let (Ok(path), Ok(info)) = (
        path.canonicalize(),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return false;
    };
    fs_type_of(&path, &info) == Some("tmpfs")
}

/// The file system type of the mount that holds `path` (the longest mount point above it)
/// in a `/proc/self/mountinfo` text.
fn fs_type_of<'a>(path: &Path, mountinfo: &'a str) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root mount-point options [optional...] - fstype source ...`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount), Some(fs_type)) = (left.split(' ').nth(4), right.split(' ').next()) else {
            continue;
        };
        // Spaces, tabs, newlines and backslashes in mount points are octal escapes.
        let mount = mount
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        if path.starts_with(&mount) && best.is_none_or(|(len, _)| mount.len() >= len) {
            best = Some((mount.len(), fs_type));
        }
    }
    best.map(|(_, t)| t)
}

impl std::fmt::Debug for XgbMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XgbMatrix")
            .field("rows", &self.rows)
            .field("width", &self.width)
            .field("cache", &self.cache.as_ref().map(Cache::path))
            .finish()
    }
}

impl XgbMatrix {
    /// Builds the matrix from `blocks` (read once, block by block), its cache in a new
    /// temporary directory under `cache_parent` (default `$TMPDIR`; stale caches of dead
    /// runs there are removed first), `NaN` as the missing value, with `nthread` threads.
    pub fn from_blocks(
        blocks: &mut dyn RowBlocks,
        cache_parent: Option<&Path>,
        nthread: u32,
    ) -> Result<Self, TrainError> {
        let cache = Cache::create(cache_parent).map_err(|e| {
            TrainError::Internal(format!("creating the XGBoost cache directory: {e}"))
        })?;
        let prefix = cache.path().join("rows");
        let config = serde_json::json!({
            "cache_prefix": prefix.to_string_lossy(),
            "nthread": nthread.max(1),
        })
        .to_string();
        // serde_json writes no NaN; XGBoost's JSON reader takes `NaN`.
        let config = cstring(&format!(
            "{{\"missing\": NaN, {}",
            config.trim_start_matches('{')
        ))?;

        let mut proxy = Handle(ptr::null_mut());
        // SAFETY: XGBoost writes a new handle into `proxy.0`, owned by `proxy` from then on.
        check("XGProxyDMatrixCreate", unsafe {
            sys::XGProxyDMatrixCreate(&mut proxy.0)
        })?;
        let width = blocks.width();
        let mut feed = Feed {
            blocks,
            proxy: proxy.0,
            block: Vec::new(),
            rows: 0,
            error: None,
        };
        let mut out = Handle(ptr::null_mut());
        // SAFETY: `feed` outlives the call and is only touched by the callbacks during it;
        // the callbacks match XGBoost's signatures and never unwind; `config` is a
        // NUL-terminated JSON document; the new handle is owned by `out`.
        let rc = unsafe {
            sys::XGDMatrixCreateFromCallback(
                (&raw mut feed).cast::<c_void>(),
                proxy.0,
                Some(reset_callback),
                Some(next_callback),
                config.as_ptr(),
                &mut out.0,
            )
        };
        if let Some(e) = feed.error.take() {
            return Err(e);
        }
        check("XGDMatrixCreateFromCallback", rc)?;
        let rows = feed.rows;
        drop(feed);
        let mut n: sys::bst_ulong = 0;
        // SAFETY: `out.0` is the live matrix just created.
        check("XGDMatrixNumRow", unsafe {
            sys::XGDMatrixNumRow(out.0, &mut n)
        })?;
        if usize::try_from(n).ok() != Some(rows) {
            return Err(TrainError::Internal(format!(
                "XGBoost's external matrix has {n} rows, {rows} were given"
            )));
        }
        Ok(Self {
            handle: out,
            rows,
            width,
            cache: Some(cache),
        })
    }

    /// The same rows as [`Self::from_blocks`] in an ordinary (in-memory) matrix: the blocks
    /// are gathered into one array, which XGBoost copies; the array goes right after.
    pub fn in_memory(blocks: &mut dyn RowBlocks, nthread: u32) -> Result<Self, TrainError> {
        let width = blocks.width();
        // Reserved up front: growing by doubling would hold two copies of the rows at once.
        let mut all = Vec::with_capacity(blocks.rows_hint().saturating_mul(width));
        let mut block = Vec::new();
        blocks.reset();
        while blocks.next_block(&mut block)? {
            all.extend_from_slice(&block);
        }
        drop(block);
        let rows = all.len() / width.max(1);
        if width == 0 || rows == 0 || rows * width != all.len() {
            return Err(TrainError::Internal(format!(
                "{} values for rows of {width}",
                all.len()
            )));
        }
        let interface = array_interface(&all, rows, width)?;
        let config = cstring(&format!(
            "{{\"missing\": NaN, \"nthread\": {}}}",
            nthread.max(1)
        ))?;
        let mut out = Handle(ptr::null_mut());
        // SAFETY: `interface` describes `all`, alive for the call (XGBoost copies it);
        // `config` is NUL-terminated JSON; the new handle is owned by `out`.
        check("XGDMatrixCreateFromDense", unsafe {
            sys::XGDMatrixCreateFromDense(interface.as_ptr(), config.as_ptr(), &mut out.0)
        })?;
        Ok(Self {
            handle: out,
            rows,
            width,
            cache: None,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the rows are in cache files (not in memory).
    pub fn is_external(&self) -> bool {
        self.cache.is_some()
    }

    /// Where the cache files are (removed when the matrix is dropped); `None` in memory.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(Cache::path)
    }

    /// Sets `field` (`label`, `weight`) to `values`, one per row.
    pub fn set_float_info(&mut self, field: &str, values: &[f32]) -> Result<(), TrainError> {
        if values.len() != self.rows {
            return Err(TrainError::Internal(format!(
                "{} {field} values for {} rows",
                values.len(),
                self.rows
            )));
        }
        let name = cstring(field)?;
        let len = sys::bst_ulong::try_from(values.len())
            .map_err(|_| TrainError::Internal("too many rows".into()))?;
        // SAFETY: the handle is live; XGBoost copies `len` floats from `values`.
        check("XGDMatrixSetFloatInfo", unsafe {
            sys::XGDMatrixSetFloatInfo(self.handle.0, name.as_ptr(), values.as_ptr(), len)
        })
    }
}

/// A booster trained on one [`XgbMatrix`], which it borrows (XGBoost keeps a reference
/// to the matrix until the booster is freed).
pub struct RawBooster<'m> {
    handle: sys::BoosterHandle,
    _matrix: PhantomData<&'m XgbMatrix>,
}

impl std::fmt::Debug for RawBooster<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBooster").finish_non_exhaustive()
    }
}

impl Drop for RawBooster<'_> {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: the handle came from XGBoost, is owned by this value alone and is freed
            // once, here.
            unsafe { sys::XGBoosterFree(self.handle) };
        }
    }
}

impl<'m> RawBooster<'m> {
    /// A booster with `params` (names and values as XGBoost spells them) for `train`.
    pub fn new(train: &'m XgbMatrix, params: &[(&str, String)]) -> Result<Self, TrainError> {
        let mut booster = Self {
            handle: ptr::null_mut(),
            _matrix: PhantomData,
        };
        let dmats = [train.handle.0];
        // SAFETY: one live matrix handle; XGBoost writes the new booster into
        // `booster.handle`, owned by `booster` from then on.
        check("XGBoosterCreate", unsafe {
            sys::XGBoosterCreate(dmats.as_ptr(), 1, &mut booster.handle)
        })?;
        for (k, v) in params {
            let (k, v) = (cstring(k)?, cstring(v)?);
            // SAFETY: live booster, NUL-terminated strings (XGBoost copies them).
            check("XGBoosterSetParam", unsafe {
                sys::XGBoosterSetParam(booster.handle, k.as_ptr(), v.as_ptr())
            })?;
        }
        Ok(booster)
    }

    /// One boosting round (`round` from 0) on the matrix the booster was made for.
    pub fn update(&mut self, train: &'m XgbMatrix, round: u32) -> Result<(), TrainError> {
        let round = c_int::try_from(round).unwrap_or(c_int::MAX);
        // SAFETY: live booster and matrix (the matrix outlives the booster).
        check("XGBoosterUpdateOneIter", unsafe {
            sys::XGBoosterUpdateOneIter(self.handle, round, train.handle.0)
        })
    }

    /// The configuration the booster reports (JSON).
    pub fn config(&self) -> Result<String, TrainError> {
        let (mut len, mut out): (sys::bst_ulong, *const c_char) = (0, ptr::null());
        // SAFETY: live booster; XGBoost points `out` at `len` bytes it owns until the next
        // call on this booster; they are copied at once.
        check("XGBoosterSaveJsonConfig", unsafe {
            sys::XGBoosterSaveJsonConfig(self.handle, &mut len, &mut out)
        })?;
        Ok(String::from_utf8_lossy(unsafe_bytes(out, len)?).into_owned())
    }

    /// The model as XGBoost JSON.
    pub fn json(&self) -> Result<Vec<u8>, TrainError> {
        let config = cstring(r#"{"format": "json"}"#)?;
        let (mut len, mut out): (sys::bst_ulong, *const c_char) = (0, ptr::null());
        // SAFETY: as in `config`.
        check("XGBoosterSaveModelToBuffer", unsafe {
            sys::XGBoosterSaveModelToBuffer(self.handle, config.as_ptr(), &mut len, &mut out)
        })?;
        Ok(unsafe_bytes(out, len)?.to_vec())
    }

    /// Tree `k` alone, as a model in XGBoost JSON (same base score).
    pub fn tree_json(&self, k: u32) -> Result<Vec<u8>, TrainError> {
        let begin = c_int::try_from(k).map_err(|_| TrainError::Internal("tree index".into()))?;
        let mut slice = RawBooster::<'m> {
            handle: ptr::null_mut(),
            _matrix: PhantomData,
        };
        // SAFETY: live booster; XGBoost writes a new booster into `slice.handle`, owned and
        // freed by `slice`.
        check("XGBoosterSlice", unsafe {
            sys::XGBoosterSlice(self.handle, begin, begin + 1, 1, &mut slice.handle)
        })?;
        slice.json()
    }
}

/// The `len` bytes at `p` (borrowed from XGBoost until its next call on the same object).
fn unsafe_bytes<'a>(p: *const c_char, len: sys::bst_ulong) -> Result<&'a [u8], TrainError> {
    let len = usize::try_from(len).map_err(|_| TrainError::Internal("buffer length".into()))?;
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(TrainError::Internal("XGBoost returned no buffer".into()))
        };
    }
    // SAFETY: XGBoost returned `len` readable bytes at `p`; callers copy them before the
    // next call on the object that owns them.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows `0..n` of `width` values, `block` rows at a time.
    struct Counting {
        n: usize,
        width: usize,
        block: usize,
        at: usize,
        fail_at: Option<usize>,
    }

    impl RowBlocks for Counting {
        fn width(&self) -> usize {
            self.width
        }
        fn reset(&mut self) {
            self.at = 0;
        }
        fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, TrainError> {
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(TrainError::Internal("the source failed".into()));
            }
            if self.at >= self.n {
                return Ok(false);
            }
            let end = (self.at + self.block).min(self.n);
            out.clear();
            for i in self.at..end {
                for j in 0..self.width {
                    out.push(if j == 1 && i % 3 == 0 {
                        f32::NAN
                    } else {
                        (i * self.width + j) as f32
                    });
                }
            }
            self.at = end;
            Ok(true)
        }
    }

    #[test]
    fn a_matrix_holds_every_block_and_its_cache_goes_with_it() {
        let mut src = Counting {
            n: 1000,
            width: 3,
            block: 128,
            at: 0,
            fail_at: None,
        };
        let parent = tempfile::tempdir().unwrap();
        let mut m = XgbMatrix::from_blocks(&mut src, Some(parent.path()), 1).unwrap();
        assert_eq!(m.rows(), 1000);
        let dir = m.cache_dir().unwrap().to_owned();
        assert!(dir.starts_with(parent.path()));
        assert!(m.set_float_info("label", &[0.0; 999]).is_err());
        m.set_float_info("label", &vec![1.0; 1000]).unwrap();
        drop(m);
        assert!(!dir.exists(), "{} is left", dir.display());
        src.reset();
        let m = XgbMatrix::in_memory(&mut src, 1).unwrap();
        assert_eq!(m.rows(), 1000);
        assert!(!m.is_external() && m.cache_dir().is_none());
    }

    #[test]
    fn a_cache_left_by_a_dead_run_is_removed_and_a_live_one_kept() {
        let parent = tempfile::tempdir().unwrap();
        // What a killed run leaves: its directory, pages and an unlocked lock file.
        let dead = parent.path().join(format!("{CACHE_DIR_PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("rows.row.page"), [0u8; 4096]).unwrap();
        std::fs::write(dead.join(CACHE_LOCK), b"").unwrap();
        // Someone else's directory with our prefix but no lock file, and an unrelated one.
        let foreign = parent.path().join(format!("{CACHE_DIR_PREFIX}foreign"));
        std::fs::create_dir(&foreign).unwrap();
        let other = parent.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(CACHE_LOCK), b"").unwrap();

        let live = Cache::create(Some(parent.path())).unwrap();
        assert!(!dead.exists(), "the dead run's cache is left");
        assert!(foreign.exists() && other.exists());
        assert!(live.path().join(CACHE_LOCK).exists());

        // A second run beside a live one leaves the live one alone (its lock is held).
        let second = Cache::create(Some(parent.path())).unwrap();
        assert!(live.path().exists());
        let (a, b) = (live.path().to_owned(), second.path().to_owned());
        drop((live, second));
        assert!(!a.exists() && !b.exists());
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_above_it() {
        let info = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:23 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw
26 25 0:24 / /tmp/disk rw shared:6 master:2 - xfs /dev/vdb rw
27 22 0:25 / /var/my\\040space rw - tmpfs tmpfs rw
garbage line
";
        let at = |p: &str| fs_type_of(Path::new(p), info);
        assert_eq!(at("/tmp/x"), Some("tmpfs"));
        assert_eq!(at("/tmp"), Some("tmpfs"));
        assert_eq!(at("/tmp/disk/x"), Some("xfs"));
        assert_eq!(at("/tmpfoo"), Some("ext4"), "a path, not a string, prefix");
        assert_eq!(at("/var/my space/cache"), Some("tmpfs"));
        assert_eq!(at("/home"), Some("ext4"));
        assert_eq!(fs_type_of(Path::new("/x"), ""), None);
    }

    #[test]
    fn an_error_of_the_source_is_returned_not_swallowed() {
        for fail_at in [0, 256] {
            let mut src = Counting {
                n: 1000,
                width: 3,
                block: 128,
                at: 0,
                fail_at: Some(fail_at),
            };
            let err = XgbMatrix::from_blocks(&mut src, None, 1).unwrap_err();
            assert!(err.to_string().contains("the source failed"), "{err}");
            src.reset();
            let err = XgbMatrix::in_memory(&mut src, 1).unwrap_err();
            assert!(err.to_string().contains("the source failed"), "{err}");
        }
    }
}
