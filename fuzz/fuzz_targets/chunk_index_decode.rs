//! Arbitrary bytes as an index file (and snapshot): opening must never
//! panic, reader and writer must agree, accepted chunks are in range,
//! decode → snapshot → reopen gives the same state, and the filler's open
//! (`open_replayed`) marks a chunk done exactly when it has its CV, reading
//! the records under a snapshot in bulk exactly when the snapshot carries
//! their digest.
//!
//! Random bytes almost never carry a valid header or record checksum, so
//! besides raw files the input can describe a real index (built with the
//! public writer API) that is then damaged byte by byte: that is what
//! reaches the replay and snapshot logic.
#![no_main]

mod common;

use cache_core::index::{read_cvs, IndexError, IndexReader, IndexWriter, Record};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Rec {
    Chunk(u8, u8),
    Clear(u8),
    Root(u8),
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// Flip bits of the index file at a position (modulo its length).
    Flip(u32, u8),
    /// Cut the index file at a position (modulo its length + 1).
    Cut(u32),
    /// Flip bits of the snapshot file.
    SnapFlip(u32, u8),
    /// Append raw bytes to the index file.
    Append(Vec<u8>),
    /// Rewrite a version 2 snapshot in the version 1 layout (older builds:
    /// no records digest), validly.
    Downgrade,
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// The whole index file.
    Raw(Vec<u8>),
    /// A valid index built from records, optionally snapshotted after some
    /// of them, then damaged.
    Built {
        chunks: u8,
        records: Vec<Rec>,
        snapshot_after: Option<u8>,
        damage: Vec<Damage>,
    },
}

fn build(path: &std::path::Path, chunks: u8, records: &[Rec], snapshot_after: Option<u8>) {
    let cc = u32::from(chunks).max(1);
    let h = common::header(cc);
    let mut w = IndexWriter::create(path, &h).expect("create");
    let mut log = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let rec = match *r {
            Rec::Chunk(c, v) => Record::Chunk {
                index: u32::from(c) % cc,
                cv: [v; 32],
            },
            Rec::Clear(c) => Record::Clear {
                index: u32::from(c) % cc,
            },
            Rec::Root(v) => Record::Root { hash: [v; 32] },
        };
        w.append(&[rec]).expect("append");
        log.push(rec);
        if snapshot_after == Some(i as u8) {
            w.snapshot(&common::state_of(&log, cc)).expect("snapshot");
        }
    }
}

fn flip(path: &std::path::Path, pos: u32, mask: u8) {
    if let Ok(mut b) = std::fs::read(path) {
        if !b.is_empty() {
            let i = pos as usize % b.len();
            b[i] ^= mask;
            std::fs::write(path, &b).expect("write");
        }
    }
}

fn snap_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".snap");
    s.into()
}

/// A version 2 snapshot (flags at 10, records digest at 112..144, bitmap
/// length at 144) as version 1 (no digest, bitmap length at 112), with its
/// checksum redone. Anything else is left alone.
fn downgrade(path: &std::path::Path) {
    let snap = snap_path(path);
    let Ok(b) = std::fs::read(&snap) else { return };
    if b.len() < 152 + 32 || b[8..10] != 2u16.to_le_bytes() {
        return;
    }
    let body = &b[..b.len() - 32];
    let mut v = Vec::with_capacity(body.len());
    v.extend_from_slice(&body[..8]);
    v.extend_from_slice(&1u16.to_le_bytes());
    let flags = u16::from_le_bytes([body[10], body[11]]) & 1;
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&body[12..112]);
    v.extend_from_slice(&body[144..]);
    let sum = blake3::hash(&v);
    v.extend_from_slice(sum.as_bytes());
    std::fs::write(&snap, &v).expect("write");
}

fuzz_target!(|input: Input| {
    let path = common::fresh_path("decode.idx");
    match &input {
        Input::Raw(bytes) => std::fs::write(&path, bytes).expect("write"),
        Input::Built {
            chunks,
            records,
            snapshot_after,
            damage,
        } => {
            if records.len() > 256 || damage.len() > 16 {
                return;
            }
            build(&path, *chunks, records, *snapshot_after);
            for d in damage {
                match d {
                    Damage::Flip(p, m) => flip(&path, *p, *m),
                    Damage::SnapFlip(p, m) => flip(&snap_path(&path), *p, *m),
                    Damage::Downgrade => downgrade(&path),
                    Damage::Cut(p) => {
                        let len = std::fs::metadata(&path).expect("stat").len();
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .expect("open");
                        f.set_len(u64::from(*p) % (len + 1)).expect("cut");
                    }
                    Damage::Append(bytes) => {
                        use std::io::Write;
                        let mut f = std::fs::OpenOptions::new()
                            .append(true)
                            .open(&path)
                            .expect("open");
                        f.write_all(bytes).expect("append");
                    }
                }
            }
        }
    }

    // The read-only follower first: it must not change the file.
    let before = std::fs::read(&path).expect("read");
    let reader = IndexReader::open(&path);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "reader modified the file"
    );
    let cvs = read_cvs(&path);

    let (mut w, h, st, rec) = match IndexWriter::open(&path) {
        Ok(x) => x,
        Err(e) => {
            assert!(
                matches!(e, IndexError::Corrupt { .. }),
                "unexpected error {e}"
            );
            assert!(reader.is_err(), "reader accepted what the writer refused");
            assert!(cvs.is_err());
            return;
        }
    };
    let cc = h.chunk_count();
    common::check_state_sane(&st, cc);
    let (_r, rh, rst) = reader.expect("reader refused what the writer accepted");
    assert_eq!(rh, h);
    assert_eq!(rst, st, "reader and writer disagree");
    let cvs = cvs.expect("read_cvs");
    assert_eq!(cvs.len(), cc as usize);
    if !rec.snapshot_used {
        // A full replay: the CV table and the bitmap say the same.
        for (i, cv) in cvs.iter().enumerate() {
            assert_eq!(cv.is_some(), st.done.contains(i as u32), "chunk {i}");
        }
    }
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), w.log_len());

    // decode → snapshot → reopen gives the same state.
    w.snapshot(&st).expect("snapshot");
    drop(w);
    let (w, h2, st2, rec2) = IndexWriter::open(&path).expect("reopen");
    assert_eq!(h2, h);
    assert_eq!(st2, st);
    assert!(rec2.snapshot_used, "fresh snapshot not used");
    assert_eq!(rec2.dropped_bytes, 0);
    assert_eq!(rec2.records, rec.records);
    drop(w);

    // The filler's open. The snapshot just written carries the records
    // digest unless its writer was opened on a snapshot (and so never
    // read the records under it).
    let (_w, h3, replayed, rec3) = IndexWriter::open_replayed(&path).expect("open_replayed");
    assert_eq!(h3, h);
    assert_eq!(replayed.cvs.len(), cc as usize);
    for (i, cv) in replayed.cvs.iter().enumerate() {
        assert_eq!(
            cv.is_some(),
            replayed.state.done.contains(i as u32),
            "chunk {i}"
        );
    }
    common::check_state_sane(&replayed.state, cc);
    assert_eq!(rec3.snapshot_used, !rec.snapshot_used);
    if !rec.snapshot_used {
        // Nothing was taken on trust: the same records, the same answer.
        assert_eq!(replayed.state, st);
        assert_eq!(replayed.cvs, cvs);
        assert_eq!(rec3.records, rec.records);
    }
    // Whatever it found is durable: a later open agrees.
    let (_r, _, rst2) = IndexReader::open(&path).expect("reader after open_replayed");
    assert_eq!(rst2, replayed.state);
});
