//! The manifest: the list of an object's chunk chaining values, a Merkle
//! proof of every chunk.
//!
//! A complete object's chunks are aligned BLAKE3 subtrees ([`crate::hash`]),
//! so their chaining values (CVs) merge to the object's BLAKE3 root. Whoever
//! knows the root (the object's name) checks a manifest once with
//! [`Manifest::verify_root`]; from then on every chunk from any untrusted
//! place (a parent cache, a shared bucket) is checked against its CV on
//! arrival, before it is committed (design invariant 1). A manifest is 32
//! bytes per chunk: 320 KiB for 10 GiB at 1 MiB chunks.
//!
//! ## File format (version 1)
//!
//! All integers little-endian. This table and [`Manifest::encode`] /
//! [`Manifest::decode`] must stay in sync.
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `BCMAN\0\0\x01` |
//! | 8 | 2 | format version, `1` |
//! | 10 | 2 | flags, `0` (none defined; anything else is refused) |
//! | 12 | 4 | chunk size: a power of two, 64 KiB..=64 MiB |
//! | 16 | 8 | object length in bytes |
//! | 24 | 4 | chunk count `n` = `max(1, ceil(length / chunk size))` |
//! | 28 | 4 | reserved, `0` |
//! | 32 | 32·n | chunk CVs, chunk 0 first (for a one-chunk object: its BLAKE3 hash) |
//! | 32 + 32·n | 32 | checksum: BLAKE3 of bytes `0..32 + 32·n` |
//!
//! The file is exactly `64 + 32·n` bytes. The checksum catches damage in
//! transit or on disk; it proves nothing about the content (anyone can
//! compute it): only [`Manifest::verify_root`] against a root from a
//! trusted place does.

use std::fmt;

use crate::hash;
use crate::index::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// First 8 bytes of every manifest.
pub const MAGIC: [u8; 8] = *b"BCMAN\0\0\x01";
/// Format version this code writes and the only one it reads.
pub const VERSION: u16 = 1;
/// Bytes before the CVs.
const HEADER_LEN: usize = 32;
/// Bytes of the checksum at the end.
const SUM_LEN: usize = 32;

/// Why a manifest was refused. The message names what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not a well-formed manifest.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// Well-formed, but its CVs do not merge to the expected root: it is
    /// not a manifest of that object, and none of its CVs may be used.
    #[error("manifest does not match BLAKE3 {expected}: its chunk values merge to {actual}")]
    RootMismatch {
        /// The root the caller trusts (hex).
        expected: String,
        /// The root the manifest's chunk values merge to (hex).
        actual: String,
    },
}

/// A decoded (well-formed, not yet trusted) manifest. See the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    len: u64,
    chunk_size: u32,
    cvs: Vec<[u8; 32]>,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("len", &self.len)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.cvs.len())
            .finish()
    }
}

fn malformed(detail: impl Into<String>) -> ManifestError {
    ManifestError::Malformed(detail.into())
}

