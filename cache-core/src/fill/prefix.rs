//! The fill's sequential digests (SHA-256, SHA-512) over the object's
//! contiguous completed prefix, and the checkpoints that let a resume take
//! them up instead of hashing that prefix again.
//!
//! The hashers follow the prefix as commits extend it (off the commit
//! path, woken by commits). Every [`checkpoint_every`] bytes of progress
//! their state becomes *due*; the next durability flush that starts after
//! that writes it to the object's `prefix` file once its records are on
//! disk, so a checkpoint never covers a chunk a crash could lose. A fill
//! that stops without completing writes the latest state after its final
//! flush. A complete object's file is removed (its digests are final).
//! The hashers hand checkpoints over under a lock of their own
//! ([`Checkpoints`]): a flush never waits for hashing (a first version
//! took them from under the hasher's lock, and flushes stalled behind a
//! hasher that kept going as the prefix grew: a SIGKILL at 60 % of a
//! 40 GiB fetch found only 42 % durable).
//!
//! ## The `prefix` file
//!
//! ```text
//! magic          8   b"BCPREFX\x01"
//! version        2   u16 LE, 1
//! algorithms     2   u16 LE: bit 0 SHA-256, bit 1 SHA-512
//! data id       16   the index's data_id: binds the file to these bytes
//! chunks         4   u32 LE: the prefix covered is chunks 0..chunks
//! reserved       4   zero
//! bytes          8   u64 LE: chunks × chunk size
//! chunk CVs     32   BLAKE3 of the chaining values of chunks 0..chunks
//! state      32/64   each hasher's eight state words, big-endian
//!                    (SHA-256's first)
//! checksum      32   BLAKE3 of all preceding bytes
//! ```
//!
//! **Trust rule.** A resume uses the file only when its checksum, version
//! and data id are right, it carries exactly the algorithms this fill
//! computes, and every chunk it covers has a chaining value in the index
//! just replayed whose BLAKE3 over them all matches. The chaining values
//! pin the bytes (each is the BLAKE3 of one chunk at its place): a chunk
//! cleared or repaired since, or an index rewritten, fails the check and
//! the prefix is hashed from the data file as before. Anything else is
//! ignored, never trusted, and costs only that re-hash.

use std::path::Path;

use parking_lot::Mutex;

use super::filler::FillCtx;
use crate::digest::{Algo, Digest, PrefixHasher, PrefixState};
use crate::error::Result;
use crate::index::IndexHeader;

/// Bytes of done chunks the hasher maps at a time: a map of their own
/// (not the whole file's, which readers share), dropped after one pass,
/// so hashing an object does not leave it mapped and counted in the
/// process's resident size. Through a map rather than `pread` into a
/// buffer: no copy of every byte, and with loads started ahead
/// ([`PrefixHasher::update_streaming`]) SHA-256 ran 1.70 against
/// 1.45 GB/s (BENCHMARKS.md, fill at the disk's speed).
const HASH_WINDOW: u64 = 8 << 20;

/// Name of the checkpoint file in an object directory.
pub(crate) const PREFIX_FILE: &str = "prefix";
const MAGIC: [u8; 8] = *b"BCPREFX\x01";
const VERSION: u16 = 1;
/// Bytes before the state words.
const HEAD_LEN: usize = 8 + 2 + 2 + 16 + 4 + 4 + 8 + 32;

/// Bytes of prefix progress between two checkpoints of an object of
/// `len` bytes: an eighth of the object, at most 256 MiB, so a resume
/// hashes again at most that much (a second or so of SHA-256 at
/// 256 MiB) for one small file written and synced as often.
pub(crate) fn checkpoint_every(len: u64, chunk_size: u32) -> u64 {
    (len / 8).clamp(u64::from(chunk_size), 256 << 20)
}

/// A hashers' state at a chunk boundary, with what binds it to the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Chunks 0..chunks were hashed.
    pub(crate) chunks: u32,
    /// BLAKE3 of their chaining values, in order.
    pub(crate) cvs_digest: [u8; 32],
    pub(crate) state: PrefixState,
}

fn algo_bits(algos: &[Algo]) -> u16 {
    u16::from(algos.contains(&Algo::Sha256)) | u16::from(algos.contains(&Algo::Sha512)) << 1
}

