//! Errors of the store, each naming the object, file or URL it is about.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::index::IndexError;
use crate::source::{SourceError, SourceErrorKind};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
///
/// `Error` is `Clone` (causes are shared behind `Arc`) because one failed
/// fill must be reported to every reader that was waiting on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A local file operation failed.
    #[error("{}: {op}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done to it (`"open"`, `"write chunk"`, ...).
        op: &'static str,
        /// The operating system's error.
        #[source]
        cause: Arc<io::Error>,
    },
    /// The chunk index could not be read or written.
    #[error(transparent)]
    Index(Arc<IndexError>),
    /// The source failed (after its own retries).
    #[error("{url}: {cause}")]
    Source {
        /// The source's URL (credentials removed).
        url: String,
        /// What the source reported.
        #[source]
        cause: SourceError,
    },
    /// The bytes do not hash to the digest the request expected. The
    /// object is kept, under its computed names only.
    #[error("object {key}: {} mismatch: expected {expected}, got {actual}; the object is kept under its URL and real hash, never named by the expected value", algo.name().to_uppercase())]
    HashMismatch {
        /// The object's store key.
        key: String,
        /// The algorithm of the expectation.
        algo: crate::digest::Algo,
        /// The digest the request expected (lower-case hex).
        expected: String,
        /// The digest the bytes have (lower-case hex).
        actual: String,
    },
    /// A command that only reads found no store where it looked.
    #[error("no store at {}", .0.display())]
    NoStore(PathBuf),
    /// A chunk's bytes do not match the chaining value of the trusted
    /// manifest: refused before commit (asked again elsewhere if possible).
    #[error(
        "{url}: chunk {chunk} of object {key} does not match its manifest; refused, not stored"
    )]
    ChunkVerify {
        /// The source the chunk came from.
        url: String,
        /// The object's store key.
        key: String,
        /// The chunk's index.
        chunk: u32,
    },
    /// A non-waiting read asked for bytes that are not downloaded yet.
    #[error("object {key}: bytes {start}..{end} are not present yet")]
    NotPresent {
        /// The object's store key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// End of the range asked for (exclusive).
        end: u64,
    },
    /// A read outside the object.
    #[error("object {key}: range {start}..{end} is outside its {len} bytes")]
    OutOfBounds {
        /// The object's store key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// End of the range asked for (exclusive).
        end: u64,
        /// The object's length.
        len: u64,
    },
    /// No object matches a reference (hash, prefix, URL).
    #[error("no object matches {0:?}")]
    NotFound(String),
    /// A reference matches several objects.
    #[error("{reference:?} is ambiguous: it matches {count} objects")]
    Ambiguous {
        /// The reference as given.
        reference: String,
        /// How many objects it matches.
        count: usize,
    },
    /// The operation needs the object to itself, and another fill or reader
    /// (in this or another process) holds it.
    #[error("object {key} is busy: {what}")]
    Busy {
        /// The object's store key.
        key: String,
        /// What holds it (`"it is being filled"`, `"it is being read"`, ...).
        what: &'static str,
    },
    /// The chunk size is not a power of two in 64 KiB..=64 MiB.
    #[error("invalid chunk size {0}: must be a power of two from 64 KiB to 64 MiB")]
    InvalidChunkSize(u64),
    /// The object is incomplete and nothing can fill it.
    #[error("object {key} is incomplete and no source is available to fill it ({url})")]
    NoSource {
        /// The object's store key.
        key: String,
        /// The URL it was fetched from.
        url: String,
    },
    /// The fill this read was waiting on failed.
    #[error("object {key}: fill failed: {}", without_key(.key, .cause))]
    FillFailed {
        /// The object's store key.
        key: String,
        /// Why the fill failed.
        #[source]
        cause: Arc<Error>,
    },
    /// A task doing `what` panicked or was cancelled (a bug, or a runtime
    /// shutting down). The work it did fails like any other error, so
    /// nobody waits for it for ever. Made by [`Error::task`] only.
    #[error("{what}: the task {reason}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// `panicked: <message>` or `was cancelled`.
        reason: String,
    },
}

/// `cause`'s message without a leading `object KEY: ` (the fill-failed
/// line names the object once).
fn without_key(key: &str, cause: &Error) -> String {
    let msg = cause.to_string();
    match msg.strip_prefix(&format!("object {key}: ")) {
        Some(rest) => rest.to_owned(),
        None => msg,
    }
}

/// Broad classes of [`Error`], for exit codes and retry decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The caller asked for something invalid (bad reference, bad size).
    Usage,
    /// The origin or the network failed.
    Network,
    /// Bytes did not verify (hash mismatch, source changed).
    Verification,
    /// Local storage failed (I/O error, full disk, corrupt index).
    LocalIo,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, cause: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            cause: Arc::new(cause),
        }
    }

    /// The failure of a task doing `what`, from its [`JoinError`]: the
    /// panic's message, or that it was cancelled.
    ///
    /// [`JoinError`]: tokio::task::JoinError
    pub fn task(what: &'static str, e: tokio::task::JoinError) -> Self {
        if e.is_panic() {
            Error::panicked(what, e.into_panic().as_ref())
        } else {
            Error::Task {
                what,
                reason: "was cancelled".into(),
            }
        }
    }

    /// The failure of a task doing `what` that panicked with `payload`.
    pub(crate) fn panicked(what: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Error::Task {
            what,
            reason: format!("panicked: {message}"),
        }
    }

    /// The class of this error (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Io { .. } | Error::Index(_) | Error::Busy { .. } | Error::Task { .. } => {
                ErrorClass::LocalIo
            }
            Error::Source { cause, .. } => match cause.kind {
                SourceErrorKind::Changed => ErrorClass::Verification,
                _ => ErrorClass::Network,
            },
            Error::HashMismatch { .. } | Error::ChunkVerify { .. } => ErrorClass::Verification,
            Error::NotPresent { .. }
            | Error::OutOfBounds { .. }
            | Error::NotFound(_)
            | Error::Ambiguous { .. }
            | Error::InvalidChunkSize(_)
            | Error::NoStore(_) => ErrorClass::Usage,
            Error::NoSource { .. } => ErrorClass::Network,
            Error::FillFailed { cause, .. } => cause.class(),
        }
    }

    /// The source error at the root of this error, if any.
    pub fn source_error(&self) -> Option<&SourceError> {
        match self {
            Error::Source { cause, .. } => Some(cause),
            Error::FillFailed { cause, .. } => cause.source_error(),
            _ => None,
        }
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Self {
        Error::Index(Arc::new(e))
    }
}
