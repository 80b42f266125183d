//! Crash safety: a filling process killed with SIGKILL at random points
//! loses nothing that was durably committed, leaves no lock behind, and
//! its successor refetches only what was not committed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cache_core::testing::MemorySource;
use cache_core::Store;
use common::child;
use common::*;
use rand::Rng;

const URL: &str = "mem://crash-test";
const CS: usize = 64 * KIB;
const LEN: usize = 48 * MIB + 12345;
const SEED: u64 = 42;

/// The child: fills the object slowly until it is killed.
#[test]
#[ignore = "run by crash tests as a child process"]
fn crash_child_fill() {
    // ~8 MB/s per connection: 16 KiB pieces every 2 ms.
    child::run_child_fill(child::ChildFill {
        url: URL,
        len: LEN,
        seed: SEED,
        piece_delay_ms: 2,
        flush_ms: 30,
        options: child::fill_options(),
    });
}

/// Chunks present in the store right now, checked byte for byte.
fn present_chunks(dir: &Path, bytes: &[u8]) -> BTreeSet<u32> {
    let store = Store::open(dir).unwrap();
    let Ok(object) = store.open_ref(URL) else {
        return BTreeSet::new();
    };
    let mut present = BTreeSet::new();
    for c in 0..LEN.div_ceil(CS) {
        let start = c * CS;
        let len = CS.min(LEN - start);
        if let Ok(got) = object.try_read_at(start as u64, len as u64) {
            assert!(
                got[..] == bytes[start..start + len],
                "chunk {c} is present but wrong"
            );
            present.insert(c as u32);
        }
    }
    present
}

fn chunks_of(ranges: &[std::ops::Range<u64>]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for r in ranges {
        for c in r.start / CS as u64..r.end.div_ceil(CS as u64) {
            out.insert(c as u32);
        }
    }
    out
}

#[test]
fn sigkill_at_random_points_then_resume_refetches_only_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pattern(LEN, SEED);
    let mut rng = rand::thread_rng();
    let mut present = BTreeSet::new();
    let mut kills = 0;
    for run in 0..12 {
        let log = dir.path().join(format!("run-{run}.log"));
        let mut c = child::spawn("crash_child_fill", &dir.path().join("store"), &log);
        std::thread::sleep(Duration::from_millis(rng.gen_range(80..400)));
        let finished = c.try_wait().unwrap().is_some();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        assert!(
            !finished,
            "run {run}: the child finished or died before the kill"
        );
        kills += 1;
        // Nothing durable is lost, and a resumed child never asked for a
        // chunk that was durable before it started.
        let asked = chunks_of(&child::logged_ranges(&log));
        let overlap: Vec<_> = asked.intersection(&present).collect();
        assert!(
            overlap.is_empty(),
            "run {run} refetched durable chunks {overlap:?}"
        );
        let now = present_chunks(&dir.path().join("store"), &bytes);
        assert!(now.is_superset(&present), "run {run} lost durable chunks");
        eprintln!(
            "run {run}: asked for {} chunks, {} durable after the kill",
            asked.len(),
            now.len()
        );
        present = now;
    }
    assert!(kills >= 10);
    assert!(!present.is_empty(), "no progress survived the kills");
    let total = LEN.div_ceil(CS) as u32;
    assert!(
        (present.len() as u32) < total,
        "the object completed before the last kill"
    );

    // The final resume: completes with the right hash and asks only for
    // the chunks that were not durable, each exactly once.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(dir.path().join("store")).unwrap();
        let src = MemorySource::new(URL, bytes.clone());
        let object = store
            .fetch(Arc::new(src.clone()), child::fill_options())
            .await
            .unwrap();
        let root = bounded("resume", object.wait_complete()).await.unwrap();
        assert_eq!(root, blake3::hash(&bytes));
        let counts = src.chunk_request_counts(CS as u64);
        for c in 0..total {
            let expected = u32::from(!present.contains(&c));
            assert_eq!(
                counts[c as usize], expected,
                "chunk {c} requested {} times",
                counts[c as usize]
            );
        }
    });
}

const CP_URL: &str = "mem://prefix-checkpoint";
const CP_LEN: usize = 16 * MIB + 777;
const CP_SEED: u64 = 7;

/// The child of the checkpoint test: fills slowly until killed.
#[test]
#[ignore = "run by crash tests as a child process"]
fn prefix_checkpoint_child_fill() {
    child::run_child_fill(child::ChildFill {
        url: CP_URL,
        len: CP_LEN,
        seed: CP_SEED,
        piece_delay_ms: 2,
        flush_ms: 30,
        options: child::fill_options(),
    });
}

/// The one object directory of a store.
fn object_dir(store: &Path) -> std::path::PathBuf {
    let mut objects = std::fs::read_dir(store.join("objects")).unwrap();
    objects.next().unwrap().unwrap().path()
}

#[test]
fn a_resume_takes_up_the_sha256_of_the_prefix_from_its_checkpoint() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let bytes = pattern(CP_LEN, CP_SEED);
    let mut c = child::spawn(
        "prefix_checkpoint_child_fill",
        &store_dir,
        &dir.path().join("child.log"),
    );
    // Killed once the SHA-256 state of a prefix (2 MiB every, here) is
    // saved with the object.
    let started = std::time::Instant::now();
    let checkpoint = loop {
        if let Some(p) = std::fs::read_dir(store_dir.join("objects"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("prefix"))
            .filter(|p| p.exists())
        {
            break p;
        }
        assert!(c.try_wait().unwrap().is_none(), "the child ended");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no prefix checkpoint within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    assert!(checkpoint.exists());

    // Change one byte of chunk 0 behind the store's back. A resume that
    // hashed the prefix on disk again would put it in the SHA-256; one
    // that takes the checkpoint up never reads chunk 0 again.
    let obj_dir = object_dir(&store_dir);
    let data = std::fs::read_dir(&obj_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("data-"))
        })
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.write_all_at(&[bytes[100] ^ 0xff], 100).unwrap();
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&store_dir).unwrap();
        let src = MemorySource::new(CP_URL, bytes.clone());
        let object = store
            .fetch(Arc::new(src), child::fill_options())
            .await
            .unwrap();
        let root = bounded("resume", object.wait_complete()).await.unwrap();
        assert_eq!(root, blake3::hash(&bytes), "the root comes from the CVs");
        let sha256 = object
            .digests()
            .into_iter()
            .find(|d| d.algo == cache_core::Algo::Sha256)
            .expect("the fill stored a SHA-256");
        assert_eq!(
            sha256.bytes,
            sha2::Sha256::digest(&bytes).to_vec(),
            "the SHA-256 of the original bytes: the prefix was not read again"
        );
        assert!(
            !checkpoint.exists(),
            "a complete object keeps no checkpoint"
        );
        // Damage on disk is what `verify` finds (it re-hashes every chunk).
        let report = object.verify().await.unwrap();
        assert_eq!(report.damaged, vec![0]);
    });
}
