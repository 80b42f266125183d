//! [`S3Source`]: `b3/<hex>` in the bucket as an alternate source of a fill
//! (see [`cache_core::chain`]), every chunk checked before it is handed on.
//!
//! The probe reads the manifest and refuses it as a whole unless its chunk
//! values merge to `<hex>` and it describes the object's length. A read
//! asks for whole manifest chunks (ranged GETs of at most
//! [`SharedOptions::max_get_bytes`](crate::SharedOptions)), hashes each
//! chunk as it completes and yields only chunks that match: a tampered
//! byte ends the read with an error at its chunk (counted as a chunk
//! verify failure), and the fill asks the next source for the rest.
//!
//! It does this itself, not only through the fill's manifest check,
//! because that check runs only when the caller expects a BLAKE3 root; a
//! fetch that found the object through the pointer has none.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cache_core::{Manifest, RangeBody, Source, SourceError, SourceErrorKind, SourceInfo};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange};

use crate::tier::{count_read, SharedTier};

/// Largest manifest accepted (64 MiB: 2 M chunks, 2 TiB at 1 MiB chunks).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The object `b3/<root>` of a [`SharedTier`] (see the module docs).
pub struct S3Source {
    tier: SharedTier,
    root: blake3::Hash,
    object: Path,
    manifest: tokio::sync::OnceCell<Arc<Manifest>>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.identity())
    }
}

impl S3Source {
    /// The object named `root` in `tier`. Contacts nothing yet.
    pub fn new(tier: &SharedTier, root: blake3::Hash) -> S3Source {
        S3Source {
            object: tier.inner.layout.object(&root),
            tier: tier.clone(),
            root,
            manifest: tokio::sync::OnceCell::new(),
        }
    }

    fn error(
        &self,
        kind: SourceErrorKind,
        key: &Path,
        cause: impl std::fmt::Display,
    ) -> SourceError {
        let e = self.tier.fail(key, cause);
        SourceError::new(kind, e.to_string())
    }

    /// The manifest, read once and checked against the name and the
    /// object's size.
    async fn checked_manifest(&self) -> Result<Arc<Manifest>, SourceError> {
        self.manifest
            .get_or_try_init(|| async {
                let key = self.tier.inner.layout.manifest(&self.root);
                let size = match self.tier.size_of(&self.object).await {
                    Ok(Some(size)) => size,
                    Ok(None) => {
                        return Err(SourceError::new(
                            SourceErrorKind::NotFound,
                            format!("{}: not in the bucket", self.identity()),
                        ))
                    }
                    Err(e) => {
                        return Err(SourceError::new(SourceErrorKind::Network, e.to_string()))
                    }
                };
                let bytes = match self.tier.get_small(&key, MAX_MANIFEST_BYTES).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(self.error(SourceErrorKind::NotFound, &key, "no manifest"))
                    }
                    Err(e) => {
                        return Err(SourceError::new(SourceErrorKind::Network, e.to_string()))
                    }
                };
                let manifest = Manifest::decode(&bytes)
                    .map_err(|e| self.error(SourceErrorKind::Protocol, &key, e))?;
                manifest.verify_root(&self.root).map_err(|e| {
                    self.error(SourceErrorKind::Protocol, &key, format!("refused: {e}"))
                })?;
                if manifest.len() != size {
                    return Err(self.error(
                        SourceErrorKind::Protocol,
                        &self.object,
                        format!("{size} bytes, its manifest describes {}", manifest.len()),
                    ));
                }
                Ok(Arc::new(manifest))
            })
            .await
            .cloned()
    }
}

impl Source for S3Source {
    fn identity(&self) -> String {
        self.tier.name(&self.object)
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            let manifest = self.checked_manifest().await?;
            Ok(SourceInfo {
                len: manifest.len(),
                validator: format!("\"{}\"", self.root.to_hex()),
                ranges: true,
            })
        })
    }

    fn read_range<'a>(
        &'a self,
        range: Range<u64>,
        _expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
        Box::pin(async move {
            let manifest = self.checked_manifest().await?;
            let len = manifest.len();
            if range.start >= range.end || range.end > len {
                return Err(SourceError::new(
                    SourceErrorKind::Other,
                    format!("{}: range {range:?} outside 0..{len}", self.identity()),
                ));
            }
            let cs = u64::from(manifest.chunk_size());
            let first = range.start / cs;
            let last = range.end.div_ceil(cs);
            let reader = ChunkReader {
                source: Reader {
                    tier: self.tier.clone(),
                    object: self.object.clone(),
                    max_get: self.tier.inner.options.max_get_bytes.max(cs),
                },
                manifest,
                want: range.clone(),
                next_chunk: first,
                end_chunk: last,
                body: None,
                body_end: first * cs,
                buf: BytesMut::new(),
            };
            let stream: BoxStream<'static, Result<Bytes, SourceError>> =
                futures::stream::unfold(Some(reader), |state| async move {
                    let mut reader = state?;
                    match reader.next_piece().await {
                        Ok(Some(piece)) => Some((Ok(piece), Some(reader))),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), None)),
                    }
                })
                .boxed();
            Ok(RangeBody { range, stream })
        })
    }

    fn manifest(&self) -> BoxFuture<'_, Result<Option<Manifest>, SourceError>> {
        Box::pin(async move { Ok(Some(Manifest::clone(&*self.checked_manifest().await?))) })
    }
}

