//! Reading an index another process writes, and full replays.

use super::*;

/// A read-only follower of an index another process writes. It never writes
/// or truncates anything, not even an untrusted snapshot.
pub struct IndexReader {
    file: File,
    path: PathBuf,
    data_id: [u8; 16],
    chunk_count: u32,
    /// End of the records already handed out.
    pos: u64,
}

impl IndexReader {
    /// Opens an index read-only and returns its current state (snapshot +
    /// replay, with the same rules as the writer).
    pub fn open(path: &Path) -> Result<(IndexReader, IndexHeader, IndexState), IndexError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let head = read_head(&file, path)?;
        let loaded = load_state(&file, path, &head, false)?;
        let reader = IndexReader {
            file,
            path: path.to_path_buf(),
            data_id: head.header.data_id,
            chunk_count: head.chunk_count,
            pos: loaded.end.valid_end,
        };
        Ok((reader, head.header, loaded.state))
    }

    /// The valid records appended since the last call (or since open). An
    /// incomplete or garbled record at the end may be a write in progress:
    /// it stops the batch without error and is read again next time. Apply
    /// the records in order with [`IndexState::apply`].
    pub fn poll(&mut self) -> Result<Vec<Record>, IndexError> {
        let mut out = Vec::new();
        let data_id = self.data_id;
        let end = replay(
            &self.file,
            &self.path,
            &data_id,
            self.chunk_count,
            self.pos,
            None,
            |r| out.push(*r),
        )?;
        self.pos = end.valid_end;
        Ok(out)
    }

    /// Number of chunks of the object.
    pub fn chunk_count(&self) -> u32 {
        self.chunk_count
    }
}

/// What one replay of a log says: the state and each chunk's chaining
/// value. A chunk is done exactly when it has a CV here (both come from the
/// same records), so a done chunk always has a trusted hash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replayed {
    /// Done chunks and root after the replay.
    pub state: IndexState,
    /// Latest CV per chunk; `None`: not complete.
    pub cvs: Vec<Option<[u8; 32]>>,
}

/// How [`load_replayed`] read the log.
pub(super) struct ReplayedFrom {
    /// A snapshot's records digest vouched for the records it covers, so
    /// their checksums were not checked one by one.
    pub snapshot_used: bool,
    /// A snapshot that seemed to fit the log disagreed with the records
    /// under it (digest or state): it must not be used again.
    pub snapshot_bad: bool,
    /// BLAKE3 of every valid record of the log (what the next snapshot's
    /// records digest continues from).
    pub digest: blake3::Hasher,
}

fn apply_cv(cvs: &mut [Option<[u8; 32]>], r: &Record) {
    // decode_record only yields indexes < chunk_count; get_mut keeps that
    // a non-panicking fact rather than an assumption.
    match *r {
        Record::Chunk { index, cv } => {
            if let Some(slot) = cvs.get_mut(index as usize) {
                *slot = Some(cv);
            }
        }
        Record::Clear { index } => {
            if let Some(slot) = cvs.get_mut(index as usize) {
                *slot = None;
            }
        }
        Record::Root { .. } => {}
    }
}

/// Reads the whole log of `file` into state and CVs. With a trusted
/// snapshot that carries a records digest, the records it covers are read
/// in bulk and hashed once instead of checking each record's checksum
/// (one BLAKE3 call per 48-byte record costs ~15x a bulk hash of the same
/// bytes);
/// the records after it are checked one by one as always. If the covered
/// records do not hash to the digest, or do not give the snapshot's
/// state, the whole log is replayed the slow way.
pub(super) fn load_replayed(
    file: &File,
    path: &Path,
    head: &Head,
) -> Result<(Replayed, ReplayEnd, ReplayedFrom), IndexError> {
    let n = head.chunk_count as usize;
    let mut cvs: Vec<Option<[u8; 32]>> = Vec::new();
    cvs.try_reserve_exact(n).map_err(|e| {
        io_err(path, "allocate chunk CV table")(io::Error::new(
            io::ErrorKind::OutOfMemory,
            e.to_string(),
        ))
    })?;
    cvs.resize(n, None);
    let cc = head.chunk_count;
    let mut snapshot_bad = false;
    let snap = try_snapshot(file, path, head).0;
    if let Some(snap) = &snap {
        if let Some(want) = snap.records_digest {
            let mut digest = blake3::Hasher::new();
            if replay_under_snapshot(file, path, head, snap, want, &mut cvs, &mut digest)? {
                let mut state = snap.state.clone();
                let end = replay(
                    file,
                    path,
                    &head.header.data_id,
                    cc,
                    snap.covered,
                    Some(&mut digest),
                    |r| {
                        state.apply(r, cc);
                        apply_cv(&mut cvs, r);
                    },
                )?;
                let last_sum = if end.valid_end > snap.covered {
                    end.last_sum
                } else {
                    snap.last_sum
                };
                let end = ReplayEnd {
                    valid_end: end.valid_end,
                    last_sum,
                };
                let from = ReplayedFrom {
                    snapshot_used: true,
                    snapshot_bad: false,
                    digest,
                };
                return Ok((Replayed { state, cvs }, end, from));
            }
            tracing::warn!(
                index = %path.display(),
                "chunk index snapshot disagrees with the records it covers; replaying them all"
            );
            snapshot_bad = true;
            cvs.fill(None);
        }
    }
    // Every record checked one by one. A snapshot that fits the log (one
    // without a digest, or a digest one already found wrong) is checked on
    // the way: the state after the records it covers must be its state.
    // One that says otherwise goes, or plain opens would go on trusting
    // what this replay has just shown false.
    let mut under = snap.as_ref().map(|s| {
        let records = s.covered.saturating_sub(head.header_len) / RECORD_LEN as u64;
        (records, &s.state)
    });
    let mut state = IndexState::default();
    if let Some((0, want)) = under {
        snapshot_bad |= *want != state;
        under = None;
    }
    let mut seen = 0u64;
    let mut digest = blake3::Hasher::new();
    let end = replay(
        file,
        path,
        &head.header.data_id,
        cc,
        head.header_len,
        Some(&mut digest),
        |r| {
            state.apply(r, cc);
            apply_cv(&mut cvs, r);
            seen += 1;
            if let Some((records, want)) = under {
                if seen == records {
                    snapshot_bad |= *want != state;
                    under = None;
                }
            }
        },
    )?;
    // The log ended (or went bad) before the snapshot's records did.
    snapshot_bad |= under.is_some();
    let from = ReplayedFrom {
        snapshot_used: false,
        snapshot_bad,
        digest,
    };
    Ok((Replayed { state, cvs }, end, from))
}