/// Encodes the `prefix` file (see the module docs).
pub(crate) fn encode(data_id: &[u8; 16], cp: &Checkpoint) -> Vec<u8> {
    let state = cp.state.state_bytes();
    let mut b = Vec::with_capacity(HEAD_LEN + state.len() + 32);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&algo_bits(&cp.state.algos()).to_le_bytes());
    b.extend_from_slice(data_id);
    b.extend_from_slice(&cp.chunks.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&cp.state.pos.to_le_bytes());
    b.extend_from_slice(&cp.cvs_digest);
    b.extend_from_slice(&state);
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

/// Decodes a `prefix` file for the object of `header`; `None` when it is
/// damaged, of another version, of other bytes or not on a chunk boundary
/// of this object.
pub(crate) fn decode(b: &[u8], header: &IndexHeader) -> Option<Checkpoint> {
    if b.len() < HEAD_LEN + 32 || b[..8] != MAGIC {
        return None;
    }
    let (body, sum) = b.split_at(b.len() - 32);
    if blake3::hash(body).as_bytes()[..] != sum[..] {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap_or_default());
    if u16_at(8) != VERSION || body[12..28] != header.data_id[..] {
        return None;
    }
    let bits = u16_at(10);
    let algos: Vec<Algo> = Algo::SEQUENTIAL
        .iter()
        .enumerate()
        .filter(|(i, _)| bits >> i & 1 == 1)
        .map(|(_, a)| *a)
        .collect();
    if bits >> Algo::SEQUENTIAL.len() != 0 || u32_at(32) != 0 {
        return None;
    }
    let chunks = u32_at(28);
    let pos = u64::from_le_bytes(body[36..44].try_into().ok()?);
    if chunks >= header.chunk_count() || pos != u64::from(chunks) * u64::from(header.chunk_size) {
        return None;
    }
    let cvs_digest: [u8; 32] = body[44..76].try_into().ok()?;
    let state = PrefixState::from_state_bytes(pos, &algos, &body[HEAD_LEN..])?;
    Some(Checkpoint {
        chunks,
        cvs_digest,
        state,
    })
}

/// Decodes `b` as the `prefix` file of the object of `header` and encodes
/// what was decoded again: `None` when the file is refused. For this
/// workspace's fuzz target (`internals` feature): an accepted file must
/// come back byte for byte.
#[cfg(feature = "internals")]
pub fn reencode(b: &[u8], header: &IndexHeader) -> Option<Vec<u8>> {
    decode(b, header).map(|cp| {
        assert!(
            cp.chunks < header.chunk_count(),
            "a checkpoint past the end"
        );
        encode(&header.data_id, &cp)
    })
}

/// BLAKE3 over the chaining values of chunks `0..n`; `None` when one of
/// them has none (not done).
fn cvs_digest(cvs: &[Option<[u8; 32]>], n: u32) -> Option<blake3::Hasher> {
    let mut h = blake3::Hasher::new();
    for cv in cvs.get(..n as usize)? {
        h.update(cv.as_ref()?);
    }
    Some(h)
}

/// Checkpoints the hasher hands to the flusher, behind a lock of their
/// own: the hasher holds its lock while it hashes (seconds, when a resume
/// catches up), and a flush must never wait for that.
#[derive(Default)]
pub(crate) struct Checkpoints {
    /// One the next flush writes once its chunks are durable.
    due: Option<Checkpoint>,
    /// The hashers' latest state (for the end of a fill that did not
    /// complete).
    latest: Option<Checkpoint>,
}

/// The sequential hashers and the first chunk they have not seen.
pub(crate) struct Prefix {
    hasher: PrefixHasher,
    /// The algorithms this fill computes.
    algos: Vec<Algo>,
    next: u32,
    /// BLAKE3 over the chaining values of chunks `0..next`.
    cvs: blake3::Hasher,
    /// Whether the start (checkpoint or re-hash of a resume) was handled.
    started: bool,
    /// Position of the last checkpoint made due.
    checkpointed: u64,
    /// A chunk read back with `pread` for hashing, when a map of its run
    /// ([`HASH_WINDOW`]) cannot be had.
    buf: Vec<u8>,
}

