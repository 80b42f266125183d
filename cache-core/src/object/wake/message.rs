//! The datagram a filler sends its followers (see the parent module):
//!
//! ```text
//! magic       4   b"BCWK"
//! version     1   1
//! flags       1   bit 0: the index grew (read it now)
//! ranges      2   u16 LE, at most MAX_RANGES
//! sender pid  4   u32 LE (for logs)
//! data id    16   the object's data_id: one for another object is ignored
//! ranges   8 each [start, end) of chunks, u32 LE each
//! ```

use roaring::RoaringBitmap;

use crate::index::IndexHeader;
use crate::object::feed::ranges;

/// A datagram announces the chunks of this many of the latest commits.
pub(super) const RECENT: usize = 256;
/// At most this many ranges go into one datagram (the newest commits win).
pub(super) const MAX_RANGES: usize = 128;
pub(super) const MAGIC: [u8; 4] = *b"BCWK";
pub(super) const VERSION: u8 = 1;
/// Magic, version, flags, range count, sender pid, data id.
pub(super) const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 16;
/// Bytes one datagram can have.
pub(super) const MAX_LEN: usize = HEADER_LEN + MAX_RANGES * 8;
/// Flag of a datagram sent because the index grew (a flush, the root):
/// the follower reads the index at once. Announcements of commits alone
/// do not make it read the index.
pub(super) const INDEX_GREW: u8 = 1;

/// What a follower took from the datagrams it was woken by.
#[derive(Default)]
pub(crate) struct Announced {
    /// Chunks announced as committed.
    pub(crate) chunks: RoaringBitmap,
    /// The index grew: read it now.
    pub(crate) index_grew: bool,
}

/// Encodes an announcement of `chunks` (most recent last) with `flags`.
pub(super) fn encode(data_id: &[u8; 16], chunks: &[u32], flags: u8) -> Vec<u8> {
    let mut recent: &[u32] = chunks;
    let ranges = loop {
        let bits: RoaringBitmap = recent.iter().copied().collect();
        let r = ranges(&bits);
        if r.len() <= MAX_RANGES {
            break r;
        }
        recent = &recent[recent.len() / 2..];
    };
    let mut b = Vec::with_capacity(HEADER_LEN + ranges.len() * 8);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(flags);
    b.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
    b.extend_from_slice(&std::process::id().to_le_bytes());
    b.extend_from_slice(data_id);
    for r in ranges {
        b.extend_from_slice(&r.start.to_le_bytes());
        b.extend_from_slice(&r.end.to_le_bytes());
    }
    b
}

/// Decodes an announcement for the object of `header` into `out`.
/// Anything else (another format, another object, chunks out of range)
/// is ignored: `false`.
pub(super) fn decode(b: &[u8], header: &IndexHeader, out: &mut Announced) -> bool {
    if b.len() < HEADER_LEN || b[..4] != MAGIC || b[4] != VERSION {
        return false;
    }
    let count = usize::from(u16::from_le_bytes([b[6], b[7]]));
    if b.len() != HEADER_LEN + count * 8 || b[12..28] != header.data_id {
        return false;
    }
    let chunks = header.chunk_count();
    let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut bits = RoaringBitmap::new();
    for i in 0..count {
        let (start, end) = (u32_at(HEADER_LEN + i * 8), u32_at(HEADER_LEN + i * 8 + 4));
        if start >= end || end > chunks {
            return false;
        }
        bits.insert_range(start..end);
    }
    out.chunks |= bits;
    out.index_grew |= b[5] & INDEX_GREW != 0;
    true
}

#[cfg(all(test, unix))]
mod tests {
    use super::super::test_header as header;
    use super::*;

    #[test]
    fn round_trip_keeps_the_newest_commits() {
        let h = header(100_000);
        let mut out = Announced::default();
        let m = encode(&h.data_id, &[5, 3, 4, 9], 0);
        assert!(decode(&m, &h, &mut out));
        assert_eq!(ranges(&out.chunks), vec![3..6, 9..10]);
        assert!(!out.index_grew);
        // More scattered commits than ranges fit: the newest half stays.
        let scattered: Vec<u32> = (0..RECENT as u32).map(|i| i * 2).collect();
        let m = encode(&h.data_id, &scattered, INDEX_GREW);
        assert!(m.len() <= MAX_LEN);
        let mut out = Announced::default();
        assert!(decode(&m, &h, &mut out));
        assert!(out.index_grew);
        assert!(out.chunks.contains(*scattered.last().unwrap()));
        assert!(!out.chunks.contains(0));
        assert_eq!(out.chunks.len(), MAX_RANGES as u64);
    }

    #[test]
    fn foreign_or_damaged_datagrams_are_ignored() {
        let h = header(10);
        let m = encode(&h.data_id, &[1, 2], 0);
        let mut out = Announced::default();
        assert!(!decode(&m, &header(2), &mut out), "chunk out of range");
        let mut other = header(10);
        other.data_id = [8; 16];
        assert!(!decode(&m, &other, &mut out), "another object");
        assert!(!decode(&m[..m.len() - 1], &h, &mut out), "truncated");
        let mut bad = m.clone();
        bad[0] ^= 1;
        assert!(!decode(&bad, &h, &mut out), "magic");
        assert!(out.chunks.is_empty());
    }
}
