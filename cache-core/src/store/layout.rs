//! Where things live in a store directory.
//!
//! ```text
//! STORE_DIR/
//!   blockcache-store        marker with the layout version
//!   objects/<key>/          one directory per object (key: 32 hex)
//!     index                 chunk index (append-only; its flock = the filler)
//!     index.snap            bitmap snapshot of the index
//!     data-<data id>        the object's bytes at their own offsets
//!     used                  mtime = last use, for LRU eviction
//!   blake3/<64 hex>         alias: contains the key of the object with
//!                           that BLAKE3 hash (or that expected hash)
//!   tmp/                    objects being created or removed
//! ```
//!
//! An object appears under `objects/` by an atomic rename of a complete
//! directory (index header written and synced, data file sized), so a crash
//! never leaves a half-registered object there. Aliases are written by
//! temp file + rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) const MARKER: &str = "blockcache-store";
pub(crate) const MARKER_TEXT: &str = "blockcache store layout 1\n";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const ALIASES: &str = "blake3";
pub(crate) const TMP: &str = "tmp";
pub(crate) const USED_FILE: &str = "used";

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

pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
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

pub(crate) fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}