impl Prefix {
    pub(crate) fn new(algos: &[Algo]) -> Mutex<Prefix> {
        let algos: Vec<Algo> = Algo::SEQUENTIAL
            .into_iter()
            .filter(|a| algos.contains(a))
            .collect();
        Mutex::new(Prefix {
            hasher: PrefixHasher::new(&algos),
            algos,
            next: 0,
            cvs: blake3::Hasher::new(),
            started: false,
            checkpointed: 0,
            buf: Vec::new(),
        })
    }

    /// The hashers' state now, if they compute anything.
    fn checkpoint(&self) -> Option<Checkpoint> {
        if self.algos.is_empty() || self.next == 0 {
            return None;
        }
        Some(Checkpoint {
            chunks: self.next,
            cvs_digest: *self.cvs.finalize().as_bytes(),
            state: self.hasher.saved()?,
        })
    }
}

impl FillCtx {
    /// Hashes the chunks that extend the contiguous completed prefix
    /// (blocking). They were just written, so they come from the page
    /// cache. At the first call, a resume takes up the object's checkpoint
    /// if it can be trusted; the prefix on disk beyond it is read back
    /// once.
    pub(crate) fn advance_prefix(&self) {
        let obj = &self.obj;
        let header = &obj.header;
        let mut p = self.prefix.lock();
        if p.algos.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        if !p.started {
            self.take_up_checkpoint(&mut p);
        }
        let from = p.hasher.pos;
        let every = checkpoint_every(header.len, header.chunk_size);
        let count = header.chunk_count();
        'runs: while p.next < count && obj.is_done(p.next) {
            // The run of done chunks from here, mapped at once.
            let first = p.next;
            let mut end = first + 1;
            while end < count
                && obj.is_done(end)
                && header.chunk_range(end).end - header.chunk_range(first).start <= HASH_WINDOW
            {
                end += 1;
            }
            let run = header.chunk_range(first).start..header.chunk_range(end - 1).end;
            // None for an empty run (a 0-byte object), as for any map
            // that cannot be had: the chunks are read with `pread` then.
            let map = obj.data().map_range(run).ok();
            for c in first..end {
                let Some(cv) = self.cv(c) else { break 'runs };
                let range = header.chunk_range(c);
                let Prefix {
                    hasher, buf, cvs, ..
                } = &mut *p;
                match &map {
                    Some(map) => hasher.update_streaming(map.bytes(range)),
                    None => {
                        buf.resize((range.end - range.start) as usize, 0);
                        match obj.data().read_exact_at(range.start, buf) {
                            Ok(()) => hasher.update(buf),
                            // The same bytes through the shared map.
                            Err(_) => hasher.update(&obj.data().bytes(range)),
                        }
                    }
                }
                cvs.update(&cv);
                p.next += 1;
                // Due as soon as it is (a long catch-up included).
                if p.hasher.pos >= p.checkpointed + every && p.next < count {
                    self.checkpoints.lock().due = p.checkpoint();
                    p.checkpointed = p.hasher.pos;
                }
            }
        }
        if p.hasher.pos > from {
            self.checkpoints.lock().latest = p.checkpoint();
        }
        if !p.started {
            p.started = true;
            let bytes = p.hasher.pos - from;
            if bytes > 0 {
                tracing::info!(
                    object = %obj.key,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "hashed the prefix found on disk"
                );
            }
        }
    }

    /// Starts the hashers from the object's checkpoint when it can be
    /// trusted (see the module docs).
    fn take_up_checkpoint(&self, p: &mut Prefix) {
        let obj = &self.obj;
        let path = obj.dir.join(PREFIX_FILE);
        let Ok(raw) = std::fs::read(&path) else {
            return;
        };
        let taken = decode(&raw, &obj.header).and_then(|cp| {
            if cp.state.algos() != p.algos {
                return None;
            }
            let cvs = cvs_digest(&self.cvs_table(), cp.chunks)?;
            if *cvs.finalize().as_bytes() != cp.cvs_digest {
                return None;
            }
            Some((PrefixHasher::resume(&cp.state)?, cvs, cp))
        });
        match taken {
            Some((hasher, cvs, cp)) => {
                tracing::info!(
                    object = %obj.key,
                    bytes = cp.state.pos,
                    "took up the SHA-2 state of the completed prefix from its checkpoint"
                );
                p.hasher = hasher;
                p.cvs = cvs;
                p.next = cp.chunks;
                p.checkpointed = cp.state.pos;
            }
            None => tracing::info!(
                path = %path.display(),
                "prefix checkpoint does not fit the index; hashing the prefix again"
            ),
        }
    }

