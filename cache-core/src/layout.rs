//! Where things live in a store directory.
//!
//! ```text
//! STORE_DIR/
//!   blockcache-store        marker with the layout version
//!   objects/<key>/          one directory per object (key: 32 hex)
//!     index                 chunk index (append-only; its flock = the filler)
//!     index.snap            bitmap snapshot of the index
//!     data-<data id>        the object's bytes at their own offsets
//!     digests               SHA-256/SHA-512 of a complete object (below)
//!     prefix                SHA-2 state over the completed prefix of an
//!                           incomplete one (`fill::prefix`)
//!     used                  mtime = last use, for LRU eviction
//!     demand/<pid>-<rand>   chunks a following process's readers wait for
//!     wake/<pid>-<rand>     a following process's wake-up socket (the
//!                           filler announces its commits there)
//!   blake3/<64 hex>         alias: contains the key of one complete object
//!                           with that BLAKE3 hash
//!   sha256/<64 hex>         the same by SHA-256 (and sha512/<128 hex>)
//!   tmp/                    objects being created or removed
//! ```
//!
//! An object appears under `objects/` by an atomic rename of a complete
//! directory (index header written and synced, data file sized), so a crash
//! never leaves a half-registered object there. Aliases are written by
//! temp file + rename.
//!
//! **Names are computed, never expected.** Only digests computed from the
//! stored bytes become aliases; a digest a request expects is checked
//! against them and never written anywhere (see [`crate::digest`]).
//!
//! **Same bytes, one data file.** When an object completes and another
//! complete object already has its BLAKE3 root, the new object's data file
//! is replaced (hard link to a temp name, then rename over it) by a hard
//! link to the existing one: both directories name one inode, each keeps
//! its own index. Removing either object removes one link; the bytes stay
//! while any object holds them. Disk usage counts a shared file in equal
//! parts per link. An alias names one of the copies; removing that copy
//! re-points the alias (and hands over the digests) to another complete
//! copy, so every name stays resolvable while any copy exists. The "in
//! use" lock lives on the data file, so while one copy is being read the
//! other cannot be removed either (`rm`/`gc` report it busy): the bytes
//! are the same, and a removal never has to guess whether they are needed.
//! A process that had the replaced copy open keeps reading it (same bytes)
//! until it closes it; then its blocks are freed.
//!
//! **`digests` file** (written atomically once the object completes):
//! magic `b"BCDIGST\x01"` (8), version `1` (u16 LE), entry count (u16 LE),
//! the index's `data_id` (16, binds the file to that data file), then per
//! entry: algorithm (u8: 2 SHA-256, 3 SHA-512), length (u8), value; last
//! the BLAKE3 of all preceding bytes (32). A damaged or mismatched file is
//! ignored (digests can be recomputed from the data), never trusted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::{Algo, Digest};
use crate::error::{Error, Result};
pub(crate) use crate::hash::hex_id;
use crate::index::IndexHeader;

pub(crate) const MARKER: &str = "blockcache-store";
pub(crate) const MARKER_TEXT: &str = "blockcache store layout 1\n";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const ALIASES: &str = "blake3";
pub(crate) const TMP: &str = "tmp";
pub(crate) const USED_FILE: &str = "used";
/// An object's chunk index, in its directory.
pub(crate) const INDEX_FILE: &str = "index";

/// The key of an object while its hash may be unknown: derived from the
/// source identity, its validator and its length, so a new upstream
/// version is a new object (bytes of two versions never mix).
pub fn object_key(identity: &str, validator: &str, len: u64) -> String {
    let mut h = blake3::Hasher::new_derive_key("blockcache 2026-11 object key v1");
    h.update(identity.as_bytes());
    h.update(&[0]);
    h.update(validator.as_bytes());
    h.update(&[0]);
    h.update(&len.to_le_bytes());
    h.finalize().to_hex()[..32].to_string()
}

pub(crate) fn is_key(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(path, "create directory", e))
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(path, "sync directory", e))
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, tmp_dir: &Path, contents: &[u8]) -> Result<()> {
    let tmp: PathBuf = tmp_dir.join(format!(".w-{}", hex_id(&rand::random::<[u8; 8]>())));
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, "write", e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, "rename into place", e)
    })?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Name of the digests file in an object directory.
pub(crate) const DIGESTS_FILE: &str = "digests";
const DIGESTS_MAGIC: [u8; 8] = *b"BCDIGST\x01";
const DIGESTS_VERSION: u16 = 1;

/// Encodes the digests file (see the layout docs): magic, version, count,
/// the object's `data_id` (binds the file to these bytes), entries
/// `(algo code, length, value)`, then BLAKE3 of everything before.
pub(crate) fn encode_digests(data_id: &[u8; 16], digests: &[Digest]) -> Vec<u8> {
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

/// Opens `path` and tries to take its exclusive OS lock: the filler's
/// lock on an index, eviction's on an index and a data file. `None` when
/// another holder has it (in this or another process); the lock lasts as
/// long as the returned file.
pub(crate) fn try_lock_exclusive(path: &Path) -> Result<Option<fs::File>> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, "open for locking", e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(path, "lock", e)),
    }
}

/// Name of the file (next to the index) holding the pid of the process
/// that holds the index lock, so followers can say whose download they
/// follow. Informational only: the lock, not this file, decides who fills.
pub(crate) const FILLER_PID_FILE: &str = "filler.pid";

/// The pid of the process that holds the index lock of the object in
/// `dir`, when recorded and that process still runs.
pub(crate) fn filler_pid(dir: &std::path::Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(FILLER_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Unknown liveness (not Linux) still names the pid: it is informational.
    (crate::platform::process_alive(pid) != Some(false)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let k = object_key("http://x/a", "\"e1\"", 10);
        assert!(is_key(&k));
        assert_ne!(k, object_key("http://x/b", "\"e1\"", 10));
        assert_ne!(k, object_key("http://x/a", "\"e2\"", 10));
        assert_ne!(k, object_key("http://x/a", "\"e1\"", 11));
        // The separator keeps parts from sliding into each other.
        assert_ne!(object_key("ab", "c", 1), object_key("a", "bc", 1));
    }

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
