//! Shared helpers of the chunk index fuzz targets.

use std::path::PathBuf;
use std::sync::OnceLock;

use cache_core::index::{IndexHeader, IndexState, Record};

/// One scratch directory per fuzzing process, on tmpfs when available:
/// the index fsyncs on every append, which on a real disk would cut the
/// exec rate by orders of magnitude without testing anything more.
pub fn scratch() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // run-short.sh points this at a directory it removes afterwards.
        if let Some(d) = std::env::var_os("BLOCKCACHE_FUZZ_DIR") {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).expect("create scratch dir");
            return d;
        }
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("blockcache-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create scratch dir");
        d
    })
    .clone()
}

/// A fresh index path in the scratch dir, with any leftovers removed.
pub fn fresh_path(name: &str) -> PathBuf {
    let p = scratch().join(name);
    for suffix in ["", ".snap", ".snap.tmp"] {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(s));
    }
    p
}

pub const CS: u32 = 64 * 1024;

pub fn header(chunks: u32) -> IndexHeader {
    IndexHeader {
        len: u64::from(chunks.max(1)) * u64::from(CS) - 3,
        chunk_size: CS,
        data_id: *b"fuzz-data-id-016",
        source: "https://example.invalid/image.vhdx".into(),
        validator: "\"v1\"".into(),
        expected: None,
        created_unix: 1,
    }
}

pub fn state_of(records: &[Record], chunk_count: u32) -> IndexState {
    let mut s = IndexState::default();
    for r in records {
        s.apply(r, chunk_count);
    }
    s
}

/// What every accepted state must satisfy, whatever the input.
pub fn check_state_sane(s: &IndexState, chunk_count: u32) {
    if let Some(m) = s.done.max() {
        assert!(
            m < chunk_count,
            "accepted chunk {m} >= chunk_count {chunk_count}"
        );
    }
    if s.root.is_some() {
        assert_eq!(
            s.done.len(),
            u64::from(chunk_count),
            "root with chunks missing"
        );
    }
}
