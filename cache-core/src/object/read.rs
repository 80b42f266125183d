//! Reading: waiting reads, non-waiting reads, streams and an
//! `AsyncRead + AsyncSeek` reader.
//!
//! Every read resolves to [`Bytes`] slices of the data file's memory map:
//! no copy, and memory per reader is bounded by what the caller holds.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

use super::{Object, ObjectShared};
use crate::error::{Error, Result};

/// Withdraws a reader's demands when the read ends or is dropped.
struct DemandGuard<'a> {
    obj: &'a ObjectShared,
    chunks: Vec<u32>,
}

impl Drop for DemandGuard<'_> {
    fn drop(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        {
            let mut st = self.obj.state.lock();
            for &c in &self.chunks {
                if st.demand.remove(c) {
                    self.obj.send_change(super::ChunkChange::Undemanded(c));
                }
            }
        }
        self.obj.publish_remote_demand();
    }
}

/// Counts a live reader for status output.
struct ReaderCount(Arc<ObjectShared>);

impl ReaderCount {
    fn new(obj: Arc<ObjectShared>) -> Self {
        obj.readers.fetch_add(1, Ordering::Relaxed);
        ReaderCount(obj)
    }
}

impl Drop for ReaderCount {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ObjectShared {
    fn check_range(&self, start: u64, end: u64) -> Result<()> {
        if start > end || end > self.header.len {
            return Err(Error::OutOfBounds {
                key: self.key.clone(),
                start,
                end,
                len: self.header.len,
            });
        }
        Ok(())
    }

    /// Chunks covering `start..end` (at least the chunk of `start`, so an
    /// empty read of an empty object still has one chunk to wait for).
    fn chunks_of(&self, start: u64, end: u64) -> Range<u32> {
        let cs = u64::from(self.header.chunk_size);
        let first = (start / cs) as u32;
        let last = if end > start {
            ((end - 1) / cs) as u32
        } else {
            first
        };
        first.min(self.header.chunk_count() - 1)..last.min(self.header.chunk_count() - 1) + 1
    }

    /// Waits until every chunk of `chunks` is complete, demanding the
    /// missing ones (oldest first) while it waits.
    pub(crate) async fn wait_chunks(&self, chunks: Range<u32>) -> Result<()> {
        let mut guard = DemandGuard {
            obj: self,
            chunks: Vec::new(),
        };
        for c in chunks {
            loop {
                let Some(rx) = self.waiter(c)? else { break };
                if !guard.chunks.contains(&c) {
                    {
                        let mut st = self.state.lock();
                        if st.demand.add(c) {
                            self.send_change(super::ChunkChange::Demanded(c));
                        }
                    }
                    guard.chunks.push(c);
                    self.filler_wake.notify_one();
                    self.publish_remote_demand();
                }
                // The demand is queued before the phase is looked at: a
                // fill that pauses meanwhile sees it, or this sees the
                // pause (and asks again after every wake-up).
                self.want_fill().await?;
                // A dropped sender (phase change) just means: look again.
                let _ = rx.await;
            }
        }
        Ok(())
    }

    pub(crate) async fn read_range(&self, start: u64, end: u64) -> Result<Bytes> {
        self.check_range(start, end)?;
        self.wait_chunks(self.chunks_of(start, end)).await?;
        Ok(self.data().bytes(start..end))
    }
}

impl Object {
    /// Reads `len` bytes at `offset`, waiting for (and demanding) the
    /// chunks that are not downloaded yet. There is no hidden time-out:
    /// wrap the future in `tokio::time::timeout` to bound the wait.
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes> {
        let end = offset.checked_add(len).ok_or_else(|| Error::OutOfBounds {
            key: self.shared.key.clone(),
            start: offset,
            end: u64::MAX,
            len: self.len(),
        })?;
        self.shared.read_range(offset, end).await
    }

    /// The last `n` bytes of the object (all of it when it is shorter),
    /// waiting for and demanding them like [`Object::read_at`]. Disk image
    /// formats keep metadata at the end (VHD footers, zip directories);
    /// this reads it first without offset arithmetic that could underflow.
    pub async fn read_tail(&self, n: u64) -> Result<Bytes> {
        let range = self.tail_range(n);
        self.shared.read_range(range.start, range.end).await
    }

    /// The byte range of the last `n` bytes (`len - n .. len`), clamped to
    /// the object: never underflows on a short object.
    pub fn tail_range(&self, n: u64) -> Range<u64> {
        let len = self.len();
        len.saturating_sub(n)..len
    }

    /// Like [`Object::read_at`] but never waits: fails with
    /// [`Error::NotPresent`] when a chunk of the range is missing.
    pub fn try_read_at(&self, offset: u64, len: u64) -> Result<Bytes> {
        let s = &self.shared;
        let end = offset.saturating_add(len);
        s.check_range(offset, end)?;
        let st = s.state.lock();
        if s.chunks_of(offset, end).any(|c| !st.done.contains(c)) {
            return Err(Error::NotPresent {
                key: s.key.clone(),
                start: offset,
                end,
            });
        }
        drop(st);
        Ok(s.data().bytes(offset..end))
    }

    /// The bytes of `range` as a stream of pieces (at most one chunk each),
    /// yielded in order as their chunks complete.
    pub fn stream(&self, range: Range<u64>) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let obj = self.shared.clone();
        let state = (ReaderCount::new(obj), range.start, range.end, false);
        futures::stream::unfold(state, |(rc, pos, end, failed)| async move {
            if failed || pos >= end {
                return None;
            }
            let obj = &rc.0;
            if let Err(e) = obj.check_range(pos, end) {
                return Some((Err(e), (rc, pos, end, true)));
            }
            let cs = u64::from(obj.header.chunk_size);
            let piece_end = ((pos / cs + 1) * cs).min(end);
            match obj.read_range(pos, piece_end).await {
                Ok(b) => Some((Ok(b), (rc, piece_end, end, false))),
                Err(e) => Some((Err(e), (rc, pos, end, true))),
            }
        })
    }

