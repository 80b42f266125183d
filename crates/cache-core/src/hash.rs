//! BLAKE3 chunk chaining values and the object's root hash.
//!
//! STUB: signatures are the contract; bodies are being written.

/// The chaining value of chunk `index` of an object of `object_len` bytes
/// stored in chunks of `chunk_size` bytes (a power of two >= 1 KiB).
///
/// `bytes` is the chunk's content (`chunk_size` bytes, or fewer for the last
/// chunk). For an object of at most one chunk this is the root hash itself
/// (`blake3::hash(bytes)`), otherwise the non-root chaining value of the
/// complete subtree the chunk forms at offset `index * chunk_size`.
pub fn chunk_cv(bytes: &[u8], index: u32, chunk_size: u32, object_len: u64) -> [u8; 32] {
    let _ = (bytes, index, chunk_size, object_len);
    todo!()
}

/// The object's BLAKE3 hash, merged from its chunk chaining values along the
/// BLAKE3 tree, without touching the bytes again. `cvs.len()` must equal the
/// object's chunk count (1 for an empty object, whose only "chunk" is empty).
pub fn root_from_cvs(cvs: &[[u8; 32]], chunk_size: u32, object_len: u64) -> blake3::Hash {
    let _ = (cvs, chunk_size, object_len);
    todo!()
}
