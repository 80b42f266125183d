//! BLAKE3 chunk chaining values and the object's root hash.
//!
//! BLAKE3 hashes its input as 1 KiB leaves of a binary tree whose left
//! subtrees are always complete powers of two. With a chunk size that is a
//! power of two >= 1 KiB, every chunk starting at `index * chunk_size` is a
//! complete subtree (only the last one may be short, on the right edge), so
//! its chaining value (CV) depends only on its bytes and its offset. The
//! filler hashes each chunk once as it arrives; the object's hash is then
//! merged from the CVs without re-reading the object (design §4).
//!
//! The one exception is an object of at most one chunk: BLAKE3 has no parent
//! node to merge there, and the root is the plain `blake3::hash(bytes)`, so
//! that is what [`chunk_cv`] returns for such an object and what
//! [`root_from_cvs`] returns for its single "CV".

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode,
};

/// BLAKE3's leaf size. Chunk sizes must be powers of two at least this big.
const BLAKE3_CHUNK_LEN: u32 = 1024;

/// Whether `chunk_size` can be used with [`chunk_cv`] / [`root_from_cvs`].
pub fn valid_chunk_size(chunk_size: u32) -> bool {
    chunk_size >= BLAKE3_CHUNK_LEN && chunk_size.is_power_of_two()
}

/// Number of chunks of an object: `ceil(len / chunk_size)`, and 1 for an
/// empty object (whose single chunk is empty). `None` if `chunk_size` is 0 or
/// the count does not fit in a `u32`.
pub fn chunk_count(object_len: u64, chunk_size: u32) -> Option<u32> {
    if chunk_size == 0 {
        return None;
    }
    let n = object_len.div_ceil(u64::from(chunk_size)).max(1);
    u32::try_from(n).ok()
}

/// The chaining value of chunk `index` of an object of `object_len` bytes
/// stored in chunks of `chunk_size` bytes (a power of two >= 1 KiB).
///
/// `bytes` is the chunk's content (`chunk_size` bytes, or fewer for the last
/// chunk). For an object of at most one chunk this is the root hash itself
/// (`blake3::hash(bytes)`), otherwise the non-root chaining value of the
/// complete subtree the chunk forms at offset `index * chunk_size`.
///
/// # Panics
///
/// On caller bugs only (never on data): when `index` is not a chunk of the
/// object, `bytes.len()` is not that chunk's length, or (for an object of
/// more than one chunk) `chunk_size` is not a power of two >= 1 KiB. A
/// wrong CV would be silently stored and poison the root, so failing loudly
/// is the safer choice; use [`try_chunk_cv`] to get `None` instead.
pub fn chunk_cv(bytes: &[u8], index: u32, chunk_size: u32, object_len: u64) -> [u8; 32] {
    match try_chunk_cv(bytes, index, chunk_size, object_len) {
        Some(cv) => cv,
        None => panic!(
            "chunk_cv: invalid arguments: {} bytes, chunk {index}, chunk size {chunk_size}, object length {object_len}",
            bytes.len()
        ),
    }
}