fn check_shape(len: u64, chunk_size: u32, count: usize) -> Result<(), ManifestError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || !chunk_size.is_power_of_two() {
        return Err(malformed(format!(
            "chunk size {chunk_size} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    let Some(expected) = hash::chunk_count(len, chunk_size) else {
        return Err(malformed(format!(
            "length {len} needs more than 2^32 chunks of {chunk_size}"
        )));
    };
    if count != expected as usize {
        return Err(malformed(format!(
            "{count} chunk values for {len} bytes in chunks of {chunk_size} (needs {expected})"
        )));
    }
    Ok(())
}

impl Manifest {
    /// A manifest of an object of `len` bytes in chunks of `chunk_size`
    /// with chunk CVs `cvs`; refused when the count does not fit.
    pub fn new(len: u64, chunk_size: u32, cvs: Vec<[u8; 32]>) -> Result<Manifest, ManifestError> {
        check_shape(len, chunk_size, cvs.len())?;
        Ok(Manifest {
            len,
            chunk_size,
            cvs,
        })
    }

    /// Object length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunk size the CVs are for.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The chunk CVs, chunk 0 first.
    pub fn cvs(&self) -> &[[u8; 32]] {
        &self.cvs
    }

    /// The BLAKE3 root the CVs merge to.
    pub fn root(&self) -> blake3::Hash {
        // The shape was checked on construction, so the merge cannot fail.
        hash::root_from_cvs(&self.cvs, self.chunk_size, self.len)
    }

    /// Checks that the CVs merge to `expected` (the object's name). Only a
    /// manifest that passes may be used to verify chunks.
    pub fn verify_root(&self, expected: &blake3::Hash) -> Result<(), ManifestError> {
        let actual = self.root();
        if actual == *expected {
            Ok(())
        } else {
            Err(ManifestError::RootMismatch {
                expected: expected.to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            })
        }
    }

    /// The CVs of the same object cut into chunks of `chunk_size` (the
    /// store's objects may use another chunk size than the manifest's
    /// author). Coarser chunks are merged from the finer CVs along the
    /// BLAKE3 tree; `None` when `chunk_size` is finer than the manifest's
    /// (those CVs cannot be derived) or not a valid chunk size.
    pub fn cvs_for_chunk_size(&self, chunk_size: u32) -> Option<Vec<[u8; 32]>> {
        if chunk_size == self.chunk_size {
            return Some(self.cvs.clone());
        }
        if chunk_size < self.chunk_size || !hash::valid_chunk_size(chunk_size) {
            return None;
        }
        let count = hash::chunk_count(self.len, chunk_size)?;
        if self.len <= u64::from(chunk_size) {
            // One chunk: its "CV" is the root itself.
            return Some(vec![*self.root().as_bytes()]);
        }
        let cs = u64::from(chunk_size);
        Some(
            (0..u64::from(count))
                .map(|i| {
                    let start = i * cs;
                    let len = (self.len - start).min(cs);
                    hash::subtree_cv(&self.cvs, self.chunk_size, start, len)
                })
                .collect(),
        )
    }

    /// The manifest file's bytes (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + 32 * self.cvs.len() + SUM_LEN);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // flags
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&(self.cvs.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // reserved
        debug_assert_eq!(b.len(), HEADER_LEN);
        for cv in &self.cvs {
            b.extend_from_slice(cv);
        }
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        b
    }

    /// Parses a manifest file, refusing anything malformed (wrong magic,
    /// version, flags, sizes, count or checksum) with an error naming the
    /// problem. Does not check the root: see [`Manifest::verify_root`].
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < HEADER_LEN + SUM_LEN {
            return Err(malformed(format!(
                "{} bytes, shorter than the smallest manifest ({})",
                bytes.len(),
                HEADER_LEN + 32 + SUM_LEN
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(malformed("wrong magic (not a blockcache manifest)"));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let version = u16_at(8);
        if version != VERSION {
            return Err(malformed(format!(
                "version {version}, this build reads version {VERSION}"
            )));
        }
        let flags = u16_at(10);
        if flags != 0 {
            return Err(malformed(format!("unknown flags {flags:#06x}")));
        }
        let chunk_size = u32_at(12);
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[16..24]);
        let len = u64::from_le_bytes(len_bytes);
        let count = u32_at(24) as usize;
        if u32_at(28) != 0 {
            return Err(malformed("reserved field is not zero"));
        }
        // Size before anything that allocates by `count`.
        let expected_size = (count as u64) * 32 + (HEADER_LEN + SUM_LEN) as u64;
        if bytes.len() as u64 != expected_size {
            return Err(malformed(format!(
                "{} bytes, but {count} chunk values make {expected_size}",
                bytes.len()
            )));
        }
        check_shape(len, chunk_size, count)?;
        let body_end = bytes.len() - SUM_LEN;
        if blake3::hash(&bytes[..body_end]).as_bytes()[..] != bytes[body_end..] {
            return Err(malformed(
                "checksum mismatch (damaged in transit or on disk)",
            ));
        }
        let cvs = bytes[HEADER_LEN..body_end]
            .chunks_exact(32)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        Ok(Manifest {
            len,
            chunk_size,
            cvs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::tests::seeded_data as data;
    use proptest::prelude::*;

    /// A manifest computed from the bytes, as a store would record it.
    fn manifest_of(bytes: &[u8], cs: u32) -> Manifest {
        crate::testing::MemorySource::manifest_of(bytes, cs)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trip_and_root(shift in 16u32..=18, chunks in 0u64..7, extra in 0u64..(1 << 18), seed: u32) {
            let cs = 1u32 << shift;
            // 0 bytes, exactly one chunk, partial last chunks, several chunks.
            let len = (chunks * u64::from(cs) + extra % u64::from(cs)) as usize;
            let bytes = data(len, seed);
            let m = manifest_of(&bytes, cs);
            let encoded = m.encode();
            prop_assert_eq!(encoded.len(), 64 + 32 * m.cvs().len());
            let back = Manifest::decode(&encoded).unwrap();
            prop_assert_eq!(&back, &m);
            let root = blake3::hash(&bytes);
            prop_assert!(back.verify_root(&root).is_ok());
            prop_assert_eq!(back.root(), root);
            // Merging to a coarser chunk size gives what hashing at that
            // size gives.
            let coarse = cs * 2;
            prop_assert_eq!(
                back.cvs_for_chunk_size(coarse).unwrap(),
                manifest_of(&bytes, coarse).cvs().to_vec()
            );
            prop_assert!(back.cvs_for_chunk_size(cs / 2).is_none());
        }
    }

    #[test]
    fn empty_and_one_chunk_objects() {
        for len in [0usize, 1, 65536] {
            let bytes = data(len, 7);
            let m = manifest_of(&bytes, 1 << 16);
            assert_eq!(m.cvs().len(), 1);
            assert_eq!(m.root(), blake3::hash(&bytes));
            assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn tampered_cv_is_refused_as_a_whole() {
        let bytes = data(5 * 65536 + 3, 1);
        let root = blake3::hash(&bytes);
        let mut cvs = manifest_of(&bytes, 65536).cvs().to_vec();
        cvs[2][0] ^= 1;
        // A liar recomputes the checksum: it decodes, but does not verify.
        let liar = Manifest::new(bytes.len() as u64, 65536, cvs).unwrap();
        let decoded = Manifest::decode(&liar.encode()).unwrap();
        let err = decoded.verify_root(&root).unwrap_err();
        assert!(matches!(err, ManifestError::RootMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&root.to_hex().to_string()));
    }

    #[test]
    fn malformed_inputs_are_refused_with_a_reason() {
        let m = manifest_of(&data(3 * 65536, 2), 65536);
        let good = m.encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "shorter"),
            (good[..good.len() - 1].to_vec(), "bytes, but"),
            ([&good[..], &[0]].concat(), "bytes, but"),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                "magic",
            ),
            (
                {
                    let mut b = good.clone();
                    b[8] = 2;
                    b
                },
                "version 2",
            ),
            (
                {
                    let mut b = good.clone();
                    b[10] = 1;
                    b
                },
                "flags",
            ),
            (
                {
                    let mut b = good.clone();
                    b[28] = 1;
                    b
                },
                "reserved",
            ),
            (
                {
                    let mut b = good.clone();
                    b[40] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                {
                    // Chunk size not a power of two (checksum fixed up).
                    let mut b = good[..good.len() - 32].to_vec();
                    b[12..16].copy_from_slice(&65537u32.to_le_bytes());
                    let s = blake3::hash(&b);
                    b.extend_from_slice(s.as_bytes());
                    b
                },
                "chunk size",
            ),
            (
                {
                    // Count that does not fit the length.
                    let mut b = good[..good.len() - 32].to_vec();
                    b[16..24].copy_from_slice(&(10 * 65536u64).to_le_bytes());
                    let s = blake3::hash(&b);
                    b.extend_from_slice(s.as_bytes());
                    b
                },
                "needs 10",
            ),
        ];
        for (bytes, want) in cases {
            let err = Manifest::decode(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
            assert!(err.starts_with("malformed manifest"), "{err}");
        }
    }
}
