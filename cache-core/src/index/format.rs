//! Byte layouts of the index file: header and records. See the tables in
//! the parent module's documentation; this file is the code that reads and
//! writes them and must stay in sync with those tables.

use super::{IndexHeader, Record, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// First 8 bytes of every index file.
pub(crate) const MAGIC: [u8; 8] = *b"BCIDX\0\0\x01";
/// Format version this code writes and the only one it reads.
pub(crate) const VERSION: u16 = 1;
/// Bytes of the header before the variable-length strings.
pub(crate) const HEADER_FIXED_LEN: usize = 104;
/// Bytes of the header checksum at the end of the header.
pub(crate) const HEADER_SUM_LEN: usize = 32;
/// Longest source / validator string accepted (each).
pub(crate) const MAX_STRING_LEN: usize = 64 * 1024;
/// Largest possible header.
pub(crate) const MAX_HEADER_LEN: usize = HEADER_FIXED_LEN + 2 * MAX_STRING_LEN + HEADER_SUM_LEN;
/// Bytes of one record.
pub const RECORD_LEN: usize = 48;
/// Bytes of a record covered by its checksum.
const RECORD_BODY_LEN: usize = 40;

const KIND_CHUNK: u8 = 1;
const KIND_CLEAR: u8 = 2;
const KIND_ROOT: u8 = 3;

/// Why a header does not parse. Turned into `IndexError::Corrupt` (or an
/// invalid-input error on create) by the caller, which knows the path.
pub(crate) type HeaderProblem = String;

/// Checks the invariants a header must satisfy, on create and on open.
pub(crate) fn check_header(h: &IndexHeader) -> Result<(), HeaderProblem> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&h.chunk_size) || !h.chunk_size.is_power_of_two()
    {
        return Err(format!(
            "chunk size {} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
            h.chunk_size
        ));
    }
    if crate::hash::chunk_count(h.len, h.chunk_size).is_none() {
        return Err(format!(
            "object length {} needs more than 2^32 chunks of {}",
            h.len, h.chunk_size
        ));
    }
    if h.source.len() > MAX_STRING_LEN {
        return Err(format!(
            "source is {} bytes, limit {MAX_STRING_LEN}",
            h.source.len()
        ));
    }
    if h.validator.len() > MAX_STRING_LEN {
        return Err(format!(
            "validator is {} bytes, limit {MAX_STRING_LEN}",
            h.validator.len()
        ));
    }
    Ok(())
}

/// Serializes a header (already checked) including its checksum.
pub(crate) fn encode_header(h: &IndexHeader) -> Vec<u8> {
    let total = HEADER_FIXED_LEN + h.source.len() + h.validator.len() + HEADER_SUM_LEN;
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // flags: none defined
    b.extend_from_slice(&(total as u32).to_le_bytes());
    b.extend_from_slice(&h.len.to_le_bytes());
    b.extend_from_slice(&h.chunk_size.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // reserved
    b.extend_from_slice(&h.data_id);
    b.extend_from_slice(&h.created_unix.to_le_bytes());
    b.push(u8::from(h.expected.is_some()));
    b.extend_from_slice(&[0u8; 7]); // reserved
    b.extend_from_slice(&h.expected.unwrap_or([0; 32]));
    b.extend_from_slice(&(h.source.len() as u32).to_le_bytes());
    b.extend_from_slice(&(h.validator.len() as u32).to_le_bytes());
    debug_assert_eq!(b.len(), HEADER_FIXED_LEN);
    b.extend_from_slice(h.source.as_bytes());
    b.extend_from_slice(h.validator.as_bytes());
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    debug_assert_eq!(b.len(), total);
    b
}

/// The first 16 bytes of the file: enough to learn the header length.
/// Returns the header length or a problem description.
pub(crate) fn parse_prefix(p: &[u8; 16]) -> Result<usize, HeaderProblem> {
    if p[0..8] != MAGIC {
        return Err("bad magic (not a blockcache chunk index)".into());
    }
    let version = u16::from_le_bytes([p[8], p[9]]);
    if version != VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads {VERSION})"
        ));
    }
    let header_len = u32::from_le_bytes([p[12], p[13], p[14], p[15]]) as usize;
    if !(HEADER_FIXED_LEN + HEADER_SUM_LEN..=MAX_HEADER_LEN).contains(&header_len) {
        return Err(format!("header length {header_len} out of range"));
    }
    Ok(header_len)
}

