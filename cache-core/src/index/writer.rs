//! The writer of an index: the one process that fills the object.

use super::*;

/// The exclusive writer of an index (the filling process).
///
/// Exclusivity is the caller's job (the object's fill lock, invariant 3);
/// two writers on one index would interleave records.
pub struct IndexWriter {
    file: File,
    path: PathBuf,
    data_id: [u8; 16],
    header_sum: [u8; 32],
    header_len: u64,
    chunk_count: u32,
    /// End of the valid, durable log: where the next batch goes.
    log_len: u64,
    /// Checksum bytes of the last record (binds snapshots to the log).
    last_sum: [u8; 8],
    /// BLAKE3 of every record in the log, all written or verified by this
    /// writer; the records digest of its snapshots. `None` when opened on
    /// a snapshot (the records under it were not read): its snapshots then
    /// carry no digest, and the next `open_replayed` checks every record.
    digest: Option<blake3::Hasher>,
    /// Set after a failed write or sync. After an fsync error the kernel may
    /// have dropped the dirty pages and a retry could falsely succeed, so the
    /// only safe continuation is to reopen (which re-validates the log).
    poisoned: bool,
}

impl IndexWriter {
    /// Creates a new index at `path` (failing if it exists), writes the
    /// header and makes it durable, directory entry included, so the object
    /// is registered before any chunk is fetched (the iroh-blobs #254
    /// lesson). A stale snapshot left at `<path>.snap` is removed.
    pub fn create(path: &Path, header: &IndexHeader) -> Result<IndexWriter, IndexError> {
        format::check_header(header).map_err(|m| invalid_input(path, "create", m))?;
        let bytes = format::encode_header(header);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err(path, "create"))?;
        pwrite_all(&file, &bytes, 0).map_err(io_err(path, "write header"))?;
        file.sync_all().map_err(io_err(path, "fsync header"))?;
        sync_parent(path).map_err(io_err(path, "fsync directory"))?;
        // Binding makes a stale snapshot harmless; removing it saves a warning.
        let snap = snapshot::snap_path(path);
        match std::fs::remove_file(&snap) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&snap, "remove stale snapshot")(e)),
        }
        let mut header_sum = [0u8; 32];
        header_sum.copy_from_slice(&bytes[bytes.len() - 32..]);
        Ok(IndexWriter {
            file,
            path: path.to_path_buf(),
            data_id: header.data_id,
            header_sum,
            header_len: bytes.len() as u64,
            chunk_count: header.chunk_count(),
            log_len: bytes.len() as u64,
            last_sum: [0; 8],
            digest: Some(blake3::Hasher::new()),
            poisoned: false,
        })
    }

    /// Opens an existing index for writing: validates the header, restores
    /// the state (snapshot + replay), and truncates a torn or garbled tail so
    /// new records follow the valid prefix directly.
    pub fn open(
        path: &Path,
    ) -> Result<(IndexWriter, IndexHeader, IndexState, Recovery), IndexError> {
        let file = open_rw(path)?;
        let head = read_head(&file, path)?;
        let loaded = load_state(&file, path, &head, true)?;
        let end = loaded.end;
        let dropped_bytes = cut_tail(&file, path, &end)?;
        if loaded.snapshot_exists && !loaded.snapshot_used {
            remove_snapshot(path)?;
        }
        let recovery = Recovery {
            records: (end.valid_end - head.header_len) / RECORD_LEN as u64,
            dropped_bytes,
            snapshot_used: loaded.snapshot_used,
        };
        Ok((
            Self::at_end(file, path, &head, &end, loaded.digest),
            head.header,
            loaded.state,
            recovery,
        ))
    }

    /// Opens an existing index for writing with one read of the whole log
    /// that yields the state *and* every chunk's chaining value, so the two
    /// cannot disagree: a chunk whose record is lost (in a region a
    /// snapshot covers, say) is not done. The records a snapshot with a
    /// records digest covers are checked by that digest (one bulk hash),
    /// the others one by one. The log is cut after its valid prefix (as
    /// [`IndexWriter::open`] does), durably; a snapshot that no longer
    /// matches the cut log, or disagrees with the records under it, is
    /// removed. For the filler, which needs the CVs to compute the root.
    pub fn open_replayed(
        path: &Path,
    ) -> Result<(IndexWriter, IndexHeader, Replayed, Recovery), IndexError> {
        let file = open_rw(path)?;
        let head = read_head(&file, path)?;
        let (replayed, end, from) = reader::load_replayed(&file, path, &head)?;
        let dropped_bytes = cut_tail(&file, path, &end)?;
        if from.snapshot_bad
            || (!from.snapshot_used && matches!(try_snapshot(&file, path, &head), (None, true)))
        {
            remove_snapshot(path)?;
        }
        let recovery = Recovery {
            records: (end.valid_end - head.header_len) / RECORD_LEN as u64,
            dropped_bytes,
            snapshot_used: from.snapshot_used,
        };
        let writer = Self::at_end(file, path, &head, &end, Some(from.digest));
        Ok((writer, head.header, replayed, recovery))
    }

    fn at_end(
        file: File,
        path: &Path,
        head: &Head,
        end: &ReplayEnd,
        digest: Option<blake3::Hasher>,
    ) -> IndexWriter {
        IndexWriter {
            file,
            path: path.to_path_buf(),
            data_id: head.header.data_id,
            header_sum: head.header_sum,
            header_len: head.header_len,
            chunk_count: head.chunk_count,
            log_len: end.valid_end,
            last_sum: end.last_sum,
            digest,
            poisoned: false,
        }
    }

    fn check_usable(&self, op: &'static str) -> Result<(), IndexError> {
        if self.poisoned {
            return Err(invalid_input(
                &self.path,
                op,
                "an earlier write or sync failed; reopen the index".into(),
            ));
        }
        Ok(())
    }

    /// Appends a batch of records with one write and one `fdatasync`. The
    /// caller batches (and fdatasyncs chunk data before); never call this
    /// once per chunk on a hot path. Records naming a chunk outside the
    /// object are refused before anything is written: on disk they would end
    /// the valid prefix and drop every later record.
    pub fn append(&mut self, records: &[Record]) -> Result<(), IndexError> {
        self.check_usable("append")?;
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            if let Record::Chunk { index, .. } | Record::Clear { index } = *r {
                if index >= self.chunk_count {
                    return Err(invalid_input(
                        &self.path,
                        "append",
                        format!(
                            "record names chunk {index}, the object has {}",
                            self.chunk_count
                        ),
                    ));
                }
            }
            buf.extend_from_slice(&format::encode_record(r, &self.data_id));
        }
        // Positional write at our own notion of the end: a failed earlier
        // attempt can never leave garbage between valid records.
        let res = pwrite_all(&self.file, &buf, self.log_len)
            .map_err(io_err(&self.path, "append records"))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(io_err(&self.path, "fdatasync records"))
            });
        if let Err(e) = res {
            self.poisoned = true;
            return Err(e);
        }
        self.log_len += buf.len() as u64;
        self.last_sum = format::record_checksum(&buf[buf.len() - RECORD_LEN..]);
        if let Some(d) = &mut self.digest {
            d.update(&buf);
        }
        Ok(())
    }

    /// Writes `<path>.snap` covering the log as it is now. `state` must be
    /// the state after every record appended so far (what open returned,
    /// with each appended record applied). A state that cannot be right
    /// (chunk beyond the object, root with chunks missing) is refused.
    pub fn snapshot(&mut self, state: &IndexState) -> Result<(), IndexError> {
        self.check_usable("snapshot")?;
        if state.done.max().is_some_and(|m| m >= self.chunk_count)
            || (state.root.is_some() && state.done.len() != u64::from(self.chunk_count))
        {
            return Err(invalid_input(
                &self.path,
                "snapshot",
                "state is inconsistent with the index".into(),
            ));
        }
        let binding = snapshot::Binding {
            header_sum: self.header_sum,
            data_id: self.data_id,
            header_len: self.header_len,
            chunk_count: self.chunk_count,
        };
        let digest = self.digest.as_ref().map(|d| *d.finalize().as_bytes());
        let bytes = snapshot::encode(&binding, self.log_len, self.last_sum, state, digest);
        snapshot::store(&self.path, &bytes).map_err(|(op, path, source)| IndexError::Io {
            path,
            op,
            source,
        })
    }

    /// Length in bytes of the valid log (header included).
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Number of chunks of the object.
    pub fn chunk_count(&self) -> u32 {
        self.chunk_count
    }
}

fn open_rw(path: &Path) -> Result<File, IndexError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path, "open"))
}

/// Cuts a torn or garbled tail after the valid prefix, durably. Returns
/// the bytes dropped.
fn cut_tail(file: &File, path: &Path, end: &ReplayEnd) -> Result<u64, IndexError> {
    let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
    let dropped_bytes = file_len.saturating_sub(end.valid_end);
    if dropped_bytes > 0 {
        tracing::warn!(
            index = %path.display(),
            dropped_bytes,
            valid_len = end.valid_end,
            "truncating torn or garbled chunk index tail"
        );
        file.set_len(end.valid_end)
            .map_err(io_err(path, "truncate torn tail"))?;
        file.sync_all()
            .map_err(io_err(path, "fsync after truncate"))?;
    }
    Ok(dropped_bytes)
}

/// Removes an untrusted snapshot, so it is not picked up later by chance
/// (e.g. once the log regrows past its covered length).
fn remove_snapshot(path: &Path) -> Result<(), IndexError> {
    let snap = snapshot::snap_path(path);
    match std::fs::remove_file(&snap) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&snap, "remove untrusted snapshot")(e)),
    }
}
