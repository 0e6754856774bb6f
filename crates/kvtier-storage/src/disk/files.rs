//! The data files: fixed-size slots in large preallocated files, positioned and vectored I/O.
//!
//! Slot `s` lives in file `s / slots_per_file` (`data-NNNNN.bin`) at byte
//! `(s % slots_per_file) * block_bytes`. Files are created in order, only when the tier needs
//! their slots, and are made durable (file and directory fsync) before any slot in them is used.
//! This module knows nothing of hashes, checksums or the index: it moves bytes.
//!
//! Consecutive slots of one file are written with one `pwritev` and read with one `pread`, so a
//! batch of fresh blocks costs about one syscall per file, not one per block.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustix::fs::{Advice, FallocateFlags};

use super::DiskError;

/// Most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// The tier's data files.
#[derive(Debug)]
pub(crate) struct DataFiles {
    dir: PathBuf,
    block_bytes: u64,
    slots_per_file: u64,
    preallocate: bool,
    files: RwLock<Vec<Arc<File>>>,
}

/// One run of consecutive slots in one file: `(file, byte offset, blocks)`.
pub(crate) struct Run<'a> {
    file: usize,
    offset: u64,
    blocks: Vec<&'a [u8]>,
}

impl DataFiles {
    /// Opens the data files already in `dir` (`data-00000.bin`, `data-00001.bin`, ... up to the
    /// first missing one), bringing each to its full size (a crash may have left the newest one
    /// short).
    pub(crate) fn open(
        dir: &Path,
        block_bytes: u64,
        slots_per_file: u64,
        preallocate: bool,
        max_files: usize,
    ) -> Result<Self, DiskError> {
        let data = Self {
            dir: dir.to_owned(),
            block_bytes,
            slots_per_file,
            preallocate,
            files: RwLock::new(Vec::new()),
        };
        let mut files = Vec::new();
        while files.len() < max_files {
            let path = data.path(files.len());
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(DiskError::io("opening a data file")(e)),
            };
            let len = file
                .metadata()
                .map_err(DiskError::io("reading a data file's size"))?
                .len();
            if len != data.file_bytes() {
                data.allocate(&file)?;
            }
            files.push(Arc::new(file));
        }
        *data.files.write() = files;
        Ok(data)
    }

    /// Bytes in each data file.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.slots_per_file * self.block_bytes
    }

    /// Data files that exist.
    pub(crate) fn count(&self) -> usize {
        self.files.read().len()
    }

    /// Slots covered by the files that exist.
    pub(crate) fn covered_slots(&self) -> u64 {
        self.count() as u64 * self.slots_per_file
    }

    /// Creates data files until there are `count`, each at full size and durable (its data and
    /// its directory entry) before this returns.
    ///
    /// # Errors
    ///
    /// [`DiskError::Io`] when a file cannot be created or sized (a full disk, a file-size
    /// limit); the files created before the failure stay and are used.
    pub(crate) fn ensure(&self, count: usize) -> Result<(), DiskError> {
        let mut have = self.count();
        while have < count {
            let path = self.path(have);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(DiskError::io("creating a data file"))?;
            self.allocate(&file)?;
            file.sync_all()
                .map_err(DiskError::io("syncing a new data file"))?;
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(DiskError::io("syncing the tier directory"))?;
            self.files.write().push(Arc::new(file));
            have += 1;
        }
        Ok(())
    }

    /// Gives `file` its full size: reserved blocks with `fallocate`, or sparse with `ftruncate`
    /// where that is asked for or not supported.
    fn allocate(&self, file: &File) -> Result<(), DiskError> {
        if self.preallocate {
            match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, self.file_bytes()) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(DiskError::io("preallocating a data file")(e.into())),
            }
        }
        file.set_len(self.file_bytes())
            .map_err(DiskError::io("sizing a data file"))
    }

    fn path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("data-{index:05}.bin"))
    }

    fn file(&self, index: usize) -> Result<Arc<File>, DiskError> {
        self.files
            .read()
            .get(index)
            .cloned()
            .ok_or_else(|| DiskError::InvalidConfig {
                reason: format!("slot in data file {index}, which does not exist"),
            })
    }

    /// `(file index, byte offset)` of `slot`.
    fn locate(&self, slot: u64) -> (usize, u64) {
        let file = (slot / self.slots_per_file) as usize;
        (file, (slot % self.slots_per_file) * self.block_bytes)
    }

    /// Groups `(slot, bytes)` pairs, in the order given, into runs of consecutive slots of one
    /// file.
    pub(crate) fn runs<'a>(
        &self,
        writes: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Vec<Run<'a>> {
        let mut runs: Vec<Run<'a>> = Vec::new();
        for (slot, bytes) in writes {
            let (file, offset) = self.locate(slot);
            if let Some(run) = runs.last_mut() {
                let end = run.offset + run.blocks.len() as u64 * self.block_bytes;
                if run.file == file && end == offset && run.blocks.len() < IOV_MAX {
                    run.blocks.push(bytes);
                    continue;
                }
            }
            runs.push(Run {
                file,
                offset,
                blocks: vec![bytes],
            });
        }
        runs
    }

    /// Writes every run (one `pwritev` per run unless the kernel writes short) and returns the
    /// indices of the files written, for [`DataFiles::sync`].
    pub(crate) fn write_runs(&self, runs: &[Run<'_>]) -> Result<Vec<usize>, DiskError> {
        let mut touched: Vec<usize> = Vec::new();
        for run in runs {
            let file = self.file(run.file)?;
            write_vectored_at(&file, run.offset, &run.blocks)
                .map_err(DiskError::io("writing blocks"))?;
            if !touched.contains(&run.file) {
                touched.push(run.file);
            }
        }
        Ok(touched)
    }

    /// `fdatasync` of each file in `files`.
    pub(crate) fn sync(&self, files: &[usize]) -> Result<(), DiskError> {
        for &index in files {
            self.file(index)?
                .sync_data()
                .map_err(DiskError::io("syncing block data"))?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes starting at `slot` (one slot, or several consecutive slots of
    /// one file).
    pub(crate) fn read(&self, slot: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let (index, offset) = self.locate(slot);
        self.file(index)?
            .read_exact_at(buf, offset)
            .map_err(DiskError::io("reading blocks"))
    }

    /// Whether `first..first + count` are consecutive slots of one file.
    pub(crate) fn same_file(&self, first: u64, count: u64) -> bool {
        count == 0 || first / self.slots_per_file == (first + count - 1) / self.slots_per_file
    }

    /// Asks the kernel to drop the cached pages of every data file (used by benchmarks to read
    /// from the device rather than the page cache).
    pub(crate) fn drop_cache(&self) -> Result<(), DiskError> {
        for file in self.files.read().iter() {
            rustix::fs::fadvise(
                &**file,
                0,
                NonZeroU64::new(self.file_bytes()),
                Advice::DontNeed,
            )
            .map_err(|e| DiskError::io("dropping cached pages")(e.into()))?;
        }
        Ok(())
    }
}

/// Writes all of `blocks`, back to back, at `offset`: `pwritev` until every byte is written.
fn write_vectored_at(file: &File, mut offset: u64, blocks: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = blocks.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = rustix::io::pwritev(file, rest, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
