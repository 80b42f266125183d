//! Unit tests of the index format and recovery. Property tests against an
//! in-memory model live in `tests/index.rs`.

use std::fs::OpenOptions;
use std::io::Write;

use super::*;

const CS: u32 = 64 * 1024;

fn header(len: u64) -> IndexHeader {
    IndexHeader {
        len,
        chunk_size: CS,
        data_id: *b"0123456789abcdef",
        source: "https://example.com/images/big.vhdx".into(),
        validator: "\"etag-1\"".into(),
        expected: Some([7; 32]),
        created_unix: 1_700_000_000,
    }
}

fn cv(i: u32) -> [u8; 32] {
    let mut c = [0u8; 32];
    c[..4].copy_from_slice(&i.to_le_bytes());
    c[31] = 0xAB;
    c
}

fn chunks(range: Range<u32>) -> Vec<Record> {
    range
        .map(|i| Record::Chunk {
            index: i,
            cv: cv(i),
        })
        .collect()
}

fn state_of(records: &[Record], chunk_count: u32) -> IndexState {
    let mut s = IndexState::default();
    for r in records {
        s.apply(r, chunk_count);
    }
    s
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn setup(len: u64, records: &[Record]) -> (tempfile::TempDir, PathBuf, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obj.idx");
    let mut w = IndexWriter::create(&path, &header(len)).unwrap();
    let header_len = w.log_len();
    w.append(records).unwrap();
    (dir, path, header_len)
}

#[test]
fn header_helpers() {
    let mut h = header(0);
    assert_eq!(h.chunk_count(), 1);
    assert_eq!(h.chunk_range(0), 0..0);
    h.len = 1;
    assert_eq!(h.chunk_count(), 1);
    h.len = u64::from(CS);
    assert_eq!(h.chunk_count(), 1);
    h.len = u64::from(CS) + 1;
    assert_eq!(h.chunk_count(), 2);
    assert_eq!(h.chunk_range(1), u64::from(CS)..u64::from(CS) + 1);
    assert_eq!(h.chunk_range(5), h.len..h.len);
    assert_eq!(h.data_file_name(), "data-30313233343536373839616263646566");
    // Unvalidated nonsense must not panic.
    h.chunk_size = 0;
    assert_eq!(h.chunk_count(), 1);
    let _ = h.chunk_range(u32::MAX);
    h.chunk_size = MIN_CHUNK_SIZE;
    h.len = u64::MAX;
    assert_eq!(h.chunk_count(), u32::MAX);
    let _ = h.chunk_range(u32::MAX);
}

#[test]
fn round_trip() {
    let len = 10 * u64::from(CS) + 5;
    let mut recs = chunks(0..11);
    recs.push(Record::Clear { index: 3 });
    recs.push(Record::Chunk {
        index: 3,
        cv: [9; 32],
    });
    recs.push(Record::Root { hash: [5; 32] });
    let (_d, path, header_len) = setup(len, &recs);
    let (w, h, st, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(h, header(len));
    assert_eq!(st.done.len(), 11);
    assert_eq!(st.root, Some([5; 32]));
    assert_eq!(st, state_of(&recs, 11));
    assert_eq!(
        rec,
        Recovery {
            records: recs.len() as u64,
            dropped_bytes: 0,
            snapshot_used: false
        }
    );
    assert_eq!(w.log_len(), header_len + (recs.len() * RECORD_LEN) as u64);
    let (_r, h2, st2) = IndexReader::open(&path).unwrap();
    assert_eq!((h2, st2), (h, st));
    let cvs = read_cvs(&path).unwrap();
    assert_eq!(cvs.len(), 11);
    assert_eq!(cvs[3], Some([9; 32]));
    assert_eq!(cvs[10], Some(cv(10)));
}

#[test]
fn empty_object_and_empty_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.idx");
    let mut h = header(0);
    h.source = String::new();
    h.validator = String::new();
    h.expected = None;
    let mut w = IndexWriter::create(&path, &h).unwrap();
    w.append(&[
        Record::Chunk {
            index: 0,
            cv: [1; 32],
        },
        Record::Root { hash: [1; 32] },
    ])
    .unwrap();
    let (_, h2, st, _) = IndexWriter::open(&path).unwrap();
    assert_eq!(h2, h);
    assert_eq!(st.root, Some([1; 32]));
}

#[test]
fn long_source_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = header(1);
    h.source = "u".repeat(64 * 1024);
    h.validator = "v".repeat(64 * 1024);
    let p = dir.path().join("long.idx");
    IndexWriter::create(&p, &h).unwrap();
    assert_eq!(IndexWriter::open(&p).unwrap().1, h);
    h.source.push('x');
    let err = IndexWriter::create(&dir.path().join("too.idx"), &h)
        .err()
        .unwrap();
    assert!(err.to_string().contains("too.idx"), "{err}");
    let mut h = header(1);
    h.chunk_size = 3 * 65536;
    assert!(IndexWriter::create(&dir.path().join("cs.idx"), &h).is_err());
}