/// Reads the CVs of the records a snapshot covers (from the end of the
/// header to `snap.covered`) into `cvs` without checking the records'
/// checksums, hashing their bytes into `digest` on the way. True when they
/// hash to `want` and give the snapshot's state (bitmap and root); false
/// otherwise (then `cvs` and `digest` hold garbage).
///
/// The done set is not rebuilt as a roaring bitmap record by record (a
/// million inserts cost about as much as the hashing): a chunk is done exactly
/// when it has a CV, so it is tracked as plain bits and a count, the root
/// by the rules of [`IndexState::apply`], and the result compared with the
/// snapshot's.
fn replay_under_snapshot(
    file: &File,
    path: &Path,
    head: &Head,
    snap: &snapshot::Snapshot,
    want: [u8; 32],
    cvs: &mut [Option<[u8; 32]>],
    digest: &mut blake3::Hasher,
) -> Result<bool, IndexError> {
    let cc = head.chunk_count;
    let mut done = 0u64;
    let mut root = None;
    // The done set as plain bits (128 KiB at 1 Mi chunks, cache-resident)
    // to compare with the snapshot's at the end.
    let mut bits = vec![0u64; (cc as usize).div_ceil(64)];
    // Bigger than the replay buffer: fewer reads, and BLAKE3 hashes a big
    // input many chunks at a time.
    let mut buf = vec![0u8; REPLAY_BUF * 16];
    let mut pos = head.header_len;
    while pos < snap.covered {
        let want_len = (snap.covered - pos).min(buf.len() as u64) as usize;
        let n =
            read_full_at(file, &mut buf[..want_len], pos).map_err(io_err(path, "read records"))?;
        if n < want_len {
            return Ok(false); // shorter than the snapshot says
        }
        let bytes = &buf[..n];
        digest.update(bytes);
        for raw in bytes.chunks_exact(RECORD_LEN) {
            // Indexes are < chunk_count (decode checks), so every slot exists.
            // A chunk record sets its chunk (with its CV), a clear unsets
            // it; both end any root, as in `IndexState::apply`.
            let (index, cv) = match format::decode_record_unchecked(raw, cc) {
                Some(Record::Chunk { index, cv }) => (index, Some(cv)),
                Some(Record::Clear { index }) => (index, None),
                Some(Record::Root { hash }) => {
                    if done == u64::from(cc) {
                        root = Some(hash);
                    }
                    continue;
                }
                None => return Ok(false),
            };
            let (Some(slot), Some(word)) = (
                cvs.get_mut(index as usize),
                bits.get_mut(index as usize / 64),
            ) else {
                return Ok(false);
            };
            let bit = 1u64 << (index % 64);
            let was_set = *word & bit != 0;
            if cv.is_some() {
                done += u64::from(!was_set);
                *word |= bit;
            } else {
                done -= u64::from(was_set);
                *word &= !bit;
            }
            *slot = cv;
            root = None;
        }
        pos += n as u64;
    }
    if *digest.finalize().as_bytes() != want || root != snap.state.root {
        return Ok(false);
    }
    // The same members: as many, and each of the snapshot's is set.
    Ok(done == snap.state.done.len()
        && snap.state.done.iter().all(|c| {
            bits.get(c as usize / 64)
                .is_some_and(|w| w >> (c % 64) & 1 == 1)
        }))
}

/// Latest chaining value per chunk (None: not complete). Reads every
/// record: the ones a snapshot with a records digest covers in bulk (see
/// [`IndexWriter::open_replayed`]), the rest checked one by one.
pub fn read_cvs(path: &Path) -> Result<Vec<Option<[u8; 32]>>, IndexError> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let head = read_head(&file, path)?;
    Ok(load_replayed(&file, path, &head)?.0.cvs)
}
