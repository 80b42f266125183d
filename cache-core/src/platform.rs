//! Everything the store needs from the operating system beyond portable
//! `std`, in one place.
//!
//! The rest of the crate uses only these functions and portable `std`
//! (`File::lock`/`try_lock_shared` for the filler and in-use locks,
//! `memmap2` for reads). A port to another system implements this module
//! and checks the rules below; nothing else in the crate names an OS.
//!
//! | function | Unix | Windows |
//! | --- | --- | --- |
//! | [`pread`], [`pwrite_all`] | `FileExt::read_at` / `write_at` | `FileExt::seek_read` / `seek_write` (they move the file cursor, which the store never uses) |
//! | [`sync_parent`] | `fsync` of the directory | nothing: NTFS journals directory entries |
//! | [`start_writeback`] | `sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux, nothing elsewhere | nothing |
//! | [`disk_usage`] | allocated blocks / hard links | the file length (no allocated size in `std`) |
//! | [`process_alive`] | `/proc/PID` on Linux, unknown elsewhere | unknown |
//! | [`DatagramListener`], [`DatagramSender`] | Unix datagram sockets named in a directory (through `/proc/self/fd` on Linux when the path is too long for a socket address) | none: `bind`/`new` fail with `Unsupported` and callers poll instead |
//!
//! # What a Windows port needs beyond this module
//!
//! The original problem came from Windows ("the process cannot access the
//! file because it is being used by another process"), so these are the
//! rules a port must keep, checked against the store's use of files:
//!
//! * **Share modes.** `std` opens files with `FILE_SHARE_READ |
//!   FILE_SHARE_WRITE | FILE_SHARE_DELETE`, so a follower can read an index
//!   and a data file another process writes. Keep it that way (no
//!   `share_mode(0)` anywhere).
//! * **Locks.** `File::lock` is `LockFileEx` there: mandatory for the locked
//!   range. The filler's exclusive lock is on the *index* file, which
//!   followers read: a port must lock a separate, never-read lock file (or
//!   a byte range past the end of the index) instead.
//! * **Deleting and renaming open or mapped files.** Unix unlinks an object
//!   directory while a reader still maps its data file; Windows refuses to
//!   delete or truncate a mapped file. Eviction already skips objects with
//!   an in-use lock; a port must also retry removals that fail with
//!   `ERROR_SHARING_VIOLATION` later instead of reporting them.
//! * **Hard links** (one data file shared by objects with the same bytes)
//!   work on NTFS; on FAT or network shares the store falls back to
//!   separate copies (the link error is already handled that way).
//! * **mmap** (`memmap2`) works as is; the contract in `data` (bytes of a
//!   complete chunk never change under a handed-out `Bytes`) holds.
//!
//! `cargo check --target x86_64-pc-windows-gnu -p cache-core` is the goal of
//! this module's shape; it needs that target's standard library, which this
//! project's build machines cannot install (no `rustup` downloads), so the
//! check is not part of CI yet.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// Starts writing `file`'s dirty pages to its disk and returns without
/// waiting for them. Durability still comes from `fdatasync` alone (this
/// neither waits nor flushes the disk's cache): it only gets the disk
/// busy with a fill's bytes before the flush that makes them durable asks
/// for them (BENCHMARKS.md, fill at the disk's speed). Where there is no
/// such call it does nothing, and the flushes write everything.
pub(crate) fn start_writeback(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor `file` owns; offset 0
        // and length 0 name the whole file.
        let r =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

/// Positional read: never moves a shared cursor, so readers and the
/// writer's appends need no seeking. Returns the bytes read (0 at the end).
pub(crate) fn pread(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_at(file, buf, off);
    #[cfg(windows)]
    return std::os::windows::fs::FileExt::seek_read(file, buf, off);
}

/// Positional write of all of `buf` at `off`.
pub(crate) fn pwrite_all(file: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::write_at(file, buf, off);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_write(file, buf, off);
        match r {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, so a create or rename in it is
/// durable (a file's own fsync does not cover its directory entry).
#[cfg(unix)]
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Windows cannot open a directory as a `File` without special flags, and
/// NTFS journals directory entries itself; nothing to do there.
#[cfg(not(unix))]
pub(crate) fn sync_parent(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Bytes a file takes on disk, shared out among its hard links: a data
/// file linked from two objects counts half for each, so the sum over
/// objects is the real usage.
pub(crate) fn disk_usage(meta: &Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512 / meta.nlink().max(1)
    }
    #[cfg(not(unix))]
    {
        meta.len()
    }
}

/// Whether process `pid` runs: `Some` where the system can tell cheaply,
/// `None` where it cannot (callers treat that as "unknown", never as a
/// reason to take anything over: locks decide that).
pub(crate) fn process_alive(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(Path::new(&format!("/proc/{pid}")).exists())
    } else {
        None
    }
}

/// A datagram socket bound to a name in a directory, for the wake-ups of
/// `object::wake`: receives what [`DatagramSender::send`] sends to that
/// directory and name. The name is removed when the listener is dropped.
pub(crate) struct DatagramListener {
    #[cfg(unix)]
    sock: tokio::net::UnixDatagram,
    #[cfg(unix)]
    path: std::path::PathBuf,
}

/// Sends datagrams to the listeners of a directory, without ever blocking.
pub(crate) struct DatagramSender {
    #[cfg(unix)]
    sock: std::os::unix::net::UnixDatagram,
}

/// The address of socket `name` in `dir`: its path when that fits a socket
/// address (about 100 bytes), else on Linux the same file reached through
/// the open directory `dir_fd` (`/proc/self/fd/N/name`), which fits
/// whatever the directory's path.
#[cfg(unix)]
fn socket_addr(
    dir: &Path,
    dir_fd: &File,
    name: &str,
) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::unix::net::SocketAddr;
    let full = dir.join(name);
    match SocketAddr::from_pathname(&full) {
        Ok(addr) => Ok(addr),
        Err(e) => {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                let _ = e;
                SocketAddr::from_pathname(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()))
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = dir_fd;
                Err(e)
            }
        }
    }
}