#[test]
fn create_refuses_existing_file() {
    let (_d, path, _) = setup(1, &[]);
    let err = IndexWriter::create(&path, &header(1)).err().unwrap();
    assert!(matches!(err, IndexError::Io { .. }));
    assert!(err.to_string().contains("obj.idx"));
}

#[test]
fn append_refuses_out_of_range_chunk() {
    let (_d, path, _) = setup(2 * u64::from(CS), &[]);
    let (mut w, ..) = IndexWriter::open(&path).unwrap();
    assert!(w
        .append(&[
            Record::Chunk {
                index: 0,
                cv: [0; 32]
            },
            Record::Clear { index: 2 }
        ])
        .is_err());
    // Nothing of the refused batch was written.
    let (_, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(rec.records, 0);
    assert!(st.done.is_empty());
}

#[test]
fn root_rules() {
    let cc = 3;
    let mut s = IndexState::default();
    assert!(
        !s.apply(&Record::Root { hash: [1; 32] }, cc),
        "root with chunks missing"
    );
    for r in chunks(0..3) {
        s.apply(&r, cc);
    }
    assert!(s.apply(&Record::Root { hash: [1; 32] }, cc));
    assert_eq!(s.root, Some([1; 32]));
    s.apply(&Record::Clear { index: 1 }, cc);
    assert_eq!(s.root, None);
    s.apply(
        &Record::Chunk {
            index: 1,
            cv: [0; 32],
        },
        cc,
    );
    assert_eq!(s.root, None);
    s.apply(&Record::Root { hash: [2; 32] }, cc);
    s.apply(
        &Record::Chunk {
            index: 2,
            cv: [0; 32],
        },
        cc,
    );
    assert_eq!(s.root, None, "a rewritten chunk unsets the root");
    assert!(!s.apply(
        &Record::Chunk {
            index: 3,
            cv: [0; 32]
        },
        cc
    ));
}

/// Torn tail at every byte of the last record: the valid prefix survives,
/// the partial record is truncated away, nothing panics.
#[test]
fn torn_tail_every_offset() {
    let recs = chunks(0..4);
    let (_d, path, header_len) = setup(4 * u64::from(CS), &recs);
    let full = std::fs::read(&path).unwrap();
    let last_start = header_len as usize + 3 * RECORD_LEN;
    for cut in last_start..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (_r, _, rst) = IndexReader::open(&path).unwrap();
        let (_w, _, st, rec) = IndexWriter::open(&path).unwrap();
        assert_eq!(st, state_of(&recs[..3], 4), "cut at {cut}");
        assert_eq!(rst, st);
        assert_eq!(rec.records, 3);
        assert_eq!(rec.dropped_bytes, (cut - last_start) as u64);
        assert_eq!(file_len(&path), last_start as u64, "tail truncated");
    }
}

