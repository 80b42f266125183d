//! Publishing a verified object: the object (multipart upload), its
//! manifest, then the pointer last — a node that finds the pointer finds
//! the other two complete.

use std::io::Read;

use cache_core::Object;
use object_store::WriteMultipart;

use crate::layout::{source_id, Pointer};
use crate::tier::{SharedError, SharedTier};

/// Parts uploaded at once.
const PART_CONCURRENCY: usize = 2;

/// What [`SharedTier::publish`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Object and manifest uploaded (and the pointer, when asked).
    Uploaded,
    /// The bucket already had object and manifest; only the pointer (when
    /// asked and missing) was written.
    AlreadyThere,
}

impl SharedTier {
    /// Publishes the complete, verified `object`: `b3/<hex>` (multipart
    /// upload, unless the bucket has it at the right size), its manifest,
    /// then, when `source` (identity, validator) is given and the
    /// validator is not empty, the pointer `src/<id>`. `progress` is called
    /// with the bytes uploaded so far. Fails (logged, counted) on any
    /// bucket error; an object whose root is not verified is refused.
    pub async fn publish(
        &self,
        object: &Object,
        source: Option<(&str, &str)>,
        mut progress: impl FnMut(u64),
    ) -> Result<Published, SharedError> {
        let info = object.info();
        let (Some(root), true) = (info.blake3, info.verified) else {
            return Err(SharedError::Config(format!(
                "object {} is not complete and verified: nothing is published",
                info.key
            )));
        };
        let manifest = match object.manifest() {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(SharedError::Config(format!(
                    "object {root} has no manifest: nothing is published"
                )))
            }
            Err(e) => return Err(SharedError::Config(format!("manifest of {root}: {e}"))),
        };
        let layout = &self.inner.layout;
        let (object_key, manifest_key) = (layout.object(&root), layout.manifest(&root));
        let len = object.len();
        let have = self.size_of(&object_key).await? == Some(len)
            && self.size_of(&manifest_key).await?.is_some();
        let outcome = if have {
            Published::AlreadyThere
        } else {
            self.upload(object, &object_key, len, &mut progress).await?;
            self.put(&manifest_key, manifest.encode()).await?;
            Published::Uploaded
        };
        if let Some((identity, validator)) = source.filter(|(_, v)| !v.is_empty()) {
            let pointer = Pointer {
                root,
                len,
                validator: validator.to_owned(),
            };
            let key = layout.pointer(&source_id(identity, validator));
            self.put(&key, pointer.encode()).await?;
        }
        tracing::info!(bucket = %self.url(), object = %root, ?outcome, "published");
        Ok(outcome)
    }

    /// Multipart upload of the object's data file (its first `len` bytes).
    async fn upload(
        &self,
        object: &Object,
        key: &object_store::path::Path,
        len: u64,
        progress: &mut impl FnMut(u64),
    ) -> Result<(), SharedError> {
        let path = object.data_path();
        let part = self.inner.options.part_bytes.max(5 << 20);
        let upload = self
            .answered(key, 0, async {
                self.inner
                    .store
                    .put_multipart(key)
                    .await
                    .map_err(|e| self.fail(key, e))
            })
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
        // The file is read on a blocking thread, one part at a time.
        let reader = tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut file = file.take(len);
            loop {
                let mut buf = Vec::with_capacity(part);
                match (&mut file).take(part as u64).read_to_end(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.blocking_send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut sent = 0u64;
        let result = async {
            while let Some(piece) = rx.recv().await {
                let piece =
                    piece.map_err(|e| self.fail(key, format!("reading the local copy: {e}")))?;
                writer
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| self.fail(key, e))?;
                sent += piece.len() as u64;
                writer.put(piece.into());
                progress(sent);
            }
            if sent != len {
                return Err(self.fail(
                    key,
                    format!("the local copy has {sent} bytes, expected {len}"),
                ));
            }
            Ok(())
        }
        .await;
        drop(rx);
        let _ = reader.await;
        match result {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.fail(key, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}
