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
        let (state, end, _, _) = load_state(&file, path, &head)?;
        let reader = IndexReader {
            file,
            path: path.to_path_buf(),
            data_id: head.header.data_id,
            chunk_count: head.chunk_count,
            pos: end.valid_end,
        };
        Ok((reader, head.header, state))
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

/// What one full replay of a log says: the state and each chunk's
/// chaining value. A chunk is done exactly when it has a CV here (both
/// come from the same records), so a done chunk always has a trusted hash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replayed {
    /// Done chunks and root after the replay.
    pub state: IndexState,
    /// Latest CV per chunk; `None`: not complete.
    pub cvs: Vec<Option<[u8; 32]>>,
}

/// Replays the whole log of `file` (ignoring any snapshot).
pub(super) fn replay_all(
    file: &File,
    path: &Path,
    head: &Head,
) -> Result<(Replayed, ReplayEnd), IndexError> {
    let n = head.chunk_count as usize;
    let mut cvs: Vec<Option<[u8; 32]>> = Vec::new();
    cvs.try_reserve_exact(n).map_err(|e| {
        io_err(path, "allocate chunk CV table")(io::Error::new(
            io::ErrorKind::OutOfMemory,
            e.to_string(),
        ))
    })?;
    cvs.resize(n, None);
    let mut state = IndexState::default();
    let cc = head.chunk_count;
    let end = replay(file, path, &head.header.data_id, cc, head.header_len, |r| {
        state.apply(r, cc);
        // decode_record only yields indexes < chunk_count; get_mut keeps
        // that a non-panicking fact rather than an assumption.
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
    })?;
    Ok((Replayed { state, cvs }, end))
}

/// Latest chaining value per chunk (None: not complete), from a full
/// replay that ignores snapshots (they hold no CVs).
pub fn read_cvs(path: &Path) -> Result<Vec<Option<[u8; 32]>>, IndexError> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let head = read_head(&file, path)?;
    Ok(replay_all(&file, path, &head)?.0.cvs)
}