/// A flipped byte anywhere in a record drops it and everything after it,
/// even the valid records that follow.
#[test]
fn flipped_byte_drops_record_and_rest() {
    let recs = chunks(0..5);
    let (_d, path, header_len) = setup(5 * u64::from(CS), &recs);
    let full = std::fs::read(&path).unwrap();
    let bad = 2usize;
    let start = header_len as usize + bad * RECORD_LEN;
    for off in start..start + RECORD_LEN {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut b = full.clone();
            b[off] ^= mask;
            std::fs::write(&path, &b).unwrap();
            assert_eq!(read_cvs(&path).unwrap()[bad], None);
            let (_w, _, st, rec) = IndexWriter::open(&path).unwrap();
            assert_eq!(st, state_of(&recs[..bad], 5), "flip at {off}");
            assert_eq!(rec.records, bad as u64);
            assert_eq!(rec.dropped_bytes, (full.len() - start) as u64);
            assert_eq!(file_len(&path), start as u64);
        }
    }
}

#[test]
fn record_from_other_index_is_rejected() {
    let recs = chunks(0..2);
    let (_d, path, _) = setup(2 * u64::from(CS), &recs);
    let dir2 = tempfile::tempdir().unwrap();
    let other = dir2.path().join("other.idx");
    let mut h = header(2 * u64::from(CS));
    h.data_id = [0xEE; 16];
    let mut w = IndexWriter::create(&other, &h).unwrap();
    let hl = w.log_len() as usize;
    w.append(&chunks(0..1)).unwrap();
    let foreign = std::fs::read(&other).unwrap()[hl..hl + RECORD_LEN].to_vec();
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&foreign)
        .unwrap();
    let (_, _, _, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(rec.records, 2);
    assert_eq!(rec.dropped_bytes, RECORD_LEN as u64);
}

#[test]
fn garbled_header_is_corrupt() {
    let (_d, path, header_len) = setup(3 * u64::from(CS), &chunks(0..2));
    let full = std::fs::read(&path).unwrap();
    for off in 0..header_len as usize {
        let mut b = full.clone();
        b[off] ^= 0x40;
        std::fs::write(&path, &b).unwrap();
        for res in [
            IndexWriter::open(&path).map(|_| ()),
            IndexReader::open(&path).map(|_| ()),
            read_cvs(&path).map(|_| ()),
        ] {
            match res {
                Err(IndexError::Corrupt { path: p, detail }) => {
                    assert_eq!(p, path);
                    assert!(!detail.is_empty());
                }
                other => panic!(
                    "flip at {off}: expected Corrupt, got {:?}",
                    other.map(|_| ())
                ),
            }
        }
        // Never truncated: a corrupt header means we do not understand the file.
        assert_eq!(std::fs::read(&path).unwrap(), b);
    }
    // Header cut short (crash during create) and empty file.
    for cut in [0, 5, 16, header_len as usize - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        assert!(
            matches!(IndexWriter::open(&path), Err(IndexError::Corrupt { .. })),
            "cut {cut}"
        );
    }
    std::fs::write(&path, b"not an index at all, just some text bytes").unwrap();
    let e = IndexReader::open(&path).err().unwrap();
    assert!(e.to_string().contains("magic"), "{e}");
}

#[test]
fn missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.idx");
    let e = IndexWriter::open(&p).err().unwrap();
    assert!(e.to_string().contains("nope.idx"), "{e}");
}

