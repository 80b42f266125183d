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
//!   index**: a roaring bitmap of the completed chunks and each
//!   chunk's BLAKE3 chaining value. Because a power-of-two chunk at an
//!   aligned offset is a complete BLAKE3 subtree, the object's hash — what
//!   `b3sum` prints — is merged from the chunk values without re-reading a
//!   byte ([`hash`]).
//! * A **fill** ([`Store::fetch`]) copies an object from a [`Source`] (HTTP lives in
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
//!   holder. No lock file ever needs cleaning. The filler wakes them at
//!   each commit (a datagram on a Unix socket each of them binds), so
//!   their readers get a chunk as soon as its bytes are written, not once
//!   durable; only the index counts for a resume.
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
//!
//! ## Example: read a range, verify what is stored
//!
//! ```
//! use std::sync::Arc;
//! use cache_core::{testing::MemorySource, FetchOptions, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path())?;
//! let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
//! let object = store
//!     .fetch(Arc::new(MemorySource::new("mem://r", bytes.clone())), FetchOptions::default())
//!     .await?;
//! // Any range, even one that crosses chunks; it waits for what is missing.
//! let piece = object.read_at(1_000_000, 100_000).await?;
//! assert_eq!(&piece[..], &bytes[1_000_000..1_100_000]);
//! // The last 16 bytes (no arithmetic that underflows on short objects).
//! assert_eq!(&object.read_tail(16).await?[..], &bytes[bytes.len() - 16..]);
//!
//! // Re-hash every stored chunk against the value recorded on arrival.
//! let hash = object.wait_complete().await?;
//! let report = object.verify().await?;
//! assert!(report.damaged.is_empty());
//! assert_eq!(report.blake3, Some(hash));
//! // The store finds it by its BLAKE3 (what `b3sum` prints).
//! assert!(store.get(&blake3::hash(&bytes))?.is_some());
//! # Ok(()) }
//! ```
//!
//! ## Example: follow a fill that another process runs
//!
//! Two [`Store`]s opened on one directory behave as two processes would:
//! the second fetch of the same source finds the object busy (the first
//! holds its index lock), follows its index, reads chunks as the first
//! commits them, and would take the fill over if the first died.
//!
//! ```
//! use std::sync::Arc;
//! use cache_core::{testing::MemorySource, FetchOptions, FillState, Store};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> cache_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let bytes: Vec<u8> = (0..4u32 << 20).map(|i| (i % 241) as u8).collect();
//! let source = MemorySource::new("mem://f", bytes.clone()).with_piece_delay_ms(2);
//!
//! let filler = Store::open(dir.path())?; // "process" 1 downloads
//! let object = filler.fetch(Arc::new(source.clone()), FetchOptions::default()).await?;
//!
//! let other = Store::open(dir.path())?; // "process" 2 follows
//! let followed = other.fetch(Arc::new(source.clone()), FetchOptions::default()).await?;
//! assert_eq!(followed.progress().state, FillState::Following);
//! let tail = followed.read_tail(10).await?;
//! assert_eq!(&tail[..], &bytes[bytes.len() - 10..]);
//! assert_eq!(followed.wait_complete().await?, blake3::hash(&bytes));
//! // The first "process" finished the fill it ran.
//! assert_eq!(object.wait_complete().await?, blake3::hash(&bytes));
//! # Ok(()) }
//! ```
//!
//! ## The public API
//!
//! * [`Store`]: open ([`Store::open`], [`Store::open_with`] with
//!   [`StoreOptions`] and a [`SourceFactory`] so objects found on disk can
//!   resume), [`Store::fetch`] / [`Store::fetch_chain`] ([`FetchOptions`],
//!   [`FillOptions`], [`FillPolicy`], [`Expected`] digests), look-ups
//!   ([`Store::open_ref`], [`Store::get`], [`Store::get_digest`],
//!   [`Store::list`] → [`ObjectSummary`]), [`Store::remove`],
//!   [`Store::gc`] → [`GcReport`], [`Store::import`].
//! * [`Object`]: reads ([`Object::read_at`], [`Object::read_tail`],
//!   [`Object::stream`], [`Object::reader`] (`AsyncRead + AsyncSeek`),
//!   [`Object::blocking_reader`] (`Read + Seek`)), progress
//!   ([`Progress`], [`FillState`], [`Object::watch_progress`],
//!   [`Object::chunk_feed`] → [`ChunkMap`] / [`ChunkChange`]), names and
//!   checks ([`Object::blake3`], [`Object::digests`],
//!   [`Object::wait_verified`], [`Object::verify`] → [`VerifyReport`],
//!   [`Object::manifest`]).
//! * Sources: the [`Source`] trait ([`SourceInfo`], [`RangeBody`],
//!   [`SourceError`]), [`SourceChain`] (alternates before the origin),
//!   [`Manifest`] (verified chunk values).
//! * Hashing: [`hash`] (chunk chaining values and the root merged from
//!   them), [`digest`] ([`Digest`], [`Algo`]).
//! * Errors: [`Error`] (with [`ErrorClass`] for exit codes), [`IndexError`].
//!
//! Features: `testing` adds `testing::MemorySource` (an in-memory source
//! for your own tests, used by the examples above); `internals` exposes the
//! chunk index format and fault hooks to this workspace's tests, benchmarks
//! and fuzz targets (no stability promise).
//!
//! ## Inside: the modules and which way they depend
//!
//! Data flows one way — source → filler → index + bitmap → wake-up →
//! readers — and so do the module dependencies (no cycles; each line
//! names what a module uses):
//!
//! ```text
//! store      → supervisor, fill, object, layout, options, plan, index, data
//!                                          the directory: open, fetch, names, gc
//! supervisor → fill, object, index         one task per live object: who fills it
//! fill       → object, plan, layout, index, data, source, chain
//!                                          the filler, the lease; verify and repair
//! object     → object::ObjectHost (its own trait), layout, options, plan, index, data
//!                                          readers, demand, lifecycle, wake-ups, progress
//! layout, options, plan, index, data, digest, hash, manifest, source, chain, error, platform
//!                                          leaves: files, formats, plain data
//! ```
//!
//! ## Inside: one supervisor per object
//!
//! Every live object has a **supervisor**, a task that alone decides who
//! fills it and alone sets its lifecycle state (`Idle`, `Filling`,
//! `Following`, `Complete`, `Failed`; the allowed moves are listed on the
//! state type, in `object/lifecycle.rs`). Everything else sends it a
//! message: a fetch asks for a fill (the supervisor takes the writer's
//! lease on the blocking pool and hands back the fill to start), a reader
//! waiting on a chunk that nothing fetches asks for one, verification
//! asks for the object to itself, and the fill task reports how it ended
//! (a panic included). While another process fills the object, the
//! supervisor tails its index and takes the fill over when that process
//! dies. Readers never wait on the supervisor for data: they queue their
//! demand and are woken by the commit of the chunk they need.
//!
//! ## Portability
//!
//! Everything the store needs from the operating system beyond portable
//! `std` lives in one private module (`platform`); its documentation lists
//! what a Windows port needs (share modes, mandatory locks, deleting mapped
//! files).

