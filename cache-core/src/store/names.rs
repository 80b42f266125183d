//! Names of complete objects: their BLAKE3 root and their other digests
//! (SHA-256, SHA-512), each an alias file `<algo>/<hex>` holding the key of
//! *one* complete object with those bytes; and the sharing of one data
//! file between objects with the same bytes.
//!
//! Rules (design §7):
//!
//! * Only computed digests become names. An expected digest is a property
//!   of one request and is never written here.
//! * Two objects with the same BLAKE3 root hold the same bytes, so when an
//!   object completes and another complete object already has its root,
//!   the new object's data file is replaced by a hard link to the existing
//!   one (the content is stored once; see [`crate::layout`]).
//! * A name stays resolvable while any complete object with those bytes
//!   exists: removing the object an alias points to re-points the alias to
//!   another object with the same root (and hands it the removed object's
//!   digests), and an alias whose object vanished (a crash mid-removal) is
//!   repaired when read.

use std::fs;
use std::path::Path;

use super::{list_names, StoreShared};
use crate::digest::{Algo, Digest};
use crate::error::{Error, Result};
use crate::index::{IndexHeader, IndexReader};
use crate::layout::*;

/// Directory of the aliases of `algo`.
pub(crate) fn alias_dir(algo: Algo) -> &'static str {
    match algo {
        Algo::Blake3 => ALIASES,
        Algo::Sha256 => "sha256",
        Algo::Sha512 => "sha512",
    }
}

impl StoreShared {
    fn alias_path(&self, algo: Algo, hex: &str) -> std::path::PathBuf {
        self.dir.join(alias_dir(algo)).join(hex)
    }