#[test]
fn snapshot_used_and_stale_snapshot_replays_rest() {
    let n = 20;
    let (_d, path, _) = setup(u64::from(n) * u64::from(CS), &chunks(0..10));
    let (mut w, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    w.snapshot(&st).unwrap();
    let (_, _, st2, rec2) = IndexWriter::open(&path).unwrap();
    assert!(rec2.snapshot_used);
    assert_eq!(st2, st);
    assert_eq!(rec2.records, 10);

    // Records after the snapshot are replayed on top of it.
    let (mut w, _, mut st, _) = IndexWriter::open(&path).unwrap();
    let more = [
        Record::Clear { index: 2 },
        Record::Chunk {
            index: 15,
            cv: [3; 32],
        },
    ];
    w.append(&more).unwrap();
    for r in &more {
        st.apply(r, n);
    }
    let (_, _, st3, rec3) = IndexWriter::open(&path).unwrap();
    assert!(rec3.snapshot_used);
    assert_eq!(st3, st);
    assert_eq!(rec3.records, 12);
    let (_, _, rst) = IndexReader::open(&path).unwrap();
    assert_eq!(rst, st);
}

#[test]
fn snapshot_of_complete_object_keeps_root() {
    let mut recs = chunks(0..3);
    recs.push(Record::Root { hash: [8; 32] });
    let (_d, path, _) = setup(3 * u64::from(CS), &recs);
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    let (_, _, st2, rec) = IndexWriter::open(&path).unwrap();
    assert!(rec.snapshot_used);
    assert_eq!(st2.root, Some([8; 32]));
}

#[test]
fn snapshot_refuses_inconsistent_state() {
    let (_d, path, _) = setup(2 * u64::from(CS), &[]);
    let (mut w, ..) = IndexWriter::open(&path).unwrap();
    let mut s = IndexState::default();
    s.done.insert(2);
    assert!(w.snapshot(&s).is_err());
    let s = IndexState {
        done: RoaringBitmap::new(),
        root: Some([0; 32]),
    };
    assert!(w.snapshot(&s).is_err());
}

#[test]
fn corrupt_snapshot_is_ignored_and_removed() {
    let (_d, path, _) = setup(8 * u64::from(CS), &chunks(0..6));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    let snap = snapshot::snap_path(&path);
    let good = std::fs::read(&snap).unwrap();
    for off in (0..good.len()).step_by(7).chain([good.len() - 1]) {
        let mut b = good.clone();
        b[off] ^= 0x10;
        std::fs::write(&snap, &b).unwrap();
        let (_, _, rst) = IndexReader::open(&path).unwrap();
        assert_eq!(rst, st);
        assert!(snap.exists(), "the reader never deletes");
        let (_, _, st2, rec) = IndexWriter::open(&path).unwrap();
        assert!(!rec.snapshot_used, "flip at {off}");
        assert_eq!(st2, st);
        assert!(!snap.exists(), "writer removes an untrusted snapshot");
    }
    // Truncated snapshot.
    std::fs::write(&snap, &good[..good.len() / 2]).unwrap();
    assert!(!IndexWriter::open(&path).unwrap().3.snapshot_used);
}

#[test]
fn snapshot_beyond_log_is_ignored() {
    // Snapshot covers 6 records, then the log loses its last 2 (e.g. the
    // disk lied about durability): the snapshot must not be trusted.
    let (_d, path, header_len) = setup(8 * u64::from(CS), &chunks(0..6));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    let cut = header_len + 4 * RECORD_LEN as u64;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (mut w, _, st2, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(st2, state_of(&chunks(0..4), 8));
    // Regrow the log past the old covered length with different records:
    // the old snapshot (now deleted anyway) must not come back.
    w.append(&[
        Record::Clear { index: 0 },
        Record::Clear { index: 1 },
        Record::Clear { index: 2 },
    ])
    .unwrap();
    let (_, _, st3, rec3) = IndexWriter::open(&path).unwrap();
    assert!(!rec3.snapshot_used);
    assert_eq!(st3.done.iter().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn snapshot_of_regrown_log_is_ignored_by_reader() {
    // Same as above but the stale snapshot file is put back by hand, so
    // only the last-record binding can catch it.
    let (_d, path, header_len) = setup(8 * u64::from(CS), &chunks(0..6));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    let snap = snapshot::snap_path(&path);
    let saved = std::fs::read(&snap).unwrap();
    drop(w);
    let cut = header_len + 4 * RECORD_LEN as u64;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (mut w, ..) = IndexWriter::open(&path).unwrap();
    w.append(&[Record::Clear { index: 0 }, Record::Clear { index: 1 }])
        .unwrap();
    std::fs::write(&snap, &saved).unwrap();
    let (_, _, rst) = IndexReader::open(&path).unwrap();
    let (_, _, st3, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(rst, st3);
    assert_eq!(st3.done.iter().collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn snapshot_of_other_index_is_ignored() {
    let (_d, path, _) = setup(4 * u64::from(CS), &chunks(0..2));
    let dir2 = tempfile::tempdir().unwrap();
    let other = dir2.path().join("other.idx");
    let mut h = header(4 * u64::from(CS));
    h.data_id = [1; 16];
    let mut w2 = IndexWriter::create(&other, &h).unwrap();
    w2.append(&chunks(0..2)).unwrap();
    w2.snapshot(&state_of(&chunks(0..2), 4)).unwrap();
    std::fs::copy(snapshot::snap_path(&other), snapshot::snap_path(&path)).unwrap();
    let (_, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(st, state_of(&chunks(0..2), 4));
}

#[test]
fn create_removes_stale_snapshot() {
    let (d, path, _) = setup(4 * u64::from(CS), &chunks(0..2));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    drop(w);
    std::fs::remove_file(&path).unwrap();
    IndexWriter::create(&path, &header(4 * u64::from(CS))).unwrap();
    assert!(!snapshot::snap_path(&path).exists());
    drop(d);
}

#[test]
fn reader_polls_incrementally() {
    let n = 10;
    let (_d, path, _) = setup(u64::from(n) * u64::from(CS), &chunks(0..2));
    let (mut r, _, mut rst) = IndexReader::open(&path).unwrap();
    assert_eq!(rst.done.len(), 2);
    assert!(r.poll().unwrap().is_empty());
    let (mut w, ..) = IndexWriter::open(&path).unwrap();
    w.append(&chunks(2..5)).unwrap();
    let got = r.poll().unwrap();
    assert_eq!(got, chunks(2..5));
    assert!(r.poll().unwrap().is_empty());

    // A record caught mid-write: the reader waits for it, no error.
    let rec = format::encode_record(
        &Record::Chunk {
            index: 7,
            cv: cv(7),
        },
        &header(0).data_id,
    );
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&rec[..20]).unwrap();
    assert!(r.poll().unwrap().is_empty());
    f.write_all(&rec[20..]).unwrap();
    assert_eq!(
        r.poll().unwrap(),
        vec![Record::Chunk {
            index: 7,
            cv: cv(7)
        }]
    );

    // A garbled record stops the batch; it is retried (still garbled here).
    let mut bad = format::encode_record(&Record::Clear { index: 1 }, &header(0).data_id);
    bad[45] ^= 1;
    f.write_all(&bad).unwrap();
    assert!(r.poll().unwrap().is_empty());
    assert!(r.poll().unwrap().is_empty());
    drop(w);

    // The writer reopens, drops the garbage and continues; the reader
    // picks up from where it was.
    let (mut w, _, wst, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(rec.dropped_bytes, RECORD_LEN as u64);
    w.append(&[Record::Clear { index: 0 }]).unwrap();
    assert_eq!(r.poll().unwrap(), vec![Record::Clear { index: 0 }]);
    for rr in chunks(2..5).iter().chain(&[
        Record::Chunk {
            index: 7,
            cv: cv(7),
        },
        Record::Clear { index: 0 },
    ]) {
        rst.apply(rr, n);
    }
    let mut expect = wst;
    expect.apply(&Record::Clear { index: 0 }, n);
    assert_eq!(rst, expect);
}

#[test]
fn writer_appends_after_truncated_tail() {
    let recs = chunks(0..3);
    let (_d, path, _) = setup(4 * u64::from(CS), &recs);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0xAA; 30])
        .unwrap();
    let (mut w, _, _, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(rec.dropped_bytes, 30);
    w.append(&[Record::Chunk {
        index: 3,
        cv: cv(3),
    }])
    .unwrap();
    let (_, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert_eq!(rec.records, 4);
    assert_eq!(rec.dropped_bytes, 0);
    assert_eq!(st.done.len(), 4);
}

#[test]
fn open_replayed_never_marks_a_chunk_done_without_its_cv() {
    let (_d, path, header_len) = setup(8 * u64::from(CS), &chunks(0..8));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    drop(w);
    // Damage record 2, under the snapshot.
    let at = header_len + 2 * RECORD_LEN as u64 + 40;
    let mut b = std::fs::read(&path).unwrap();
    b[at as usize] ^= 1;
    std::fs::write(&path, &b).unwrap();
    // The snapshot still matches the log's end, so a plain open trusts it.
    assert_eq!(IndexReader::open(&path).unwrap().2.done.len(), 8);

    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert_eq!(replayed.state, state_of(&chunks(0..2), 8));
    let expected: Vec<_> = (0..8).map(|i| (i < 2).then(|| cv(i))).collect();
    assert_eq!(replayed.cvs, expected);
    for c in 0..8 {
        assert_eq!(
            replayed.state.done.contains(c),
            replayed.cvs[c as usize].is_some()
        );
    }
    assert_eq!(rec.dropped_bytes, 6 * RECORD_LEN as u64, "cut at record 2");
    assert_eq!(file_len(&path), header_len + 2 * RECORD_LEN as u64);
    assert!(
        !snapshot::snap_path(&path).exists(),
        "the stale snapshot is gone"
    );
    // Durably: every later open agrees.
    assert_eq!(IndexReader::open(&path).unwrap().2, replayed.state);
}

fn binding_of(path: &Path) -> snapshot::Binding {
    let file = File::open(path).unwrap();
    read_head(&file, path).unwrap().binding()
}

/// A version 1 snapshot of `state` covering the first `records` records
/// of the log at `path` (bound to its last covered record).
fn v1_snapshot(path: &Path, header_len: u64, records: u64, state: &IndexState) -> Vec<u8> {
    let mut raw = [0u8; RECORD_LEN];
    let file = File::open(path).unwrap();
    read_full_at(
        &file,
        &mut raw,
        header_len + (records - 1) * RECORD_LEN as u64,
    )
    .unwrap();
    let last = format::record_checksum(&raw);
    let covered = header_len + records * RECORD_LEN as u64;
    snapshot::encode_v1(&binding_of(path), covered, last, state)
}

/// Rewrites `<path>.snap` with its body changed by `edit` and a valid
/// checksum again (what a writer with other ideas would have written).
fn rewrite_snapshot(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let snap = snapshot::snap_path(path);
    let mut b = std::fs::read(&snap).unwrap();
    b.truncate(b.len() - 32);
    edit(&mut b);
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    std::fs::write(&snap, &b).unwrap();
}

#[test]
fn open_replayed_reads_the_records_under_a_digest_snapshot_in_bulk() {
    let n = 20;
    let (_d, path, _) = setup(u64::from(n) * u64::from(CS), &chunks(0..10));
    let mut log = chunks(0..10);
    // A writer that replayed the whole log knows the records digest.
    let (mut w, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used, "no snapshot yet");
    w.snapshot(&replayed.state).unwrap();
    let more = [
        Record::Clear { index: 2 },
        Record::Chunk {
            index: 15,
            cv: [3; 32],
        },
    ];
    w.append(&more).unwrap();
    log.extend(more);
    drop(w);
    let (mut w, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(rec.snapshot_used);
    assert_eq!(rec.records, 12);
    assert_eq!(replayed.state, state_of(&log, n));
    let mut expect: Vec<_> = (0..n).map(|i| (i < 10 && i != 2).then(|| cv(i))).collect();
    expect[15] = Some([3; 32]);
    assert_eq!(replayed.cvs, expect);
    assert_eq!(read_cvs(&path).unwrap(), expect);
    // And it keeps the digest going: its own snapshot is used the same way.
    w.snapshot(&replayed.state).unwrap();
    w.append(&[Record::Clear { index: 15 }]).unwrap();
    drop(w);
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(rec.snapshot_used);
    expect[15] = None;
    assert_eq!(replayed.cvs, expect);
}

#[test]
fn a_snapshot_of_an_empty_log_carries_a_digest_too() {
    let (_d, path, _) = setup(4 * u64::from(CS), &[]);
    let (mut w, _, replayed, _) = IndexWriter::open_replayed(&path).unwrap();
    w.snapshot(&replayed.state).unwrap();
    w.append(&chunks(0..2)).unwrap();
    drop(w);
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(rec.snapshot_used);
    assert_eq!(replayed.cvs, vec![Some(cv(0)), Some(cv(1)), None, None]);
}

#[test]
fn a_writer_opened_on_a_snapshot_writes_snapshots_without_a_digest() {
    let (_d, path, _) = setup(8 * u64::from(CS), &chunks(0..4));
    let (mut w, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    w.snapshot(&st).unwrap();
    drop(w);
    // This one did not read the records under the snapshot: it cannot
    // vouch for them.
    let (mut w, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert!(rec.snapshot_used);
    w.append(&chunks(4..5)).unwrap();
    let mut st = st;
    st.apply(&chunks(4..5)[0], 8);
    w.snapshot(&st).unwrap();
    drop(w);
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used, "no digest: every record checked");
    assert_eq!(replayed.state, st);
    assert!(
        snapshot::snap_path(&path).exists(),
        "a snapshot without a digest is still good for readers"
    );
}

#[test]
fn version_1_snapshots_are_still_read() {
    let n = 8;
    let (_d, path, header_len) = setup(u64::from(n) * u64::from(CS), &chunks(0..6));
    let st = state_of(&chunks(0..6), n);
    let v1 = v1_snapshot(&path, header_len, 6, &st);
    assert_eq!(u16::from_le_bytes([v1[8], v1[9]]), 1);
    std::fs::write(snapshot::snap_path(&path), &v1).unwrap();
    {
        let mut w = IndexWriter::open(&path).unwrap().0;
        w.append(&[Record::Clear { index: 1 }]).unwrap();
    }
    let mut expect = st.clone();
    expect.apply(&Record::Clear { index: 1 }, n);
    // Readers and plain writers use it as before.
    assert_eq!(IndexReader::open(&path).unwrap().2, expect);
    let (_, _, wst, rec) = IndexWriter::open(&path).unwrap();
    assert!(rec.snapshot_used);
    assert_eq!(wst, expect);
    // The filler's open checks every record (no digest) and keeps it.
    let (mut w, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(replayed.state, expect);
    assert_eq!(
        replayed.cvs,
        (0..n)
            .map(|i| (i < 6 && i != 1).then(|| cv(i)))
            .collect::<Vec<_>>()
    );
    assert!(snapshot::snap_path(&path).exists());
    // Its next snapshot is version 2, with the digest.
    w.snapshot(&replayed.state).unwrap();
    let v2 = std::fs::read(snapshot::snap_path(&path)).unwrap();
    assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), 2);
    drop(w);
    assert!(IndexWriter::open_replayed(&path).unwrap().3.snapshot_used);
}

#[test]
fn a_rewritten_record_under_a_digest_snapshot_is_caught() {
    // Record 3 replaced by another *valid* record (its own checksum is
    // right): only the records digest can tell.
    let (_d, path, header_len) = setup(8 * u64::from(CS), &chunks(0..6));
    let (mut w, _, replayed, _) = IndexWriter::open_replayed(&path).unwrap();
    w.snapshot(&replayed.state).unwrap();
    drop(w);
    let other = Record::Chunk {
        index: 3,
        cv: [0xEE; 32],
    };
    let raw = format::encode_record(&other, &header(0).data_id);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    crate::platform::pwrite_all(&f, &raw, header_len + 3 * RECORD_LEN as u64).unwrap();
    drop(f);
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used, "the digest does not match: full replay");
    assert_eq!(rec.records, 6);
    assert_eq!(replayed.cvs[3], Some([0xEE; 32]), "what the log says now");
    assert!(
        !snapshot::snap_path(&path).exists(),
        "a snapshot that disagrees with its records is removed"
    );
}

#[test]
fn a_digest_snapshot_with_another_state_is_not_used_for_cvs() {
    // The digest matches but the bitmap does not (a caller bug): the log
    // wins and the snapshot goes.
    let (_d, path, _) = setup(8 * u64::from(CS), &chunks(0..4));
    let (mut w, _, replayed, _) = IndexWriter::open_replayed(&path).unwrap();
    let mut wrong = replayed.state.clone();
    wrong.done.remove(1);
    w.snapshot(&wrong).unwrap();
    drop(w);
    let (_, _, got, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(got.state, replayed.state);
    assert_eq!(got.cvs[1], Some(cv(1)));
    assert!(!snapshot::snap_path(&path).exists());
}

#[test]
fn a_digest_without_its_flag_is_refused() {
    let (_d, path, _) = setup(4 * u64::from(CS), &chunks(0..2));
    let (mut w, _, replayed, _) = IndexWriter::open_replayed(&path).unwrap();
    w.snapshot(&replayed.state).unwrap();
    drop(w);
    rewrite_snapshot(&path, |b| b[10] &= !2);
    let (_, _, st, rec) = IndexWriter::open(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(st, replayed.state);
    assert!(!snapshot::snap_path(&path).exists());
}

#[test]
fn open_replayed_removes_a_snapshot_without_a_digest_that_the_records_contradict() {
    // A well-formed, checksummed snapshot that fits the log's end but says
    // chunk 7 is done where the records say chunks 0..6 (what a writer
    // with other ideas, or a damaged snapshot rewritten in full, leaves).
    // Plain opens cannot tell; the filler's full replay can, and what it
    // finds must hold for every later open.
    let n = 8;
    let (_d, path, header_len) = setup(u64::from(n) * u64::from(CS), &chunks(0..6));
    let mut lie = state_of(&chunks(0..6), n);
    lie.apply(
        &Record::Chunk {
            index: 7,
            cv: cv(7),
        },
        n,
    );
    let v1 = v1_snapshot(&path, header_len, 6, &lie);
    std::fs::write(snapshot::snap_path(&path), &v1).unwrap();
    assert_eq!(
        IndexReader::open(&path).unwrap().2,
        lie,
        "trusted as it fits"
    );

    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(replayed.state, state_of(&chunks(0..6), n));
    assert!(
        !snapshot::snap_path(&path).exists(),
        "the contradicted snapshot is gone"
    );
    assert_eq!(IndexReader::open(&path).unwrap().2, replayed.state);
}

#[test]
fn open_replayed_keeps_a_snapshot_without_a_digest_that_the_records_confirm() {
    let n: u32 = 8;
    let (_d, path, _) = setup(u64::from(n) * u64::from(CS), &chunks(0..4));
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    drop(w);
    // Opened on the snapshot: its own snapshot carries no digest.
    let (mut w, _, st, _) = IndexWriter::open(&path).unwrap();
    w.snapshot(&st).unwrap();
    drop(w);
    let (_, _, replayed, rec) = IndexWriter::open_replayed(&path).unwrap();
    assert!(!rec.snapshot_used);
    assert_eq!(replayed.state, st);
    assert!(snapshot::snap_path(&path).exists());
}
