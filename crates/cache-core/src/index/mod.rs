//! The chunk index: which chunks of an object are complete, and their BLAKE3
//! chaining values. STUB: signatures are the contract; bodies being written.

use std::ops::Range;
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

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
    /// BLAKE3 hash the caller expects, given up front.
    pub expected: Option<[u8; 32]>,
    /// Seconds since the Unix epoch when the object was registered.
    pub created_unix: u64,
}

impl IndexHeader {
    /// Number of chunks; an empty object has one empty chunk.
    pub fn chunk_count(&self) -> u32 {
        todo!()
    }
    /// Byte range of chunk `index` in the object.
    pub fn chunk_range(&self, index: u32) -> Range<u64> {
        let _ = index;
        todo!()
    }
    /// File name of the data file, `data-<hex data_id>`.
    pub fn data_file_name(&self) -> String {
        todo!()
    }
}

/// One entry of the index log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Chunk `index` is complete and durable; `cv` is its chaining value.
    Chunk { index: u32, cv: [u8; 32] },
    /// Chunk `index` was found damaged and must be fetched again.
    Clear { index: u32 },
    /// All chunks are complete and the object's BLAKE3 hash is `hash`.
    Root { hash: [u8; 32] },
}

/// The state an index log describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexState {
    pub done: RoaringBitmap,
    pub root: Option<[u8; 32]>,
}

/// What opening found and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub dropped_bytes: u64,
    pub snapshot_used: bool,
}

/// Errors of the index, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt chunk index: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// The exclusive writer of an index (the filling process).
pub struct IndexWriter {}

impl IndexWriter {
    pub fn create(path: &Path, header: &IndexHeader) -> Result<IndexWriter, IndexError> {
        let _ = (path, header);
        todo!()
    }
    pub fn open(
        path: &Path,
    ) -> Result<(IndexWriter, IndexHeader, IndexState, Recovery), IndexError> {
        let _ = path;
        todo!()
    }
    pub fn append(&mut self, records: &[Record]) -> Result<(), IndexError> {
        let _ = records;
        todo!()
    }
    pub fn snapshot(&mut self, state: &IndexState) -> Result<(), IndexError> {
        let _ = state;
        todo!()
    }
}

/// A read-only follower of an index another process writes.
pub struct IndexReader {}

impl IndexReader {
    pub fn open(path: &Path) -> Result<(IndexReader, IndexHeader, IndexState), IndexError> {
        let _ = path;
        todo!()
    }
    pub fn poll(&mut self) -> Result<Vec<Record>, IndexError> {
        todo!()
    }
}

/// Latest chaining value per chunk (None: not complete), from a full replay.
pub fn read_cvs(path: &Path) -> Result<Vec<Option<[u8; 32]>>, IndexError> {
    let _ = path;
    todo!()
}
