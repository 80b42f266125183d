//! The chunk index: which chunks of an object are complete, and their BLAKE3
//! chaining values.
//!
//! # Files
//!
//! Each object has one index file (path chosen by the caller) and optionally
//! a snapshot `<index>.snap` next to it.
//!
//! The index file is an **append-only log** that is never renamed or
//! rewritten in place: a follower process ([`IndexReader`]) keeps it open and
//! reads new records as the filler ([`IndexWriter`]) appends them. The only
//! operation that shrinks it is the writer's recovery on open, which cuts a
//! torn or garbled tail back to the last valid record (design invariant 6:
//! a broken tail is dropped and its chunks re-fetched, never trusted).
//!
//! All integers are little-endian.
//!
//! ## Header (variable length, written once by [`IndexWriter::create`])
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"BCIDX\0\0\x01"` |
//! | 8 | 2 | format version, `1` |
//! | 10 | 2 | flags, `0` (any other value is rejected) |
//! | 12 | 4 | header length `H` in bytes, checksum included |
//! | 16 | 8 | object length |
//! | 24 | 4 | chunk size (power of two, 64 KiB..=64 MiB) |
//! | 28 | 4 | reserved, `0` |
//! | 32 | 16 | `data_id` (random; names the data file) |
//! | 48 | 8 | created, seconds since the Unix epoch |
//! | 56 | 1 | `1` if an expected hash is given (legacy, see `IndexHeader::expected`), else `0` |
//! | 57 | 7 | reserved, `0` |
//! | 64 | 32 | expected BLAKE3 hash (zeros if none) |
//! | 96 | 4 | source length `S` (<= 64 KiB) |
//! | 100 | 4 | validator length `V` (<= 64 KiB) |
//! | 104 | S | source, UTF-8 |
//! | 104+S | V | validator, UTF-8 |
//! | H-32 | 32 | BLAKE3 of bytes `0..H-32` (the *header checksum*) |
//!
//! A header with a bad magic, an unknown version or flags, a bad checksum,
//! or fields out of range makes open fail with [`IndexError::Corrupt`]:
//! without a trusted header nothing after it can be interpreted, and the
//! object's data file cannot be bound to a source version (design §5, the
//! nydus #1417 lesson).
//!
//! ## Records (48 bytes each, from offset `H` to the end of the file)
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | kind: `1` Chunk, `2` Clear, `3` Root |
//! | 1 | 3 | reserved, `0` |
//! | 4 | 4 | chunk index (`0` for Root) |
//! | 8 | 32 | payload: Chunk → CV, Clear → zeros, Root → object hash |
//! | 40 | 8 | first 8 bytes of BLAKE3(`data_id` ‖ record bytes `0..40`) |
//!
//! Mixing `data_id` into the checksum means a record from another index (a
//! stale file at the same path, a copied tail) never validates here.
//!
//! ## Replay
//!
//! Records are applied in order with [`IndexState::apply`]:
//!
//! * Chunk sets the chunk's bit (and, for [`read_cvs`] and
//!   [`IndexWriter::open_replayed`], its CV). It also
//!   unsets the root: the chunk was rewritten, so the old root no longer
//!   provably describes the stored bytes.
//! * Clear unsets the chunk's bit and the root.
//! * Root sets the root only when every chunk's bit is set; otherwise it is
//!   ignored (a valid record, no effect).
//!
//! The first record that is incomplete (torn), fails its checksum, has an
//! unknown kind or non-zero reserved bytes, or names a chunk `>=
//! chunk_count` ends the *valid prefix*. Everything from there on is
//! dropped, even records that would validate: a hole in the log means we
//! cannot know what the missing record said (it may have been a Clear).
//!
//! Writers append a batch of records with one write and one `fdatasync`
//! ([`IndexWriter::append`]); the caller fdatasyncs the chunk data first, so
//! a bit on disk is never ahead of durable data (invariant 1).
//!
//! ## Snapshot `<index>.snap` (written by [`IndexWriter::snapshot`])
//!
//! Version 2 (written since the records digest was added):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"BCSNAP\0\x01"` |
//! | 8 | 2 | version, `2` |
//! | 10 | 2 | flags: bit 0 = root present, bit 1 = records digest present |
//! | 12 | 4 | reserved, `0` |
//! | 16 | 32 | header checksum of the index it belongs to |
//! | 48 | 16 | `data_id` of the index it belongs to |
//! | 64 | 8 | covered log length `L` (bytes, header included) |
//! | 72 | 8 | checksum bytes of the last record before `L` (zeros if none) |
//! | 80 | 32 | root hash (zeros if none) |
//! | 112 | 32 | records digest: BLAKE3 of the log bytes `H..L` (zeros if none) |
//! | 144 | 8 | bitmap length `B` |
//! | 152 | B | done bitmap, roaring portable serialization |
//! | 152+B | 32 | BLAKE3 of all preceding bytes |
//!
//! Version 1 (older builds) is the same without the records digest: the
//! bitmap length at 112, the bitmap at 120, flags bit 1 unknown. It is
//! still read, and used like a version 2 snapshot without a digest. (An
//! older build refuses a version 2 snapshot as unknown and replays the
//! whole log, its writer deleting the file: nothing is lost but time.)
//!
//! It is written to `<index>.snap.tmp`, fsynced, renamed over `.snap`, and
//! the directory fsynced, so it is always whole. Opening uses it when its
//! checksum, binding (header checksum + `data_id`) and contents check out,
//! `L` is a record boundary within the file, and the record just before `L`
//! is valid and carries the remembered checksum (so a log that was cut and
//! regrown since does not match); then only records after `L` are replayed.
//! Otherwise the snapshot is ignored and the whole log replayed
//! ([`Recovery::snapshot_used`] says which), and the writer deletes it. This
//! exists so opening a 45 GB object in 64 KiB chunks does not replay ~700K
//! records; it is never a source of truth.
//!
//! Records before `L` are not re-verified when a snapshot is used: they were
//! valid and durable when the snapshot was taken, and the file is
//! append-only.
//!
//! The filler opens with [`IndexWriter::open_replayed`] instead: one read
//! of the whole log that yields the state and every chunk's CV together (a
//! snapshot holds no CVs), so a chunk is done exactly when its CV is known.
//! When the snapshot has a records digest, the records it covers are read
//! in bulk, hashed once and compared with the digest instead of checking
//! each record's checksum (one BLAKE3 call per 48-byte record is ~15x the
//! cost of a bulk hash of the same bytes: at 1 Mi records the whole open
//! takes ~43 ms of CPU instead of ~115 ms, most of what is left being the
//! reading and the CV table); they must also give the snapshot's bitmap
//! and root. Any mismatch means the whole log is replayed record by record
//! and the snapshot removed. So a record damaged under a snapshot ends the
//! valid prefix there like any other: the log is cut, the snapshot (no
//! longer matching) removed, the chunks after it fetched again.
//! [`read_cvs`] reads the same way, without writing.
//!
//! A writer's records digest covers only records it wrote or verified: it
//! is kept by [`IndexWriter::create`] and [`IndexWriter::open_replayed`]
//! and continued by every append. [`IndexWriter::open`] on a snapshot does
//! not read the records under it, so its snapshots carry no digest.

