//! The data file of an object: its bytes at their own offsets.
//!
//! Writes are positioned (`pwrite`), so concurrent requests of one fill
//! write their chunks without coordination. Reads go through one read-only
//! memory map of the whole file, handed out as [`Bytes`] slices that share
//! the map (no copy). The kernel's page cache makes a `pwrite` visible to
//! the map at once; the chunk index decides *whether* a reader may look.
//! A fill's own one-pass reads (its hashers, its read-back of moved
//! chunks) map a few MiB at a time instead ([`DataFile::map_range`]), so
//! what they read does not stay mapped in the process.
//!
//! # The mapping contract
//!
//! A [`Bytes`] handed out by [`DataFile::bytes`] is a view of the file's
//! pages, not a copy, so it is only as immutable as the file. The store
//! keeps it so with three rules, and this module holds the one `unsafe`
//! that relies on them:
//!
//! 1. **A chunk is written once, before it is done.** Readers get bytes of
//!    done chunks only; a fill never writes a done chunk again (a body
//!    that passes one is compared, not written). One exception, harmless
//!    by construction: a chunk another process's filler announced and then
//!    died before recording (`object::wake`) is done for that process's
//!    followers, and the fill that takes over writes it again — with the
//!    same bytes of the same source version, so what a reader holds does
//!    not change.
//! 2. **A repair writes into a new file.** Chunks cleared by verification
//!    are refetched into a copy of the data file ([`DataFile::fork`]),
//!    renamed over the old name before the clearing is recorded. The old
//!    inode, and every `Bytes` into its map, stays exactly as it was until
//!    the last of them is dropped. This also unshares a data file
//!    hard-linked with another object of the same bytes.
//! 3. **Nothing shrinks a file in use.** Every opener holds a shared
//!    `flock` on the data file, and eviction removes an object only under
//!    an exclusive one.
//!
//! Another program that writes or truncates a data file breaks the
//! contract: readers may see changed bytes, and a truncation makes an
//! access past the new end raise `SIGBUS`. Nothing in the store can
//! prevent that; keep other programs' hands off the store directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// A hook that can fail writes, for tests of the storage-error path
/// (a real full disk is hard to arrange in a test). Called with the offset
/// and length of each write before it is done.
pub type WriteFault = Arc<dyn Fn(u64, usize) -> io::Result<()> + Send + Sync>;

/// Offsets of a map must be a multiple of the allocation granularity:
/// 4 KiB on Linux, 64 KiB on Windows.
const MAP_ALIGN: u64 = 64 << 10;

/// Part of a data file mapped for one pass over its bytes
/// ([`DataFile::map_range`]); unmapped when dropped, so what it covered
/// does not stay in the process's resident size (as it does in the whole
/// file's map, which readers share).
pub(crate) struct MappedRange {
    map: Mmap,
    /// The file's bytes it was asked for (the map starts aligned before).
    range: Range<u64>,
}

impl MappedRange {
    /// Whether file bytes `r` are inside the mapped range.
    pub(crate) fn covers(&self, r: &Range<u64>) -> bool {
        self.range.start <= r.start && r.end <= self.range.end
    }

    /// File bytes `r`, which must be inside the mapped range.
    pub(crate) fn bytes(&self, r: Range<u64>) -> &[u8] {
        let skip = self.range.start % MAP_ALIGN;
        &self.map[(r.start - self.range.start + skip) as usize
            ..(r.end - self.range.start + skip) as usize]
    }
}

