//! Makes a big partial object without its bytes: appends made-up `Chunk`
//! records (CVs that are not the data's) to an object's index, in batches
//! of 4096 with a snapshot after each, as the filler does, until the first
//! N chunks are done. The data file stays sparse. For timing what depends
//! on the chunk count and the log (`benches/resume_start.sh`: a resume's
//! start at 1 Mi chunks) where the real bytes would not fit on the disk;
//! such an object must never be completed or read.
//!
//! ```text
//! index_fill INDEX_PATH N
//! ```

use cache_core::index::{IndexState, IndexWriter, Record};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(path), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u32>().ok()),
    ) else {
        eprintln!("usage: index_fill INDEX_PATH N");
        std::process::exit(2);
    };
    let path = std::path::Path::new(path);
    let (mut w, _, replayed, _) = IndexWriter::open_replayed(path).expect("open index");
    let mut state = replayed.state;
    let cc = w.chunk_count();
    let flush = |w: &mut IndexWriter, state: &mut IndexState, batch: &mut Vec<Record>| {
        w.append(batch).expect("append");
        for r in batch.iter() {
            state.apply(r, cc);
        }
        batch.clear();
        w.snapshot(state).expect("snapshot");
    };
    let mut batch = Vec::with_capacity(4096);
    for c in 0..n.min(cc) {
        if replayed.cvs[c as usize].is_some() {
            continue;
        }
        let mut cv = [0xF1u8; 32];
        cv[..4].copy_from_slice(&c.to_le_bytes());
        batch.push(Record::Chunk { index: c, cv });
        if batch.len() == 4096 {
            flush(&mut w, &mut state, &mut batch);
        }
    }
    flush(&mut w, &mut state, &mut batch);
    println!("{} of {cc} chunks done", state.done.len());
}
