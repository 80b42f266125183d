//! The data file of an object: its bytes at their own offsets.
//!
//! Writes are positioned (`pwrite`), so concurrent requests of one fill
//! write their chunks without coordination. Reads go through one read-only
//! memory map of the whole file, handed out as [`Bytes`] slices that share
//! the map (no copy). The kernel's page cache makes a `pwrite` visible to
//! the map at once; the chunk index decides *whether* a reader may look.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// A hook that can fail writes, for tests of the storage-error path
/// (a real full disk is hard to arrange in a test). Called with the offset
/// and length of each write before it is done.
pub type WriteFault = Arc<dyn Fn(u64, usize) -> io::Result<()> + Send + Sync>;

pub(crate) struct DataFile {
    path: PathBuf,
    file: File,
    /// The whole file, mapped once; `None` for an empty object.
    map: Option<Bytes>,
    fault: Option<WriteFault>,
}

impl DataFile {
    /// Creates the data file with its full length (sparse until written).
    pub(crate) fn create(path: &Path, len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(path, "create data file", e))?;
        file.set_len(len)
            .map_err(|e| Error::io(path, "size data file", e))?;
        file.sync_all()
            .map_err(|e| Error::io(path, "sync data file", e))?;
        Ok(())
    }

    /// Opens an existing data file and checks it has the object's length.
    pub(crate) fn open(path: &Path, len: u64, fault: Option<WriteFault>) -> Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, "open data file", e))?;
        let actual = file
            .metadata()
            .map_err(|e| Error::io(path, "stat data file", e))?
            .len();
        if actual != len {
            return Err(Error::io(
                path,
                "check data file",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("data file is {actual} bytes, its index says {len}"),
                ),
            ));
        }
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and the file is never truncated
            // while the store has it open (eviction takes an exclusive lock
            // that every opener's shared lock excludes).
            let map =
                unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "map data file", e))?;
            Some(Bytes::from_owner(map))
        };
        Ok(DataFile {
            path: path.to_owned(),
            file,
            map,
            fault,
        })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes `buf` at `offset`.
    pub(crate) fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if let Some(fault) = &self.fault {
            fault(offset, buf.len()).map_err(|e| Error::io(&self.path, "write chunk", e))?;
        }
        crate::platform::pwrite_all(&self.file, buf, offset)
            .map_err(|e| Error::io(&self.path, "write chunk", e))
    }

    /// Makes every completed write durable (fdatasync).
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "sync data file", e))
    }

    /// The bytes of `range`, sharing the map. The caller checked that the
    /// range lies in completed chunks.
    pub(crate) fn bytes(&self, range: Range<u64>) -> Bytes {
        match &self.map {
            Some(map) => map.slice(range.start as usize..range.end as usize),
            None => Bytes::new(),
        }
    }
}