/// Where the bytes come from: ranged GETs of one key.
struct Reader {
    tier: SharedTier,
    object: Path,
    max_get: u64,
}

impl Reader {
    async fn get(
        &self,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>, SourceError> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        match self.tier.inner.store.get_opts(&self.object, opts).await {
            Ok(got) => Ok(got.into_stream()),
            Err(e) => {
                let kind = match e {
                    object_store::Error::NotFound { .. } => SourceErrorKind::NotFound,
                    _ => SourceErrorKind::Network,
                };
                Err(self.refuse(kind, format!("GET bytes {range:?}: {e}")))
            }
        }
    }

    /// Logs and counts a failed read (naming the key); the error for the
    /// fill, which names the source itself.
    fn refuse(&self, kind: SourceErrorKind, cause: String) -> SourceError {
        self.tier.fail(&self.object, &cause);
        SourceError::new(kind, cause)
    }
}

/// The state of one read: whole manifest chunks, verified one by one.
struct ChunkReader {
    source: Reader,
    manifest: Arc<Manifest>,
    /// The bytes the caller asked for (a part of the chunks read).
    want: Range<u64>,
    next_chunk: u64,
    end_chunk: u64,
    /// The current GET and where it ends.
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    body_end: u64,
    buf: BytesMut,
}

impl ChunkReader {
    /// The next verified piece of `want`, `None` at its end.
    async fn next_piece(&mut self) -> Result<Option<Bytes>, SourceError> {
        if self.next_chunk >= self.end_chunk {
            return Ok(None);
        }
        let cs = u64::from(self.manifest.chunk_size());
        let len = self.manifest.len();
        let index = self.next_chunk;
        let start = index * cs;
        let end = (start + cs).min(len);
        while (self.buf.len() as u64) < end - start {
            let Some(body) = self.body.as_mut() else {
                // A new GET: whole chunks, at most max_get bytes.
                let get_end = (start + self.source.max_get / cs * cs)
                    .min(self.end_chunk * cs)
                    .min(len);
                self.body = Some(
                    self.source
                        .get(start + self.buf.len() as u64..get_end)
                        .await?,
                );
                self.body_end = get_end;
                continue;
            };
            match body.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    return Err(self.source.refuse(
                        SourceErrorKind::Network,
                        format!("reading chunk {index}: {e}"),
                    ));
                }
                None => {
                    let got = start + self.buf.len() as u64;
                    if got < self.body_end {
                        return Err(self.source.refuse(
                            SourceErrorKind::Protocol,
                            format!("body ended at byte {got}, expected {}", self.body_end),
                        ));
                    }
                    self.body = None;
                }
            }
        }
        let chunk = self.buf.split_to((end - start) as usize).freeze();
        let index32 = u32::try_from(index).map_err(|_| {
            SourceError::new(
                SourceErrorKind::Other,
                format!("chunk {index} out of range"),
            )
        })?;
        let cv = cache_core::hash::chunk_cv(&chunk, index32, self.manifest.chunk_size(), len);
        if cv != self.manifest.cvs()[index as usize] {
            cache_core::count_chunk_verify_failure();
            return Err(self.source.refuse(
                SourceErrorKind::Protocol,
                format!(
                    "chunk {index} (bytes {start}..{end}) does not match the manifest: refused, fetched from the next source"
                ),
            ));
        }
        count_read(chunk.len() as u64);
        self.next_chunk += 1;
        // The part of this chunk the caller asked for.
        let from = self.want.start.max(start) - start;
        let to = self.want.end.min(end) - start;
        Ok(Some(chunk.slice(from as usize..to as usize)))
    }
}