/// [`chunk_cv`] that returns `None` instead of panicking on arguments that
/// cannot describe a chunk of the object.
pub fn try_chunk_cv(
    bytes: &[u8],
    index: u32,
    chunk_size: u32,
    object_len: u64,
) -> Option<[u8; 32]> {
    if object_len <= u64::from(chunk_size) {
        // Single-chunk object: no parent nodes exist, the chunk is the root.
        if index != 0 || bytes.len() as u64 != object_len {
            return None;
        }
        return Some(*blake3::hash(bytes).as_bytes());
    }
    if !valid_chunk_size(chunk_size) {
        return None;
    }
    let offset = u64::from(index).checked_mul(u64::from(chunk_size))?;
    if offset >= object_len {
        return None;
    }
    // Every chunk is full except the last, which holds the rest: any other
    // length means the caller hashed the wrong bytes.
    let expected_len = (object_len - offset).min(u64::from(chunk_size));
    if bytes.len() as u64 != expected_len {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    // The offset is a multiple of chunk_size, hence of 1 KiB, and the chunk
    // is at most chunk_size long, so it is a valid subtree at that offset.
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    Some(hasher.finalize_non_root())
}

/// The object's BLAKE3 hash, merged from its chunk chaining values along the
/// BLAKE3 tree, without touching the bytes again. `cvs.len()` must equal the
/// object's chunk count (1 for an empty object, whose only "chunk" is empty).
///
/// # Panics
///
/// On caller bugs only: when `cvs.len()` is not the chunk count of
/// `object_len`, or (for a multi-chunk object) `chunk_size` is not a power
/// of two >= 1 KiB. Use [`try_root_from_cvs`] for CV lists from untrusted
/// places (a peer's manifest).
pub fn root_from_cvs(cvs: &[[u8; 32]], chunk_size: u32, object_len: u64) -> blake3::Hash {
    match try_root_from_cvs(cvs, chunk_size, object_len) {
        Some(h) => h,
        None => panic!(
            "root_from_cvs: {} CVs do not describe an object of {object_len} bytes in chunks of {chunk_size}",
            cvs.len()
        ),
    }
}

/// [`root_from_cvs`] that returns `None` instead of panicking when the
/// arguments are inconsistent.
pub fn try_root_from_cvs(
    cvs: &[[u8; 32]],
    chunk_size: u32,
    object_len: u64,
) -> Option<blake3::Hash> {
    let count = chunk_count(object_len, chunk_size)?;
    if cvs.len() != count as usize {
        return None;
    }
    if object_len <= u64::from(chunk_size) {
        // The single "CV" of a one-chunk object is already the root hash.
        return Some(blake3::Hash::from_bytes(cvs[0]));
    }
    if !valid_chunk_size(chunk_size) {
        return None;
    }
    let (left, right) = split(cvs, chunk_size, 0, object_len);
    Some(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The two child CVs of the subtree of `len` bytes starting at byte `start`
/// (`len > chunk_size`). BLAKE3's left child is the largest power of two
/// strictly less than `len` (`left_subtree_len`); since `len > chunk_size`
/// and `chunk_size` is a power of two, that is a multiple of `chunk_size`,
/// so the split always falls on a chunk boundary.
fn split(cvs: &[[u8; 32]], chunk_size: u32, start: u64, len: u64) -> ([u8; 32], [u8; 32]) {
    let left_len = left_subtree_len(len);
    let left = node(cvs, chunk_size, start, left_len);
    let right = node(cvs, chunk_size, start + left_len, len - left_len);
    (left, right)
}

/// The non-root CV of the complete subtree of `len` bytes at byte `start`
/// (`start` a multiple of a power of two >= `len`), merged from the CVs of
/// chunks of `chunk_size`: how a manifest of fine chunks gives the CVs of
/// coarser ones. `cvs` must cover the subtree (callers check the shape).
pub(crate) fn subtree_cv(cvs: &[[u8; 32]], chunk_size: u32, start: u64, len: u64) -> [u8; 32] {
    node(cvs, chunk_size, start, len)
}

/// The non-root CV of the subtree of `len` bytes starting at byte `start`.
/// Recursion depth is log2 of the chunk count, at most 32.
fn node(cvs: &[[u8; 32]], chunk_size: u32, start: u64, len: u64) -> [u8; 32] {
    if len <= u64::from(chunk_size) {
        // In range: the caller checked cvs.len() == chunk count.
        return cvs[(start / u64::from(chunk_size)) as usize];
    }
    let (left, right) = split(cvs, chunk_size, start, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Lower-case hex of `bytes` (names of temp files, digests).
pub(crate) fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic, non-repeating-ish content so misplaced chunks show.
    pub(crate) fn data(len: usize) -> Vec<u8> {
        seeded_data(len, 0)
    }

    /// [`data`] varied by `seed` (0 gives [`data`]).
    pub(crate) fn seeded_data(len: usize, seed: u32) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9 ^ seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn root_via_chunks(bytes: &[u8], cs: u32) -> blake3::Hash {
        let len = bytes.len() as u64;
        let n = chunk_count(len, cs).unwrap();
        let cvs: Vec<[u8; 32]> = (0..n)
            .map(|i| {
                let s = (i as usize) * cs as usize;
                let e = (s + cs as usize).min(bytes.len());
                chunk_cv(&bytes[s..e], i, cs, len)
            })
            .collect();
        root_from_cvs(&cvs, cs, len)
    }

    #[test]
    fn matches_blake3_for_edge_lengths_all_chunk_sizes() {
        for shift in 10..=22 {
            let cs = 1u32 << shift;
            let c = cs as usize;
            let mut lens = vec![0, 1, 1023, 1024, 1025, c - 1, c, c + 1, 2 * c, 3 * c + 7];
            if cs <= 64 * 1024 {
                lens.extend([5 * c - 1, 8 * c, 8 * c + 1, 13 * c + 12345 % c]);
            }
            for len in lens {
                let d = data(len);
                assert_eq!(
                    root_via_chunks(&d, cs),
                    blake3::hash(&d),
                    "cs={cs} len={len}"
                );
            }
        }
    }

    #[test]
    fn matches_blake3_nine_mib_plus() {
        let d = data(9 * 1024 * 1024 + 12345);
        for cs in [1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
            assert_eq!(root_via_chunks(&d, cs), blake3::hash(&d), "cs={cs}");
        }
    }

    #[test]
    fn single_chunk_cv_is_root() {
        let d = data(5000);
        assert_eq!(
            chunk_cv(&d, 0, 64 * 1024, 5000),
            *blake3::hash(&d).as_bytes()
        );
        assert_eq!(
            chunk_cv(&[], 0, 64 * 1024, 0),
            *blake3::hash(&[]).as_bytes()
        );
    }

    #[test]
    fn bad_arguments_give_none_not_garbage() {
        assert_eq!(try_chunk_cv(&[], 1, 1024, 4096), None);
        assert_eq!(try_chunk_cv(&[0; 2048], 1, 1024, 4096), None);
        assert_eq!(try_chunk_cv(&[0; 1024], 1, 1000, 4096), None);
        assert_eq!(try_chunk_cv(&[0; 1024], 9, 1024, 4096), None);
        assert_eq!(
            try_chunk_cv(&[0; 1000], 1, 1024, 4096),
            None,
            "short middle chunk"
        );
        assert_eq!(
            try_chunk_cv(&[0; 1024], 3, 1024, 4000),
            None,
            "long last chunk"
        );
        assert!(try_chunk_cv(&[0; 928], 3, 1024, 4000).is_some());
        assert_eq!(
            try_chunk_cv(&[0; 10], 1, 1024, 10),
            None,
            "single chunk, index 1"
        );
        assert_eq!(
            try_chunk_cv(&[0; 9], 0, 1024, 10),
            None,
            "single chunk, short"
        );
        assert_eq!(try_root_from_cvs(&[[0; 32]; 3], 1024, 4096), None);
        assert_eq!(try_root_from_cvs(&[[0; 32]; 4], 0, 4096), None);
        assert_eq!(try_root_from_cvs(&[[0; 32]; 4], 1000, 4000), None);
        assert_eq!(try_root_from_cvs(&[], 1024, 0), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn prop_root_matches_blake3(shift in 10u32..=16, len in 0usize..300_000) {
            let cs = 1u32 << shift;
            let d = data(len);
            prop_assert_eq!(root_via_chunks(&d, cs), blake3::hash(&d));
        }
    }
}