mod format;
mod reader;
mod snapshot;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

pub(crate) use crate::platform::sync_parent;
use crate::platform::{pread, pwrite_all};

pub use format::RECORD_LEN;
pub use reader::{read_cvs, IndexReader, Replayed};
pub use writer::IndexWriter;

/// Smallest chunk size an object may use.
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk size an object may use.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// What an index is bound to: written once when the object is registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    /// Object length in bytes.
    pub len: u64,
    /// Chunk size: a power of two in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
    pub chunk_size: u32,
    /// Random id of the data file this index describes (names the file).
    pub data_id: [u8; 16],
    /// Source identity (URL, or `import:` for imported files).
    pub source: String,
    /// Source validator (ETag / Last-Modified+len) the data belongs to.
    pub validator: String,
    /// Legacy: older builds stored a request's expected BLAKE3 here and
    /// named the object by it. An expectation belongs to one request
    /// (`crate::digest`), so new objects leave this `None` and readers
    /// ignore it (the store only removes aliases older builds wrote for
    /// it). Kept so the header format stays the same.
    pub expected: Option<[u8; 32]>,
    /// Seconds since the Unix epoch when the object was registered.
    pub created_unix: u64,
}

impl IndexHeader {
    /// Number of chunks; an empty object has one empty chunk.
    ///
    /// Saturates at `u32::MAX` (and treats a zero chunk size as one chunk)
    /// rather than panicking on a header that was never validated; headers
    /// read from or written to disk are checked to fit.
    pub fn chunk_count(&self) -> u32 {
        if self.chunk_size == 0 {
            return 1;
        }
        crate::hash::chunk_count(self.len, self.chunk_size).unwrap_or(u32::MAX)
    }
    /// Byte range of chunk `index` in the object. Empty (at the end of the
    /// object) for an index past the last chunk.
    pub fn chunk_range(&self, index: u32) -> Range<u64> {
        let cs = u64::from(self.chunk_size);
        let start = (u64::from(index) * cs).min(self.len);
        let end = start.saturating_add(cs).min(self.len);
        start..end
    }
    /// File name of the data file, `data-<hex data_id>`.
    pub fn data_file_name(&self) -> String {
        let mut s = String::with_capacity(5 + 32);
        s.push_str("data-");
        for b in self.data_id {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// One entry of the index log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Chunk `index` is complete and durable; `cv` is its chaining value.
    Chunk {
        /// Chunk number.
        index: u32,
        /// Its BLAKE3 chaining value.
        cv: [u8; 32],
    },
    /// Chunk `index` was found damaged and must be fetched again.
    Clear {
        /// Chunk number.
        index: u32,
    },
    /// All chunks are complete and the object's BLAKE3 hash is `hash`.
    Root {
        /// The object's BLAKE3 hash.
        hash: [u8; 32],
    },
}

/// The state an index log describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexState {
    /// Complete, durable chunks.
    pub done: RoaringBitmap,
    /// The object's BLAKE3 hash once every chunk is done.
    pub root: Option<[u8; 32]>,
}

impl IndexState {
    /// Applies one record with the replay rules of the module docs, for an
    /// object of `chunk_count` chunks. Returns whether the record changed
    /// anything it is allowed to (a Root while chunks are missing, or a
    /// chunk out of range, is ignored and returns false).
    ///
    /// Followers use this on the records [`IndexReader::poll`] returns, so
    /// they reach exactly the state the writer's replay would.
    pub fn apply(&mut self, record: &Record, chunk_count: u32) -> bool {
        match *record {
            Record::Chunk { index, .. } if index < chunk_count => {
                self.done.insert(index);
                // A rewritten chunk may have a new CV: the old root is stale.
                self.root = None;
                true
            }
            Record::Clear { index } if index < chunk_count => {
                self.done.remove(index);
                self.root = None;
                true
            }
            Record::Root { hash } if self.done.len() == u64::from(chunk_count) => {
                self.root = Some(hash);
                true
            }
            _ => false,
        }
    }
}

/// What opening found and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records in the log (those a snapshot covered included).
    pub records: u64,
    /// Bytes of torn or garbled tail cut off the file.
    pub dropped_bytes: u64,
    /// Whether a snapshot spared replaying the records it covers (for
    /// [`IndexWriter::open_replayed`]: spared checking them one by one,
    /// its records digest vouching for them).
    pub snapshot_used: bool,
}

