//! An object's digests (its names) and a request's expectations of them.

use std::sync::Arc;

use super::{Object, ObjectShared};
use crate::digest::{Algo, Digest, PrefixHasher};
use crate::error::{Error, Result};

impl Object {
    /// Every digest known for the object: its BLAKE3 once complete, then
    /// the stored SHA-256 / SHA-512 (what the fill computed).
    pub fn digests(&self) -> Vec<Digest> {
        let Some(root) = self.blake3() else {
            return Vec::new();
        };
        let mut all = vec![Digest::blake3(&root)];
        all.extend(crate::layout::read_digests(
            &self.shared.dir,
            &self.shared.header,
        ));
        all
    }

    /// The object's digest of `algo`, waiting for the object to complete.
    /// A digest not stored yet (an object imported or filled by an older
    /// build, or SHA-512 nobody asked for during the fill) is computed
    /// from the data file once, stored, and becomes a name of the object.
    pub async fn digest(&self, algo: Algo) -> Result<Digest> {
        let root = self.wait_complete().await?;
        if algo == Algo::Blake3 {
            return Ok(Digest::blake3(&root));
        }
        if let Some(d) = self.digests().into_iter().find(|d| d.algo == algo) {
            return Ok(d);
        }
        let obj = self.shared.clone();
        crate::task::blocking("hash object", move || compute_and_store(&obj, algo)).await
    }

    /// Waits for the object to complete, then checks it against what this
    /// request expects. A mismatch is [`Error::HashMismatch`] naming both
    /// values; the object itself stays as it is (complete, under its
    /// computed names): an expectation never changes an object.
    pub async fn wait_verified(&self, expected: &[Digest]) -> Result<blake3::Hash> {
        let root = self.wait_complete().await?;
        for e in expected {
            let actual = self.digest(e.algo).await?;
            self.mismatch(e, &actual)?;
        }
        Ok(root)
    }

    /// Checks the BLAKE3 expectations among `expected` against `root`
    /// (cheap: no hashing).
    pub(crate) fn check_blake3(&self, expected: &[Digest], root: &blake3::Hash) -> Result<()> {
        let actual = Digest::blake3(root);
        for e in expected.iter().filter(|e| e.algo == Algo::Blake3) {
            self.mismatch(e, &actual)?;
        }
        Ok(())
    }

    fn mismatch(&self, expected: &Digest, actual: &Digest) -> Result<()> {
        if expected == actual {
            return Ok(());
        }
        Err(Error::HashMismatch {
            key: self.shared.key.clone(),
            algo: expected.algo,
            expected: expected.hex(),
            actual: actual.hex(),
        })
    }
}

/// Hashes a complete object's data file with `algo` and stores the result.
fn compute_and_store(obj: &Arc<ObjectShared>, algo: Algo) -> Result<Digest> {
    let mut hasher = PrefixHasher::new(&[algo]);
    let step = 8u64 << 20;
    let mut pos = 0;
    while pos < obj.header.len {
        let end = (pos + step).min(obj.header.len);
        hasher.update(&obj.data().bytes(pos..end));
        pos = end;
    }
    let digest = hasher
        .finish()
        .pop()
        .ok_or_else(|| Error::io(obj.dir.clone(), "hash", std::io::Error::other("no hasher")))?;
    obj.host
        .store_digests(&obj.dir, &obj.header, std::slice::from_ref(&digest))?;
    obj.host.name_object(&digest, &obj.key)?;
    Ok(digest)
}