pub(crate) struct DataFile {
    path: PathBuf,
    len: u64,
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
            // SAFETY: the mapping contract of this module: bytes of done
            // chunks never change (written once; repairs go to a new file)
            // and the store never truncates a file in use (eviction's
            // exclusive lock excludes every opener's shared lock). Another
            // program breaking it is documented above.
            let map =
                unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "map data file", e))?;
            Some(Bytes::from_owner(map))
        };
        Ok(DataFile {
            path: path.to_owned(),
            len,
            file,
            map,
            fault,
        })
    }

    /// Takes the shared lock that says "in use" to eviction in every
    /// process. `Ok(false)`: eviction holds it (the object is going away).
    pub(crate) fn lock_shared(&self) -> Result<bool> {
        match self.file.try_lock_shared() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&self.path, "lock data file", e)),
        }
    }

    /// Whether the file at this data file's path is still the one this
    /// opened (a repair in another process renames a copy over it).
    pub(crate) fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.ino() == open.ino() && at_path.dev() == open.dev(),
            _ => true,
        }
    }

    /// Opens the file now at this data file's path, locked shared.
    pub(crate) fn reopen(&self) -> Result<DataFile> {
        let data = DataFile::open(&self.path, self.len, self.fault.clone())?;
        if !data.lock_shared()? {
            return Err(Error::io(
                &self.path,
                "lock data file",
                io::Error::new(io::ErrorKind::WouldBlock, "the object is being removed"),
            ));
        }
        Ok(data)
    }

    /// Copies the file to a new inode, renamed over the old name (rule 2
    /// of the mapping contract), and opens that copy. The caller holds the
    /// object's fill lock, so nothing writes the old file meanwhile; what
    /// is mapped from it stays as it is.
    pub(crate) fn fork(&self) -> Result<DataFile> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.path.with_file_name(format!(".{name}.repair"));
        let copied = std::fs::copy(&self.path, &tmp)
            .map_err(|e| Error::io(&tmp, "copy data file for repair", e))
            .and_then(|_| {
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&tmp, "sync repaired data file", e))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &self.path)
                    .map_err(|e| Error::io(&self.path, "switch to repaired data file", e))
            })
            .and_then(|()| {
                crate::index::sync_parent(&self.path)
                    .map_err(|e| Error::io(&self.path, "sync object directory", e))
            });
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.reopen()
    }

    /// Writes `buf` at `offset`.
    pub(crate) fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if let Some(fault) = &self.fault {
            fault(offset, buf.len()).map_err(|e| Error::io(&self.path, "write chunk", e))?;
        }
        crate::platform::pwrite_all(&self.file, buf, offset)
            .map_err(|e| Error::io(&self.path, "write chunk", e))
    }

    /// Lets `mover` write `len` bytes at `offset` straight into the file
    /// (a [`crate::DirectBody`]), after the same fault hook as
    /// [`DataFile::write_at`].
    pub(crate) fn move_in(
        &self,
        offset: u64,
        len: usize,
        mover: impl FnOnce(&File) -> std::result::Result<(), crate::MoveError>,
    ) -> std::result::Result<(), crate::MoveError> {
        if let Some(fault) = &self.fault {
            fault(offset, len).map_err(crate::MoveError::Write)?;
        }
        mover(&self.file)
    }

    /// Maps `range` (not empty) of the file read-only, for one pass over
    /// it. The caller reads through it only bytes nothing writes while
    /// they are read: done chunks (the prefix hasher), or chunks its own
    /// request has just written and not yet committed (a fill's
    /// read-back). Like the whole file's map, it may cover other chunks
    /// while they are written; the mapping contract above keeps it from
    /// shrinking.
    pub(crate) fn map_range(&self, range: Range<u64>) -> io::Result<MappedRange> {
        if range.is_empty() || range.end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map bytes {range:?} of a {}-byte file", self.len),
            ));
        }
        let start = range.start - range.start % MAP_ALIGN;
        let len = usize::try_from(range.end - start).map_err(io::Error::other)?;
        // SAFETY: the mapping contract of this module (the file never
        // shrinks while open); the caller reads only bytes nothing writes
        // meanwhile (see above).
        let map = unsafe { MmapOptions::new().offset(start).len(len).map(&self.file) }?;
        Ok(MappedRange { map, range })
    }

    /// The path of the file (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Starts writing the file's dirty pages to disk, without waiting
    /// (see [`crate::platform::start_writeback`]).
    pub(crate) fn start_writeback(&self) -> Result<()> {
        crate::platform::start_writeback(&self.file)
            .map_err(|e| Error::io(&self.path, "start writeback of the data file", e))
    }

    /// Makes every completed write durable (fdatasync).
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, "sync data file", e))
    }

    /// Reads `buf.len()` bytes at `offset` with `pread` (not through the
    /// map: nothing gets mapped into the process).
    pub(crate) fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match crate::platform::pread(&self.file, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Where `piece` lies in this file: its offset, when `piece` is a
    /// slice of this file's map (as [`DataFile::bytes`] hands out).
    pub(crate) fn offset_of(&self, piece: &[u8]) -> Option<u64> {
        let map = self.map.as_ref()?;
        let base = map.as_ptr() as usize;
        let at = piece.as_ptr() as usize;
        let end = at.checked_add(piece.len())?;
        (at >= base && end <= base + map.len()).then(|| (at - base) as u64)
    }

    /// The open file (for `sendfile` of bytes [`DataFile::offset_of`]
    /// placed in it).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn file(&self) -> &File {
        &self.file
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::TempDir, DataFile, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = DataFile::open(&path, len as u64, None).expect("open");
        (dir, file, bytes)
    }

    #[test]
    fn a_mapped_range_is_exactly_those_bytes() {
        let (_dir, file, bytes) = file_of(300_000);
        // Aligned, unaligned (the map starts before it), up to the end.
        for range in [
            0..65_536u64,
            70_000..70_001,
            1_000..200_000,
            131_073..300_000,
        ] {
            let map = file.map_range(range.clone()).expect("map");
            assert!(map.covers(&range));
            assert_eq!(
                map.bytes(range.clone()),
                &bytes[range.start as usize..range.end as usize]
            );
        }
    }

    #[test]
    fn a_range_past_the_end_or_empty_is_refused() {
        let (_dir, file, _) = file_of(10_000);
        for range in [0..10_001u64, 5_000..5_000, 20_000..30_000] {
            let e = file.map_range(range.clone()).err().expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{range:?}");
            assert!(e.to_string().contains("10000-byte file"), "{e}");
        }
    }

    #[test]
    fn writeback_starts_on_a_data_file() {
        let (_dir, file, _) = file_of(1 << 20);
        file.write_at(4096, &[7; 8192]).expect("write");
        file.start_writeback().expect("writeback");
        file.sync().expect("sync");
    }
}