    /// The checkpoint that became due, for a flush about to start: every
    /// chunk it covers was committed before that flush takes its records.
    pub(crate) fn take_due_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints.lock().due.take()
    }

    /// The hashers' latest state, for the final flush of a fill that did
    /// not complete, taken before that flush starts (every chunk it covers
    /// was committed before).
    pub(crate) fn take_latest_checkpoint(&self) -> Option<Checkpoint> {
        let mut c = self.checkpoints.lock();
        c.due = None;
        c.latest.take()
    }

    /// Writes `cp` as the object's `prefix` file (blocking). Its chunks
    /// must be durable. A failure costs a resume a re-hash, nothing else:
    /// it is logged, not returned.
    pub(crate) fn write_checkpoint(&self, cp: &Checkpoint) {
        let obj = &self.obj;
        let path = obj.dir.join(PREFIX_FILE);
        let bytes = encode(&obj.header.data_id, cp);
        if let Err(e) = obj.host.write_atomic(&path, &bytes) {
            tracing::warn!(object = %obj.key, "cannot save the prefix checkpoint: {e}");
        }
    }

    /// Finishes the sequential digests: every chunk is present.
    pub(crate) fn finish_digests(&self) -> Vec<Digest> {
        self.advance_prefix();
        let mut p = self.prefix.lock();
        let hasher = std::mem::replace(&mut p.hasher, PrefixHasher::new(&[]));
        hasher.finish()
    }
}

/// Removes the checkpoint of an object that completed (its digests are
/// stored; nothing resumes it).
pub(crate) fn remove_checkpoint(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(PREFIX_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::error::Error::io(dir.join(PREFIX_FILE), "remove", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u64) -> IndexHeader {
        IndexHeader {
            len,
            chunk_size: 65_536,
            data_id: [7; 16],
            source: "test".into(),
            validator: String::new(),
            expected: None,
            created_unix: 0,
        }
    }

    fn checkpoint(algos: &[Algo]) -> Checkpoint {
        let mut h = PrefixHasher::new(algos);
        h.update(&[5u8; 3 * 65_536]);
        Checkpoint {
            chunks: 3,
            cvs_digest: [9; 32],
            state: h.saved().unwrap(),
        }
    }

    #[test]
    fn round_trip() {
        let h = header(10 * 65_536);
        for algos in [
            vec![Algo::Sha256],
            vec![Algo::Sha512],
            Algo::SEQUENTIAL.to_vec(),
        ] {
            let cp = checkpoint(&algos);
            assert_eq!(decode(&encode(&h.data_id, &cp), &h), Some(cp));
        }
    }

    #[test]
    fn the_fuzz_targets_codec_gives_an_accepted_file_back() {
        let h = header(10 * 65_536);
        let file = encode(&h.data_id, &checkpoint(&Algo::SEQUENTIAL));
        assert_eq!(reencode(&file, &h).as_deref(), Some(&file[..]));
        assert_eq!(reencode(&file[1..], &h), None);
    }

    #[test]
    fn damage_or_another_object_is_refused() {
        let h = header(10 * 65_536);
        let good = encode(&h.data_id, &checkpoint(&[Algo::Sha256]));
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, &h).is_none(), "flipped byte {i}");
        }
        assert!(decode(&good[..good.len() - 1], &h).is_none());
        assert!(decode(&good, &header(3 * 65_536)).is_none(), "past the end");
        let mut other = h.clone();
        other.data_id = [8; 16];
        assert!(decode(&good, &other).is_none(), "other bytes");
    }

    #[test]
    fn checkpoints_come_every_eighth_and_at_most_256_mib() {
        assert_eq!(checkpoint_every(48 << 20, 65_536), 6 << 20);
        assert_eq!(checkpoint_every(45 << 30, 1 << 20), 256 << 20);
        assert_eq!(checkpoint_every(100, 65_536), 65_536);
    }
}