    /// The key an alias names, when the alias exists and its object is
    /// still there with that name. A stale alias (its object vanished, or
    /// an older build wrote an expected hash as an alias) is re-pointed to
    /// another complete object with that name, if there is one.
    pub(crate) fn read_alias(&self, algo: Algo, hex: &str) -> Result<Option<String>> {
        let path = self.alias_path(algo, hex);
        let key = match fs::read_to_string(&path) {
            Ok(k) if is_key(k.trim()) => k.trim().to_owned(),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "read alias", e)),
        };
        let Ok(digest) = Digest::from_hex(algo, hex) else {
            return Ok(None);
        };
        if self.has_name(&key, &digest) {
            return Ok(Some(key));
        }
        let _ = fs::remove_file(&path);
        let other = self.find_complete(&digest, &key)?;
        if let Some((other, _)) = &other {
            self.write_alias(algo, hex, other)?;
        }
        Ok(other.map(|(k, _)| k))
    }

    /// Points the alias `<algo>/<hex>` at `key`, unless it already names a
    /// live object (the first complete copy keeps the name).
    pub(crate) fn name_object(&self, digest: &Digest, key: &str) -> Result<()> {
        let hex = digest.hex();
        match self.read_alias(digest.algo, &hex)? {
            Some(_) => Ok(()),
            None => self.write_alias(digest.algo, &hex, key),
        }
    }

    fn write_alias(&self, algo: Algo, hex: &str, key: &str) -> Result<()> {
        let dir = self.dir.join(alias_dir(algo));
        create_dir(&dir)?;
        write_atomic(&dir.join(hex), &self.dir.join(TMP), key.as_bytes())
    }

    /// Removes the alias of `digest` if it names `key`; returns whether it
    /// did.
    pub(crate) fn remove_alias(&self, digest: &Digest, key: &str) -> bool {
        let path = self.alias_path(digest.algo, &digest.hex());
        if fs::read_to_string(&path).is_ok_and(|k| k.trim() == key) {
            return fs::remove_file(path).is_ok();
        }
        false
    }

    /// Writes the digests file of an object: `digests` replace the stored
    /// ones of their algorithms, others are kept.
    pub(crate) fn store_digests(
        &self,
        dir: &Path,
        header: &IndexHeader,
        digests: &[Digest],
    ) -> Result<()> {
        let mut all = read_digests(dir, header);
        for d in digests.iter().filter(|d| d.algo != Algo::Blake3) {
            all.retain(|a| a.algo != d.algo);
            all.push(d.clone());
        }
        all.sort_by_key(|d| d.algo);
        write_atomic(
            &dir.join(DIGESTS_FILE),
            &self.dir.join(TMP),
            &encode_digests(&header.data_id, &all),
        )
    }

    /// Whether object `key` still carries the name `digest`: its root (or
    /// stored digest) is that value. An object whose damaged chunks were
    /// cleared (incomplete until repaired) keeps its names, except a BLAKE3
    /// an older build recorded as the request's expectation. An object
    /// whose index cannot be read counts as having it, so opening it
    /// reports the damage rather than "not found".
    fn has_name(&self, key: &str, digest: &Digest) -> bool {
        if let Some(obj) = self.live(key) {
            let root = obj.state.lock().root;
            if let (Algo::Blake3, Some(root)) = (digest.algo, root) {
                return root[..] == digest.bytes[..];
            }
        }
        let dir = self.dir.join(OBJECTS).join(key);
        let Ok((_, header, state)) = IndexReader::open(&dir.join(INDEX_FILE)) else {
            return dir.join(INDEX_FILE).exists();
        };
        match (digest.algo, state.root) {
            (Algo::Blake3, Some(root)) => root[..] == digest.bytes[..],
            (Algo::Blake3, None) => header.expected.is_none_or(|e| e[..] != digest.bytes[..]),
            _ => read_digests(&dir, &header).contains(digest),
        }
    }

    fn names_match(dir: &Path, header: &IndexHeader, root: Option<[u8; 32]>, d: &Digest) -> bool {
        match (root, d.algo) {
            (None, _) => false,
            (Some(root), Algo::Blake3) => root[..] == d.bytes[..],
            (Some(_), _) => read_digests(dir, header).contains(d),
        }
    }

    /// A complete object other than `except` that has `digest` (by its
    /// BLAKE3 root, or its stored digests): (key, root).
    fn find_complete(&self, digest: &Digest, except: &str) -> Result<Option<(String, [u8; 32])>> {
        for key in list_names(&self.dir.join(OBJECTS))? {
            if key == except || !is_key(&key) {
                continue;
            }
            let dir = self.dir.join(OBJECTS).join(&key);
            let Ok((_, header, state)) = IndexReader::open(&dir.join(INDEX_FILE)) else {
                continue;
            };
            if let (true, Some(root)) = (
                Self::names_match(&dir, &header, state.root, digest),
                state.root,
            ) {
                return Ok(Some((key, root)));
            }
        }
        Ok(None)
    }

    /// After object `key` (root `root`, digests `digests`) was removed:
    /// every name that pointed at it moves to another complete object with
    /// the same bytes, which also inherits the digests.
    pub(crate) fn rehome_names(&self, key: &str, root: [u8; 32], digests: &[Digest]) -> Result<()> {
        let by_root = Digest {
            algo: Algo::Blake3,
            bytes: root.to_vec(),
        };
        let Some((other, _)) = self.find_complete(&by_root, key)? else {
            return Ok(());
        };
        let dir = self.dir.join(OBJECTS).join(&other);
        if let Ok((_, header, _)) = IndexReader::open(&dir.join(INDEX_FILE)) {
            self.store_digests(&dir, &header, digests)?;
        }
        for d in std::iter::once(&by_root).chain(digests) {
            self.name_object(d, &other)?;
        }
        Ok(())
    }

    /// Object `key` just completed with `root`: if another complete object
    /// has the same root, make `key`'s data file a hard link to that one's
    /// (same bytes: stored once). Best effort: on any failure the object
    /// keeps its own copy, which is just as correct.
    pub(crate) fn share_data(&self, key: &str, header: &IndexHeader, root: &blake3::Hash) {
        let digest = Digest::blake3(root);
        let other = match self.read_alias(Algo::Blake3, &digest.hex()) {
            Ok(Some(k)) if k != key => k,
            _ => return,
        };
        let other_dir = self.dir.join(OBJECTS).join(&other);
        let Ok((_, other_header, state)) = IndexReader::open(&other_dir.join(INDEX_FILE)) else {
            return;
        };
        if state.root != Some(*root.as_bytes()) || other_header.len != header.len {
            return;
        }
        let from = other_dir.join(other_header.data_file_name());
        let to = self
            .dir
            .join(OBJECTS)
            .join(key)
            .join(header.data_file_name());
        let tmp = self
            .dir
            .join(TMP)
            .join(format!(".link-{}", hex_id(&rand::random::<[u8; 8]>())));
        let linked = fs::hard_link(&from, &tmp)
            .and_then(|()| fs::rename(&tmp, &to))
            .map_err(|e| Error::io(&to, "share data file", e))
            .and_then(|()| sync_dir(to.parent().unwrap_or(&self.dir)));
        match linked {
            Ok(()) => tracing::info!(object = %key, with = %other, "same bytes: data file shared"),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                tracing::info!(object = %key, "data file not shared: {e}");
            }
        }
    }
}