    /// Where `piece`, bytes this object handed out ([`Object::read_at`],
    /// [`Object::stream`], ...), lies in the object's data file: an open
    /// handle of that file and the offset, so a server can `sendfile` the
    /// same bytes from the file instead of copying them out of the map.
    /// `None` when `piece` is not a slice of the current data file's map
    /// (an empty object, bytes of a data file a repair has replaced since,
    /// or other memory).
    ///
    /// The file's bytes at the returned offset are `piece`'s bytes for as
    /// long as the [`FileSpan`] lives: they are bytes of done chunks, which
    /// the store never writes again (the mapping contract in the data
    /// module), and the span keeps that very file open.
    pub fn file_span(&self, piece: &[u8]) -> Option<FileSpan> {
        let data = self.shared.data();
        let offset = data.offset_of(piece)?;
        Some(FileSpan { data, offset })
    }

    /// A reader implementing `AsyncRead + AsyncSeek`, starting at offset 0.
    pub fn reader(&self) -> ObjectReader {
        ObjectReader {
            count: ReaderCount::new(self.shared.clone()),
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
            pending: None,
            seek_to: None,
        }
    }
}

impl Object {
    /// A blocking `std::io::Read + Seek` reader for synchronous code (a
    /// format parser, `std::io::copy`), driving the async reader on
    /// `runtime`. Use it from a plain thread or `spawn_blocking`, never
    /// from inside an async task: blocking there would stall the runtime
    /// (tokio panics to say so).
    ///
    /// ```
    /// use std::io::{Read, Seek, SeekFrom};
    /// use std::sync::Arc;
    /// use cache_core::{testing::MemorySource, FetchOptions, Store};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rt = tokio::runtime::Runtime::new()?;
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    /// let source = Arc::new(MemorySource::new("mem://blocking", bytes.clone()));
    /// let object = rt.block_on(store.fetch(source, FetchOptions::default()))?;
    ///
    /// let mut reader = object.blocking_reader(rt.handle().clone());
    /// reader.seek(SeekFrom::End(-4))?;
    /// let mut tail = Vec::new();
    /// reader.read_to_end(&mut tail)?;
    /// assert_eq!(tail, &bytes[bytes.len() - 4..]);
    /// # Ok(()) }
    /// ```
    pub fn blocking_reader(&self, runtime: tokio::runtime::Handle) -> BlockingObjectReader {
        tokio_util::io::SyncIoBridge::new_with_handle(self.reader(), runtime)
    }
}

/// Where bytes of an object lie in its data file (see
/// [`Object::file_span`]); keeps the file open.
pub struct FileSpan {
    data: Arc<super::DataFile>,
    offset: u64,
}

impl FileSpan {
    /// The offset in the file of the span's first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for FileSpan {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.data.file().as_fd()
    }
}

impl std::fmt::Debug for FileSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpan")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// The blocking reader of [`Object::blocking_reader`]: `std::io::Read +
/// Seek` over an [`ObjectReader`].
pub type BlockingObjectReader = tokio_util::io::SyncIoBridge<ObjectReader>;

/// A sequential reader over an object (see [`Object::reader`]). Reads wait
/// for missing chunks and demand them; seeking is free.
pub struct ObjectReader {
    count: ReaderCount,
    pos: u64,
    /// The piece last read and where it starts in the object.
    buf: Bytes,
    buf_start: u64,
    pending: Option<BoxFuture<'static, Result<Bytes>>>,
    seek_to: Option<u64>,
}

impl ObjectReader {
    fn obj(&self) -> &Arc<ObjectShared> {
        &self.count.0
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let len = this.obj().header.len;
        loop {
            if this.pos >= len || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let buf_end = this.buf_start + this.buf.len() as u64;
            if this.pos >= this.buf_start && this.pos < buf_end {
                let from = (this.pos - this.buf_start) as usize;
                let n = out.remaining().min(this.buf.len() - from);
                out.put_slice(&this.buf[from..from + n]);
                this.pos += n as u64;
                return Poll::Ready(Ok(()));
            }
            let fut = this.pending.get_or_insert_with(|| {
                let obj = this.count.0.clone();
                let pos = this.pos;
                Box::pin(async move {
                    let cs = u64::from(obj.header.chunk_size);
                    let end = ((pos / cs + 1) * cs).min(obj.header.len);
                    obj.read_range(pos, end).await
                })
            });
            let start = this.pos;
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(res) => {
                    this.pending = None;
                    match res {
                        Ok(b) => {
                            this.buf = b;
                            this.buf_start = start;
                        }
                        Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                    }
                }
            }
        }
    }
}

impl AsyncSeek for ObjectReader {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        let len = self.obj().header.len as i128;
        let target = match position {
            io::SeekFrom::Start(n) => n as i128,
            io::SeekFrom::End(d) => len + d as i128,
            io::SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the object",
            ));
        }
        self.seek_to = Some(target.min(u64::MAX as i128) as u64);
        Ok(())
    }

    fn poll_complete(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        if let Some(to) = self.seek_to.take() {
            if to != self.pos {
                // A read in progress was for the old position.
                self.pending = None;
                self.pos = to;
            }
        }
        Poll::Ready(Ok(self.pos))
    }
}
