//! Writing a complete object out to a file: reflink (FICLONE) when the
//! file system can share the blocks, else a copy (copy_file_range).

use std::fs::File;
use std::path::Path;

use crate::Failure;

/// `_IOW(0x94, 9, int)`: share the source file's blocks (btrfs, XFS, ...).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How the object got to its destination.
#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    Reflink,
    Copy,
}

/// Writes `data` (a complete object's data file of `len` bytes) to `dest`,
/// through a temporary file in the destination directory and a rename.
pub fn write_out(data: &Path, len: u64, dest: &Path) -> Result<Method, Failure> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let src = File::open(data).map_err(|e| Failure::io(data.display(), e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".blockcache-")
        .tempfile_in(&dir)
        .map_err(|e| Failure::io(format!("{}: create temporary file", dir.display()), e))?;
    let method = if reflink(&src, tmp.as_file()) {
        Method::Reflink
    } else {
        let mut from = &src;
        let mut to = tmp.as_file();
        std::io::copy(&mut from, &mut to).map_err(|e| Failure::io(dest.display(), e))?;
        Method::Copy
    };
    tmp.as_file()
        .set_len(len)
        .map_err(|e| Failure::io(dest.display(), e))?;
    tmp.persist(dest)
        .map_err(|e| Failure::io(dest.display(), e.error))?;
    Ok(method)
}

fn reflink(src: &File, dest: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call; the
    // ioctl takes the source descriptor by value and touches no memory.
    let rc = unsafe { libc::ioctl(dest.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    rc == 0
}