#![deny(missing_docs)]

pub mod chain;
mod data;
pub mod digest;
pub mod error;
mod fill;
pub mod hash;
mod layout;
// The chunk index's format and its reader/writer are an implementation
// detail; this workspace's tests, benches and fuzz targets reach them with
// the `internals` feature.
#[cfg(feature = "internals")]
pub mod index;
#[cfg(not(feature = "internals"))]
#[allow(dead_code, unreachable_pub)]
mod index;
pub mod manifest;
mod object;
mod options;
mod plan;
mod platform;
pub mod source;
mod store;
mod supervisor;
mod task;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(all(test, not(feature = "testing")))]
mod testing;

pub use chain::SourceChain;
#[cfg(feature = "internals")]
pub use data::WriteFault;
/// SHA-256 as the prefix hasher computes it, for a benchmark (`internals`).
#[cfg(feature = "internals")]
pub use digest::Sha256AsPrefix;
pub use digest::{Algo, Digest, Expected};
pub use error::{Error, ErrorClass, Result};
/// The `prefix` checkpoint file's codec, for the fuzz target (`internals`).
#[cfg(feature = "internals")]
pub use fill::prefix::reencode as prefix_file_reencode;
pub use fill::{chunk_verify_failures, count_chunk_verify_failure};
pub use index::IndexError;
pub use manifest::{Manifest, ManifestError};
pub use object::{
    BlockingObjectReader, ChunkChange, ChunkMap, FileSpan, FillState, Object, ObjectInfo,
    ObjectReader, ObjectState, Progress, VerifyReport,
};
pub use options::{SourceFactory, StoreOptions};
pub use plan::{
    default_fast_origin_connections, FillOptions, FillPolicy, DEFAULT_CONNECTIONS,
    DEFAULT_FAST_ORIGIN_RATE, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_READAHEAD_CHUNKS,
};
pub use source::{
    DirectBody, DirectRanges, MoveError, RangeBody, Source, SourceError, SourceErrorKind,
    SourceInfo,
};
pub use store::{
    check_chunk_size, object_key, FetchOptions, GcReport, ObjectSummary, Store, DEFAULT_CHUNK_SIZE,
};
