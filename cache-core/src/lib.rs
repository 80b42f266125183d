//! # cache-core
//!
//! A content-addressed block cache for large objects (disk images,
//! archives): read them while they download, download them once, resume
//! after anything, verify every byte with BLAKE3.
//!
//! ## The model
//!
//! * An **object** is stored as fixed-size **chunks** (a power of two,
//!   64 KiB–64 MiB, 1 MiB by default) in one data file, plus a **chunk
//!   index** ([`index`]): a roaring bitmap of the completed chunks and each
//!   chunk's BLAKE3 chaining value. Because a power-of-two chunk at an
//!   aligned offset is a complete BLAKE3 subtree, the object's hash — what
//!   `b3sum` prints — is merged from the chunk values without re-reading a
//!   byte ([`hash`]).
//! * A **fill** ([`fill`]) copies an object from a [`Source`] (HTTP lives in
//!   `cache-http`): several range requests at once, adjacent missing chunks
//!   merged, chunks readers wait for first. A chunk becomes visible only
//!   once written and hashed; it becomes durable in batches (data synced
//!   before its index record).
//! * **Readers** ([`Object::read_at`], [`Object::stream`],
//!   [`Object::reader`]) get completed chunks as zero-copy [`bytes::Bytes`]
//!   and wait — woken by the very chunk they need — for the rest.
//! * **One filler per object**: in one process, every request attaches to
//!   the running fill; across processes, the filler holds an OS lock on the
//!   object's index, other processes follow the index (and publish their
//!   readers' demands to it) and take over when the lock dies with its
//!   holder. No lock file ever needs cleaning.
//! * **Names are computed, never expected**: a complete object is found by
//!   its BLAKE3 root and by the SHA-256 (and SHA-512) its fill computed
//!   over the completed prefix ([`digest`]); a digest a request expects is
//!   checked against those ([`Object::wait_verified`]) and never names,
//!   renames or hides the object. Objects with the same bytes share one
//!   data file, and every name stays resolvable while any copy exists.
//! * **Untrusted sources, verified chunks**: a [`SourceChain`] puts
//!   alternates (parent caches) before the origin ([`chain`]). When the
//!   caller knows the BLAKE3, a [`Manifest`] (the chunk chaining values,
//!   [`manifest`]) proven against it checks every chunk before commit; a
//!   chunk that fails is refused, counted ([`chunk_verify_failures`]) and
//!   fetched from the next source.
//! * **One version per object**: an object is keyed by its source's
//!   identity, validator (ETag / Last-Modified) and length, and every
//!   response must carry that validator; a new upstream version is a new
//!   object, and a change mid-fill ends the fill ("source changed").
//!
//! ## Example: stream an object while it is still filling
//!
//! ```
//! use std::sync::Arc;
//! use cache_core::{testing::MemorySource, FetchOptions, Store};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path())?;
//! // 5 MiB that arrive slowly, 256 KiB at a time.
//! let bytes: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
//! let source = MemorySource::new("mem://example", bytes.clone()).with_piece_delay_ms(1);
//!
//! let object = store.fetch(Arc::new(source), FetchOptions::default()).await?;
//! // Read the far end first: it is demanded and fetched before the rest.
//! let tail = object.read_at(object.len() - 10, 10).await?;
//! assert_eq!(&tail[..], &bytes[bytes.len() - 10..]);
//!
//! // Stream everything, in order, as chunks complete.
//! let mut stream = Box::pin(object.stream(0..object.len()));
//! let mut n = 0;
//! while let Some(piece) = stream.next().await {
//!     let piece = piece?;
//!     assert_eq!(&piece[..], &bytes[n..n + piece.len()]);
//!     n += piece.len();
//! }
//! assert_eq!(object.wait_complete().await?, blake3::hash(&bytes));
//! # Ok(()) }
//! ```

pub mod chain;
mod data;
pub mod digest;
pub mod error;
pub mod fill;
pub mod hash;
pub mod index;
pub mod manifest;
pub mod object;
pub mod source;
pub mod store;
mod task;
pub mod testing;

pub use chain::SourceChain;
pub use data::WriteFault;
pub use digest::{Algo, Digest, Expected};
pub use error::{Error, ErrorClass, Result};
pub use fill::{chunk_verify_failures, count_chunk_verify_failure, FillOptions, FillPolicy};
pub use manifest::{Manifest, ManifestError};
pub use object::{
    BlockingObjectReader, ChunkChange, ChunkMap, FillState, Object, ObjectInfo, ObjectReader,
    ObjectState, Progress, VerifyReport,
};
pub use source::{RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
pub use store::{
    check_chunk_size, object_key, FetchOptions, GcReport, ObjectSummary, SourceFactory, Store,
    StoreOptions, DEFAULT_CHUNK_SIZE,
};
