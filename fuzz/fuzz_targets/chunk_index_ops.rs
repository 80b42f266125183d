//! Arbitrary sequences of commit / clear / root / snapshot / crash (cut the
//! file at any byte) / reopen (as a reader-writer, or as the filler with
//! every CV), checked against an in-memory model: after every reopen the
//! state (and the CVs) are exactly the model's after the records that
//! survived, and a follower polling along sees the same.
#![no_main]

mod common;

use cache_core::index::{
    read_cvs, IndexError, IndexReader, IndexState, IndexWriter, Record, RECORD_LEN,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Commit(Vec<(u8, u8)>),
    Clear(u8),
    Root(u8),
    Snapshot,
    Crash(u32),
    Reopen,
    ReopenReplayed,
}

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    if input.ops.len() > 64 {
        return;
    }
    let cc = u32::from(input.chunks).max(1);
    let path = common::fresh_path("ops.idx");
    let mut w = Some(IndexWriter::create(&path, &common::header(cc)).expect("create"));
    let header_len = w.as_ref().map(|w| w.log_len()).unwrap_or(0);
    let mut log: Vec<Record> = Vec::new();
    let mut snap: Option<usize> = None;
    // Whether the writer knows the records digest (not when opened on a
    // snapshot), and whether the snapshot carries it.
    let mut writer_digest = true;
    let mut snap_digest = false;
    let (r, _, s) = IndexReader::open(&path).expect("reader");
    let mut follower: (IndexReader, IndexState) = (r, s);

    for op in &input.ops {
        let writer = w.as_mut().expect("writer");
        match op {
            Op::Commit(batch) => {
                if batch.is_empty() || batch.len() > 32 {
                    continue;
                }
                let recs: Vec<Record> = batch
                    .iter()
                    .map(|&(i, v)| Record::Chunk {
                        index: u32::from(i) % cc,
                        cv: [v; 32],
                    })
                    .collect();
                writer.append(&recs).expect("append");
                log.extend(recs);
            }
            Op::Clear(i) => {
                let r = Record::Clear {
                    index: u32::from(*i) % cc,
                };
                writer.append(&[r]).expect("append");
                log.push(r);
            }
            Op::Root(v) => {
                let r = Record::Root { hash: [*v; 32] };
                writer.append(&[r]).expect("append");
                log.push(r);
            }
            Op::Snapshot => {
                writer
                    .snapshot(&common::state_of(&log, cc))
                    .expect("snapshot");
                snap = Some(log.len());
                snap_digest = writer_digest;
            }
            Op::ReopenReplayed => {
                drop(w.take());
                let (nw, _, replayed, rec) =
                    IndexWriter::open_replayed(&path).expect("open_replayed");
                assert_eq!(replayed.state, common::state_of(&log, cc));
                assert_eq!(replayed.cvs, cvs_of(&log, cc));
                assert_eq!(rec.records, log.len() as u64);
                assert_eq!(rec.dropped_bytes, 0);
                assert_eq!(rec.snapshot_used, snap.is_some() && snap_digest);
                writer_digest = true;
                w = Some(nw);
            }
            Op::Reopen | Op::Crash(_) => {
                drop(w.take());
                if let Op::Crash(at) = op {
                    let len = std::fs::metadata(&path).expect("stat").len();
                    let cut = u64::from(*at) % (len + 1);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .expect("open")
                        .set_len(cut)
                        .expect("cut");
                    if cut < header_len {
                        // Impossible for a real crash (create syncs the
                        // header), but it must be a clean Corrupt error.
                        let e = IndexWriter::open(&path).err().expect("opened a cut header");
                        assert!(matches!(e, IndexError::Corrupt { .. }));
                        assert!(IndexReader::open(&path).is_err());
                        return;
                    }
                    log.truncate(((cut - header_len) / RECORD_LEN as u64) as usize);
                    if snap.is_some_and(|s| s > log.len()) {
                        snap = None;
                    }
                }
                let expect = common::state_of(&log, cc);
                let (r, _, rst) = IndexReader::open(&path).expect("reader open");
                assert_eq!(rst, expect, "reader state after {op:?}");
                let (nw, _, st, rec) = IndexWriter::open(&path).expect("writer open");
                assert_eq!(st, expect, "writer state after {op:?}");
                common::check_state_sane(&st, cc);
                assert_eq!(rec.records, log.len() as u64);
                assert_eq!(rec.snapshot_used, snap.is_some());
                writer_digest = !rec.snapshot_used;
                w = Some(nw);
                follower = (r, rst);
            }
        }
        for r in follower.0.poll().expect("poll") {
            follower.1.apply(&r, cc);
        }
        assert_eq!(
            follower.1,
            common::state_of(&log, cc),
            "follower after {op:?}"
        );
    }
    drop(w);
    let cvs = read_cvs(&path).expect("read_cvs");
    assert_eq!(cvs, cvs_of(&log, cc));
});

fn cvs_of(log: &[Record], cc: u32) -> Vec<Option<[u8; 32]>> {
    let mut model = vec![None; cc as usize];
    for r in log {
        match *r {
            Record::Chunk { index, cv } => model[index as usize] = Some(cv),
            Record::Clear { index } => model[index as usize] = None,
            Record::Root { .. } => {}
        }
    }
    model
}
