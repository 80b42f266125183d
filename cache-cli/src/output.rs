//! Writing a complete object out to a file: a reflink when the file system
//! can share the blocks (btrfs, XFS, APFS, ReFS), else a copy — through the
//! `reflink-copy` crate, which knows each system's call.

use std::path::Path;

use crate::Failure;

/// How the object got to its destination.
#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    Reflink,
    Copy,
}

/// Writes `data` (a complete object's data file of `len` bytes) to `dest`.
///
/// The bytes go to a new file in a private temporary directory beside
/// `dest` and are renamed over it only when complete, so `dest` is never
/// seen half-written and an old `dest` survives a failed copy.
pub fn write_out(data: &Path, len: u64, dest: &Path) -> Result<Method, Failure> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".blockcache-")
        .tempdir_in(&dir)
        .map_err(|e| Failure::io(format!("{}: create temporary directory", dir.display()), e))?;
    let tmp = staging.path().join("object");
    let method = match reflink_copy::reflink_or_copy(data, &tmp) {
        Ok(None) => Method::Reflink,
        Ok(Some(_copied)) => Method::Copy,
        Err(e) => return Err(Failure::io(dest.display(), e)),
    };
    // The data file may be longer than the object (its last chunk is
    // allocated whole); the copy is cut to the object's length.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)
        .and_then(|f| f.set_len(len))
        .map_err(|e| Failure::io(dest.display(), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Failure::io(dest.display(), e))?;
    Ok(method)
}