/// Parses a whole header (`b.len()` is the header length from
/// [`parse_prefix`]). Returns the header and its checksum, which binds
/// snapshots to this exact header.
pub(crate) fn decode_header(b: &[u8]) -> Result<(IndexHeader, [u8; 32]), HeaderProblem> {
    if b.len() < HEADER_FIXED_LEN + HEADER_SUM_LEN {
        return Err("header truncated".into());
    }
    let (body, sum) = b.split_at(b.len() - HEADER_SUM_LEN);
    let computed = blake3::hash(body);
    if computed.as_bytes()[..] != sum[..] {
        return Err("header checksum mismatch".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let flags = u16::from_le_bytes([b[10], b[11]]);
    if flags != 0 {
        return Err(format!("unknown header flags {flags:#x}"));
    }
    let len = u64_at(16);
    let chunk_size = u32_at(24);
    let mut data_id = [0u8; 16];
    data_id.copy_from_slice(&b[32..48]);
    let created_unix = u64_at(48);
    let expected = match b[56] {
        0 => None,
        1 => {
            let mut e = [0u8; 32];
            e.copy_from_slice(&b[64..96]);
            Some(e)
        }
        x => return Err(format!("bad expected-hash flag {x}")),
    };
    let source_len = u32_at(96) as usize;
    let validator_len = u32_at(100) as usize;
    if source_len > MAX_STRING_LEN || validator_len > MAX_STRING_LEN {
        return Err("string length out of range".into());
    }
    if HEADER_FIXED_LEN + source_len + validator_len != body.len() {
        return Err("string lengths disagree with header length".into());
    }
    let s_end = HEADER_FIXED_LEN + source_len;
    let source = std::str::from_utf8(&b[HEADER_FIXED_LEN..s_end])
        .map_err(|_| "source is not UTF-8".to_string())?
        .to_owned();
    let validator = std::str::from_utf8(&b[s_end..s_end + validator_len])
        .map_err(|_| "validator is not UTF-8".to_string())?
        .to_owned();
    let h = IndexHeader {
        len,
        chunk_size,
        data_id,
        source,
        validator,
        expected,
        created_unix,
    };
    check_header(&h)?;
    let mut s = [0u8; 32];
    s.copy_from_slice(sum);
    Ok((h, s))
}

/// The 8-byte record checksum: the first 8 bytes of BLAKE3 over the index's
/// random `data_id` followed by the record body, so a record copied from
/// another index (or a stale file at the same path) never validates here.
/// 64 bits is plenty against torn writes and bit flips; it is not meant to
/// resist an attacker who can write the file (they could rewrite the data).
fn record_sum(data_id: &[u8; 16], body: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(data_id);
    h.update(body);
    let mut s = [0u8; 8];
    s.copy_from_slice(&h.finalize().as_bytes()[..8]);
    s
}

/// Serializes one record.
pub(crate) fn encode_record(r: &Record, data_id: &[u8; 16]) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    let (kind, index, payload) = match *r {
        Record::Chunk { index, cv } => (KIND_CHUNK, index, cv),
        Record::Clear { index } => (KIND_CLEAR, index, [0; 32]),
        Record::Root { hash } => (KIND_ROOT, 0, hash),
    };
    b[0] = kind;
    b[4..8].copy_from_slice(&index.to_le_bytes());
    b[8..40].copy_from_slice(&payload);
    let sum = record_sum(data_id, &b[..RECORD_BODY_LEN]);
    b[40..48].copy_from_slice(&sum);
    b
}

/// Parses one record; `None` if it is not a valid record of this index
/// (bad checksum, unknown kind, non-canonical reserved bytes, or a chunk
/// outside the object). Such a record ends the valid prefix of the log.
pub(crate) fn decode_record(b: &[u8], data_id: &[u8; 16], chunk_count: u32) -> Option<Record> {
    if b.len() != RECORD_LEN {
        return None;
    }
    if record_sum(data_id, &b[..RECORD_BODY_LEN])[..] != b[40..48] {
        return None;
    }
    decode_record_unchecked(b, chunk_count)
}

/// [`decode_record`] without the checksum, for records already known to
/// be valid (a snapshot's records digest vouches for them; see
/// `reader::replay_under_snapshot`). Every other rule still applies.
pub(crate) fn decode_record_unchecked(b: &[u8], chunk_count: u32) -> Option<Record> {
    if b.len() != RECORD_LEN {
        return None;
    }
    // Reserved bytes are covered by the checksum, so non-zero ones mean a
    // writer bug or a future format: not ours to interpret.
    if b[1..4] != [0, 0, 0] {
        return None;
    }
    let index = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut payload = [0u8; 32];
    payload.copy_from_slice(&b[8..40]);
    match b[0] {
        KIND_CHUNK if index < chunk_count => Some(Record::Chunk { index, cv: payload }),
        KIND_CLEAR if index < chunk_count && payload == [0; 32] => Some(Record::Clear { index }),
        KIND_ROOT if index == 0 => Some(Record::Root { hash: payload }),
        _ => None,
    }
}

/// The stored checksum bytes of an encoded record (used by snapshots to bind
/// themselves to the last record they cover).
pub(crate) fn record_checksum(b: &[u8]) -> [u8; 8] {
    let mut s = [0u8; 8];
    if b.len() == RECORD_LEN {
        s.copy_from_slice(&b[40..48]);
    }
    s
}
