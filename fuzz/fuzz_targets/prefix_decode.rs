//! Arbitrary bytes as an object's `prefix` file (the saved SHA-2 state of
//! its completed prefix): decoding must never panic, and what it accepts
//! re-encodes to the same bytes and lies inside the object.
//!
//! Random bytes almost never carry a valid checksum or the object's data
//! id, so the first input byte chooses what is made right before the
//! decode, each bit on its own: bit 0 appends the BLAKE3 checksum of the
//! rest, bit 1 takes the object's data id from the file (as if the file
//! were this object's), bit 2 writes the prefix length the chunk count
//! implies. Two more bytes choose the object: its length (in chunks) and
//! its chunk size, so the "past the end" and alignment checks are reached.
#![no_main]

use cache_core::index::IndexHeader;
use libfuzzer_sys::fuzz_target;

/// Offsets in the file (see the format table in `fill/prefix.rs`).
const DATA_ID: std::ops::Range<usize> = 12..28;
const CHUNKS: std::ops::Range<usize> = 28..32;
const BYTES: std::ops::Range<usize> = 36..44;

fuzz_target!(|data: &[u8]| {
    let [mode, chunks, shift, rest @ ..] = data else {
        return;
    };
    let chunk_size = 1u32 << (12 + u32::from(shift % 9)); // 4 KiB ..= 1 MiB
    let mut header = IndexHeader {
        len: u64::from(*chunks) * u64::from(chunk_size) + u64::from(*shift),
        chunk_size,
        data_id: [0; 16],
        source: "fuzz".into(),
        validator: String::new(),
        expected: None,
        created_unix: 0,
    };
    let mut file = rest.to_vec();
    if mode & 2 != 0 && file.len() >= DATA_ID.end {
        header.data_id.copy_from_slice(&file[DATA_ID]);
    }
    if mode & 4 != 0 && file.len() >= BYTES.end {
        let n = u32::from_le_bytes(file[CHUNKS].try_into().expect("4 bytes"));
        let bytes = u64::from(n) * u64::from(chunk_size);
        file[BYTES].copy_from_slice(&bytes.to_le_bytes());
    }
    if mode & 1 != 0 {
        let sum = blake3::hash(&file);
        file.extend_from_slice(sum.as_bytes());
    }
    if let Some(again) = cache_core::prefix_file_reencode(&file, &header) {
        assert_eq!(again, file, "an accepted file must be canonical");
    }
});
