//! Arbitrary bytes as a manifest: decoding must never panic or allocate by
//! an unchecked count; what it accepts re-encodes to the same bytes, and
//! every query on an accepted manifest (root, verify, regrouping to coarser
//! chunks) works without panicking.
//!
//! Random bytes almost never carry a valid checksum, so the first input
//! byte chooses: even → the rest is the file as is; odd → the rest
//! describes a real manifest (length, chunk size, CV seed) that is then
//! damaged at chosen positions, with the checksum recomputed when bit 1 is
//! set, so the checks behind the checksum are reached too.
#![no_main]

use cache_core::Manifest;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(m) = Manifest::decode(bytes) else {
        return;
    };
    assert_eq!(m.encode(), bytes, "accepted input must be canonical");
    let root = m.root();
    assert!(m.verify_root(&root).is_ok());
    let mut other = *root.as_bytes();
    other[0] ^= 1;
    assert!(m.verify_root(&blake3::Hash::from_bytes(other)).is_err());
    if let Some(coarse) = m.chunk_size().checked_mul(2) {
        if let Some(cvs) = m.cvs_for_chunk_size(coarse) {
            let n = cache_core::hash::chunk_count(m.len(), coarse).unwrap() as usize;
            assert_eq!(cvs.len(), n);
            let regrouped = Manifest::new(m.len(), coarse, cvs);
            if let Ok(r) = regrouped {
                assert_eq!(r.root(), root, "regrouping keeps the root");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest);
        return;
    }
    if rest.len() < 4 {
        return;
    }
    // A real manifest: up to 64 chunks of 64 KiB..=1 MiB.
    let shift = 16 + u32::from(rest[0] % 5);
    let cs = 1u32 << shift;
    let len = u64::from(u16::from_le_bytes([rest[1], rest[2]])) * u64::from(cs) / 1024;
    let seed = rest[3];
    let n = cache_core::hash::chunk_count(len, cs).unwrap();
    let cvs = (0..n).map(|i| [seed ^ i as u8; 32]).collect();
    let Ok(m) = Manifest::new(len, cs, cvs) else {
        return;
    };
    let mut bytes = m.encode();
    // Damage: (position, xor) pairs.
    for pair in rest[4..].chunks_exact(3) {
        if bytes.is_empty() {
            break;
        }
        let pos = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
        bytes[pos] ^= pair[2];
    }
    if rest[4..].len() % 3 == 1 {
        bytes.truncate(bytes.len() / 2);
    }
    if mode & 2 != 0 && bytes.len() >= 32 {
        let body = bytes.len() - 32;
        let sum = blake3::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(sum.as_bytes());
    }
    check(&bytes);
});