/// Errors of the index, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading, writing or syncing the index file failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The index file.
        path: PathBuf,
        /// What was being done ("open", "append record", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a chunk index this version can trust (bad magic,
    /// version or header checksum); a damaged tail is never this error,
    /// it is truncated and refetched.
    #[error("{path}: corrupt chunk index: {detail}")]
    Corrupt {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> IndexError {
    let path = path.to_path_buf();
    move |source| IndexError::Io { path, op, source }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn invalid_input(path: &Path, op: &'static str, msg: String) -> IndexError {
    IndexError::Io {
        path: path.to_path_buf(),
        op,
        source: io::Error::new(io::ErrorKind::InvalidInput, msg),
    }
}

/// Reads into `buf` at `off` until it is full or the file ends; returns the
/// bytes read. (`read_exact_at` would fail on a short file, which here is
/// the normal torn-tail case, not an error.)
fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match pread(file, &mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What every open learns from the header.
struct Head {
    header: IndexHeader,
    header_sum: [u8; 32],
    header_len: u64,
    chunk_count: u32,
}

impl Head {
    fn binding(&self) -> snapshot::Binding {
        snapshot::Binding {
            header_sum: self.header_sum,
            data_id: self.header.data_id,
            header_len: self.header_len,
            chunk_count: self.chunk_count,
        }
    }
}

fn read_head(file: &File, path: &Path) -> Result<Head, IndexError> {
    let mut prefix = [0u8; 16];
    let n = read_full_at(file, &mut prefix, 0).map_err(io_err(path, "read header"))?;
    if n < prefix.len() {
        return Err(corrupt(
            path,
            format!("header truncated: file is {n} bytes"),
        ));
    }
    let header_len = format::parse_prefix(&prefix).map_err(|d| corrupt(path, d))?;
    // Bounded by parse_prefix (<= ~128 KiB), so this allocation is small.
    let mut buf = vec![0u8; header_len];
    let n = read_full_at(file, &mut buf, 0).map_err(io_err(path, "read header"))?;
    if n < header_len {
        return Err(corrupt(
            path,
            format!("header truncated: {n} of {header_len} bytes present"),
        ));
    }
    let (header, header_sum) = format::decode_header(&buf).map_err(|d| corrupt(path, d))?;
    let chunk_count = header.chunk_count();
    Ok(Head {
        header,
        header_sum,
        header_len: header_len as u64,
        chunk_count,
    })
}

/// Buffer for replay: a whole number of records, about 64 KiB.
const REPLAY_BUF: usize = (64 * 1024 / RECORD_LEN) * RECORD_LEN;

/// Where a replay stopped.
struct ReplayEnd {
    /// End of the valid prefix.
    valid_end: u64,
    /// Checksum bytes of the last valid record (zeros if none was read).
    last_sum: [u8; 8],
}

/// Reads valid records from `start` to the end of the valid prefix, calling
/// `f` for each, and feeding their bytes to `digest` if given. Memory stays
/// at one buffer whatever the log length.
fn replay(
    file: &File,
    path: &Path,
    data_id: &[u8; 16],
    chunk_count: u32,
    start: u64,
    mut digest: Option<&mut blake3::Hasher>,
    mut f: impl FnMut(&Record),
) -> Result<ReplayEnd, IndexError> {
    let mut buf = vec![0u8; REPLAY_BUF];
    let mut pos = start;
    let mut last_sum = [0u8; 8];
    loop {
        let n = read_full_at(file, &mut buf, pos).map_err(io_err(path, "read records"))?;
        let mut valid = 0;
        let mut ended = n < buf.len();
        for raw in buf[..n].chunks_exact(RECORD_LEN) {
            match format::decode_record(raw, data_id, chunk_count) {
                Some(r) => {
                    f(&r);
                    last_sum = format::record_checksum(raw);
                    valid += RECORD_LEN;
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if let Some(d) = digest.as_deref_mut() {
            d.update(&buf[..valid]);
        }
        pos += valid as u64;
        if ended {
            // An invalid record, or the end of the file (a partial record,
            // n % RECORD_LEN, is a torn tail).
            return Ok(ReplayEnd {
                valid_end: pos,
                last_sum,
            });
        }
    }
}

/// Loads the snapshot if it is trustworthy for this log (see module docs).
/// Returns the state and where to resume replay, or `None` plus whether an
/// untrusted snapshot file exists.
fn try_snapshot(file: &File, path: &Path, head: &Head) -> (Option<snapshot::Snapshot>, bool) {
    let snap = match snapshot::load(path, &head.binding()) {
        Ok(Some(s)) => s,
        Ok(None) => return (None, false),
        Err(why) => {
            tracing::warn!(index = %path.display(), "ignoring chunk index snapshot: {why}");
            return (None, true);
        }
    };
    if snap.covered > head.header_len {
        // The record just before `covered` must still be the one the
        // snapshot saw: catches a log cut and regrown since.
        let mut raw = [0u8; RECORD_LEN];
        let at = snap.covered - RECORD_LEN as u64;
        let ok = matches!(read_full_at(file, &mut raw, at), Ok(RECORD_LEN))
            && format::decode_record(&raw, &head.header.data_id, head.chunk_count).is_some()
            && format::record_checksum(&raw) == snap.last_sum;
        if !ok {
            tracing::warn!(index = %path.display(), "ignoring chunk index snapshot: it does not match the log");
            return (None, true);
        }
    } else if snap.last_sum != [0; 8] {
        return (None, true);
    }
    (Some(snap), true)
}

/// What [`load_state`] found.
struct Loaded {
    state: IndexState,
    end: ReplayEnd,
    /// A snapshot spared replaying the records it covers.
    snapshot_used: bool,
    /// A snapshot file exists (trusted or not).
    snapshot_exists: bool,
    /// BLAKE3 of every valid record, when the whole log was replayed (and
    /// `want_digest` was set); `None` when a snapshot was used.
    digest: Option<blake3::Hasher>,
}

/// Opens the log's state: snapshot (if trusted) plus replay after it.
fn load_state(
    file: &File,
    path: &Path,
    head: &Head,
    want_digest: bool,
) -> Result<Loaded, IndexError> {
    let (snap, snapshot_exists) = try_snapshot(file, path, head);
    let snapshot_used = snap.is_some();
    let (mut state, start, mut last) = match snap {
        Some(s) => (s.state, s.covered, s.last_sum),
        None => (IndexState::default(), head.header_len, [0; 8]),
    };
    let mut digest = (want_digest && !snapshot_used).then(blake3::Hasher::new);
    let cc = head.chunk_count;
    let end = replay(
        file,
        path,
        &head.header.data_id,
        cc,
        start,
        digest.as_mut(),
        |r| {
            state.apply(r, cc);
        },
    )?;
    if end.valid_end > start {
        last = end.last_sum;
    }
    Ok(Loaded {
        state,
        end: ReplayEnd {
            valid_end: end.valid_end,
            last_sum: last,
        },
        snapshot_used,
        snapshot_exists,
        digest,
    })
}

#[cfg(test)]
mod tests;