impl DatagramListener {
    /// Binds socket `name` in `dir` (needs a tokio runtime). Fails when
    /// the name exists or the system has no such sockets.
    #[cfg(unix)]
    pub(crate) fn bind(dir: &Path, name: &str) -> io::Result<DatagramListener> {
        let dir_fd = File::open(dir)?;
        let addr = socket_addr(dir, &dir_fd, name)?;
        let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        let path = dir.join(name);
        let sock = sock
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixDatagram::from_std(sock));
        match sock {
            Ok(sock) => Ok(DatagramListener { sock, path }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn bind(_dir: &Path, _name: &str) -> io::Result<DatagramListener> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Waits for the next datagram; returns its length.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        return self.sock.recv(buf).await;
        #[cfg(not(unix))]
        return std::future::pending().await;
    }

    /// The next datagram if one is queued (`WouldBlock` when none is).
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(unix)]
        return self.sock.try_recv(buf);
        #[cfg(not(unix))]
        return Err(io::ErrorKind::WouldBlock.into());
    }
}

impl Drop for DatagramListener {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
    }
}

impl DatagramSender {
    /// An unbound, non-blocking socket to send from.
    #[cfg(unix)]
    pub(crate) fn new() -> io::Result<DatagramSender> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(DatagramSender { sock })
    }

    #[cfg(not(unix))]
    pub(crate) fn new() -> io::Result<DatagramSender> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Sends `buf` to socket `name` in `dir` (`dir_fd` is that directory,
    /// open). Never blocks: a full receiver is `WouldBlock`; a name whose
    /// socket nobody holds any more (its process died) is
    /// `ConnectionRefused`; a name that is gone, `NotFound`.
    #[cfg(unix)]
    pub(crate) fn send(&self, dir: &Path, dir_fd: &File, name: &str, buf: &[u8]) -> io::Result<()> {
        let addr = socket_addr(dir, dir_fd, name)?;
        self.sock.send_to_addr(buf, &addr).map(|_| ())
    }

    #[cfg(not(unix))]
    pub(crate) fn send(
        &self,
        _dir: &Path,
        _dir_fd: &File,
        _name: &str,
        _buf: &[u8],
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn writeback_reports_what_the_system_refuses() {
        // A pipe has no pages to write back: the call's error comes back.
        let (reader, _writer) = std::io::pipe().expect("pipe");
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        let e = super::start_writeback(&file).expect_err("a pipe");
        assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{e}");
    }
}
