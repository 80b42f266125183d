//! The snapshot file `<index>.snap`: the replayed state up to some log
//! length, so opening a big index replays only the records after it, and
//! (version 2) the BLAKE3 of the records it covers, so a filler can read
//! their chaining values without checking each record's checksum. Layout
//! in the parent module's documentation. A snapshot is only ever a cache of
//! the log: any doubt about it means it is ignored and the log replayed.

use std::io::Write;
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use super::IndexState;

const MAGIC: [u8; 8] = *b"BCSNAP\0\x01";
/// The version this code writes.
const VERSION: u16 = 2;
/// The first version, still read: no records digest.
const VERSION_1: u16 = 1;
/// Bytes before the bitmap: version 2, and version 1 (no digest field).
const FIXED_LEN: usize = 152;
const FIXED_LEN_V1: usize = 120;
const SUM_LEN: usize = 32;
const FLAG_ROOT: u16 = 1;
/// Version 2: the records digest field is set.
const FLAG_DIGEST: u16 = 2;

/// What a snapshot claims; checked against the log by the caller.
pub(crate) struct Snapshot {
    /// Byte length of the log (header included) the state describes.
    pub covered: u64,
    /// Checksum bytes of the last record covered (zeros if none).
    pub last_sum: [u8; 8],
    pub state: IndexState,
    /// BLAKE3 of the log bytes from the end of the header to `covered`
    /// (the records this snapshot covers), when the writer knew it.
    pub records_digest: Option<[u8; 32]>,
}

/// What binds a snapshot to one index file.
pub(crate) struct Binding {
    pub header_sum: [u8; 32],
    pub data_id: [u8; 16],
    pub header_len: u64,
    pub chunk_count: u32,
}

pub(crate) fn snap_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".snap");
    PathBuf::from(s)
}

pub(crate) fn tmp_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".snap.tmp");
    PathBuf::from(s)
}

/// Largest snapshot (of either version) a bitmap of `chunk_count` bits can need: roaring's
/// portable format is 8 bytes of preamble, then per 64 Ki-bit container 8
/// bytes of descriptor/offset and at most an 8 KiB bitset. Bounding the read
/// keeps a garbage `.snap` from making us allocate gigabytes.
fn max_len(chunk_count: u32) -> u64 {
    let containers = u64::from(chunk_count) / 65536 + 1;
    (FIXED_LEN + SUM_LEN) as u64 + 8 + containers * (8 + 8192)
}

/// A version 2 snapshot. `records_digest`: BLAKE3 of the log's records up
/// to `covered`, only when every one of them is known to be valid (the
/// writer wrote or verified them all).
pub(crate) fn encode(
    b: &Binding,
    covered: u64,
    last_sum: [u8; 8],
    state: &IndexState,
    records_digest: Option<[u8; 32]>,
) -> Vec<u8> {
    encode_version(VERSION, b, covered, last_sum, state, records_digest)
}

/// A version 1 snapshot, as older builds wrote (for compatibility tests).
#[cfg(test)]
pub(crate) fn encode_v1(
    b: &Binding,
    covered: u64,
    last_sum: [u8; 8],
    state: &IndexState,
) -> Vec<u8> {
    encode_version(VERSION_1, b, covered, last_sum, state, None)
}

fn encode_version(
    version: u16,
    b: &Binding,
    covered: u64,
    last_sum: [u8; 8],
    state: &IndexState,
    records_digest: Option<[u8; 32]>,
) -> Vec<u8> {
    let fixed = if version == VERSION_1 {
        FIXED_LEN_V1
    } else {
        FIXED_LEN
    };
    let bitmap_len = state.done.serialized_size();
    let mut v = Vec::with_capacity(fixed + bitmap_len + SUM_LEN);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&version.to_le_bytes());
    let mut flags = if state.root.is_some() { FLAG_ROOT } else { 0 };
    if records_digest.is_some() && version != VERSION_1 {
        flags |= FLAG_DIGEST;
    }
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&b.header_sum);
    v.extend_from_slice(&b.data_id);
    v.extend_from_slice(&covered.to_le_bytes());
    v.extend_from_slice(&last_sum);
    v.extend_from_slice(&state.root.unwrap_or([0; 32]));
    if version != VERSION_1 {
        v.extend_from_slice(&records_digest.unwrap_or([0; 32]));
    }
    v.extend_from_slice(&(bitmap_len as u64).to_le_bytes());
    debug_assert_eq!(v.len(), fixed);
    // Writing into a Vec cannot fail; keep the error path anyway instead of
    // unwrapping (an empty bitmap section then fails validation on load).
    if state.done.serialize_into(&mut v).is_err() {
        v.truncate(fixed);
    }
    let sum = blake3::hash(&v);
    v.extend_from_slice(sum.as_bytes());
    v
}

