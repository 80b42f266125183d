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
//!   one (the content is stored once; see [`super::layout`]).
//! * A name stays resolvable while any complete object with those bytes
//!   exists: removing the object an alias points to re-points the alias to
//!   another object with the same root (and hands it the removed object's
//!   digests), and an alias whose object vanished (a crash mid-removal) is
//!   repaired when read.

use std::fs;
use std::path::Path;

use super::layout::*;
use super::{list_names, StoreShared, INDEX_FILE};
use crate::digest::{Algo, Digest};
use crate::error::{Error, Result};
use crate::index::{IndexHeader, IndexReader};

/// Name of the digests file in an object directory.
pub(crate) const DIGESTS_FILE: &str = "digests";
const DIGESTS_MAGIC: [u8; 8] = *b"BCDIGST\x01";
const DIGESTS_VERSION: u16 = 1;

/// Directory of the aliases of `algo`.
pub(crate) fn alias_dir(algo: Algo) -> &'static str {
    match algo {
        Algo::Blake3 => ALIASES,
        Algo::Sha256 => "sha256",
        Algo::Sha512 => "sha512",
    }
}

/// Encodes the digests file (see the layout docs): magic, version, count,
/// the object's `data_id` (binds the file to these bytes), entries
/// `(algo code, length, value)`, then BLAKE3 of everything before.
fn encode_digests(data_id: &[u8; 16], digests: &[Digest]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + digests.len() * 66);
    b.extend_from_slice(&DIGESTS_MAGIC);
    b.extend_from_slice(&DIGESTS_VERSION.to_le_bytes());
    b.extend_from_slice(&(digests.len() as u16).to_le_bytes());
    b.extend_from_slice(data_id);
    for d in digests {
        b.push(d.algo.code());
        b.push(d.bytes.len() as u8);
        b.extend_from_slice(&d.bytes);
    }
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

/// Decodes a digests file; `None` when it is damaged, of another format
/// version or bound to another data file (digests are recomputable, so a
/// bad file is ignored, never trusted).
pub(crate) fn decode_digests(b: &[u8], data_id: &[u8; 16]) -> Option<Vec<Digest>> {
    if b.len() < 28 + 32 || b[..8] != DIGESTS_MAGIC {
        return None;
    }
    let (body, sum) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes()[..] != sum[..] {
        return None;
    }
    if u16::from_le_bytes([b[8], b[9]]) != DIGESTS_VERSION || b[12..28] != data_id[..] {
        return None;
    }
    let count = u16::from_le_bytes([b[10], b[11]]) as usize;
    let mut out = Vec::with_capacity(count);
    let mut at = 28;
    for _ in 0..count {
        let (&code, &len) = (body.get(at)?, body.get(at + 1)?);
        let algo = Algo::from_code(code)?;
        if usize::from(len) != algo.output_len() {
            return None;
        }
        let bytes = body.get(at + 2..at + 2 + usize::from(len))?.to_vec();
        out.push(Digest { algo, bytes });
        at += 2 + usize::from(len);
    }
    (at == body.len()).then_some(out)
}

/// The digests stored for the object in `dir` (empty when none or damaged).
pub(crate) fn read_digests(dir: &Path, header: &IndexHeader) -> Vec<Digest> {
    let path = dir.join(DIGESTS_FILE);
    match fs::read(&path) {
        Ok(b) => decode_digests(&b, &header.data_id).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "ignoring a damaged digests file");
            Vec::new()
        }),
        Err(_) => Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_file_round_trip_and_rejects_damage() {
        let id = [9u8; 16];
        let d = vec![
            Digest::from_hex(Algo::Sha256, &"ab".repeat(32)).unwrap(),
            Digest::from_hex(Algo::Sha512, &"cd".repeat(64)).unwrap(),
        ];
        let b = encode_digests(&id, &d);
        assert_eq!(decode_digests(&b, &id), Some(d));
        assert_eq!(decode_digests(&b, &[8u8; 16]), None, "other data file");
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 1;
            assert_eq!(decode_digests(&x, &id), None, "flip at {i}");
        }
        assert_eq!(decode_digests(&b[..b.len() - 1], &id), None);
        assert_eq!(decode_digests(&encode_digests(&id, &[]), &id), Some(vec![]));
    }
}
