//! cache-core: a content-addressed chunk store (crate docs being written).

pub mod hash;
pub mod index;
pub mod source;

pub use source::{RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