/// Reads and validates the snapshot next to `index`. `Ok(None)`: there is
/// none. `Err(reason)`: there is one and it must not be trusted.
pub(crate) fn load(index: &Path, b: &Binding) -> Result<Option<Snapshot>, String> {
    let path = snap_path(index);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len > max_len(b.chunk_count) {
        return Err(format!(
            "{len} bytes is too big for {} chunks",
            b.chunk_count
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, max_len(b.chunk_count) + 1),
        &mut bytes,
    )
    .map_err(|e| format!("cannot read: {e}"))?;
    decode(&bytes, b).map(Some)
}

fn decode(v: &[u8], b: &Binding) -> Result<Snapshot, String> {
    if v.len() < FIXED_LEN_V1 + SUM_LEN {
        return Err("truncated".into());
    }
    let (body, sum) = v.split_at(v.len() - SUM_LEN);
    if blake3::hash(body).as_bytes()[..] != sum[..] {
        return Err("checksum mismatch".into());
    }
    if v[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_le_bytes([v[8], v[9]]);
    let (fixed, known_flags) = match version {
        VERSION => (FIXED_LEN, FLAG_ROOT | FLAG_DIGEST),
        VERSION_1 => (FIXED_LEN_V1, FLAG_ROOT),
        _ => return Err(format!("unsupported version {version}")),
    };
    if body.len() < fixed {
        return Err("truncated".into());
    }
    let flags = u16::from_le_bytes([v[10], v[11]]);
    if flags & !known_flags != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    if v[16..48] != b.header_sum || v[48..64] != b.data_id {
        return Err("belongs to another index".into());
    }
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&v[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let covered = u64_at(64);
    if covered < b.header_len || !(covered - b.header_len).is_multiple_of(super::RECORD_LEN as u64)
    {
        return Err(format!("covered length {covered} is not a record boundary"));
    }
    let mut last_sum = [0u8; 8];
    last_sum.copy_from_slice(&v[72..80]);
    let mut root = [0u8; 32];
    root.copy_from_slice(&v[80..112]);
    let records_digest = if version == VERSION_1 {
        None
    } else {
        let mut d = [0u8; 32];
        d.copy_from_slice(&v[112..144]);
        if flags & FLAG_DIGEST != 0 {
            Some(d)
        } else if d != [0; 32] {
            return Err("records digest set without its flag".into());
        } else {
            None
        }
    };
    let bitmap_len = u64_at(fixed - 8);
    if bitmap_len != (body.len() - fixed) as u64 {
        return Err("bitmap length disagrees with file length".into());
    }
    // deserialize_from (not _unchecked) validates container contents; the
    // checksum already makes garbage here all but impossible.
    let done =
        RoaringBitmap::deserialize_from(&body[fixed..]).map_err(|e| format!("bad bitmap: {e}"))?;
    if done.serialized_size() as u64 != bitmap_len {
        return Err("trailing bytes after bitmap".into());
    }
    if done.max().is_some_and(|m| m >= b.chunk_count) {
        return Err("bitmap names a chunk beyond the object".into());
    }
    let root = if flags & FLAG_ROOT != 0 {
        if done.len() != u64::from(b.chunk_count) {
            return Err("root set while chunks are missing".into());
        }
        Some(root)
    } else {
        None
    };
    Ok(Snapshot {
        covered,
        last_sum,
        state: IndexState { done, root },
        records_digest,
    })
}

/// Writes the snapshot durably and atomically: temp file, fsync, rename over
/// the old one, fsync the directory. A follower reading `.snap` concurrently
/// sees the old or the new file, never a mix.
pub(crate) fn store(
    index: &Path,
    bytes: &[u8],
) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
    let tmp = tmp_path(index);
    let dst = snap_path(index);
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| ("create snapshot temp file", tmp.clone(), e))?;
    f.write_all(bytes)
        .map_err(|e| ("write snapshot temp file", tmp.clone(), e))?;
    f.sync_all()
        .map_err(|e| ("fsync snapshot temp file", tmp.clone(), e))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(|e| ("rename snapshot into place", dst.clone(), e))?;
    super::sync_parent(&dst).map_err(|e| ("fsync snapshot directory", dst.clone(), e))
}
