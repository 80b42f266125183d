//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every wait in a test is bounded: a hang is a failure, not a stuck CI.
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after 60 s: {what}"),
    }
}

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// A store in `dir` whose data writes go through the test hook `fault`.
pub fn store_with_fault(dir: &std::path::Path, fault: cache_core::WriteFault) -> cache_core::Store {
    let options = cache_core::StoreOptions {
        write_fault: Some(fault),
        ..cache_core::StoreOptions::default()
    };
    cache_core::Store::open_with(dir, options).expect("open the store")
}

/// Fetch options for tests that need a predictable request order: one
/// connection, chunks of `chunk_size`, requests of up to `run_chunks`.
pub fn one_connection_with(chunk_size: usize, run_chunks: u64) -> cache_core::FetchOptions {
    cache_core::FetchOptions {
        chunk_size: chunk_size as u32,
        fill: cache_core::FillOptions {
            connections: 1,
            max_request_bytes: run_chunks * chunk_size as u64,
            ..cache_core::FillOptions::default()
        },
        ..cache_core::FetchOptions::default()
    }
}

pub mod child {
    //! Child processes for crash tests: the test binary runs itself with
    //! `--exact <child test> --ignored` and an environment variable that
    //! tells the child test what to do.

    use std::ops::Range;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use cache_core::testing::MemorySource;
    use cache_core::{RangeBody, Source, SourceError, SourceInfo};
    use futures::future::BoxFuture;

    pub const STORE_ENV: &str = "BLOCKCACHE_TEST_CHILD_STORE";
    pub const LOG_ENV: &str = "BLOCKCACHE_TEST_CHILD_LOG";

    /// A child process that is killed when dropped (a failing test must
    /// not leave it running against a deleted temp dir).
    pub struct KillOnDrop(pub Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl std::ops::Deref for KillOnDrop {
        type Target = Child;
        fn deref(&self) -> &Child {
            &self.0
        }
    }

    impl std::ops::DerefMut for KillOnDrop {
        fn deref_mut(&mut self) -> &mut Child {
            &mut self.0
        }
    }

    /// Starts `test_name` of the current test binary as a child process.
    pub fn spawn(test_name: &str, store: &Path, log: &Path) -> KillOnDrop {
        KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    test_name,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(STORE_ENV, store)
                .env(LOG_ENV, log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }

    /// A source that appends every requested range to a log file before
    /// serving it, so the parent knows what a killed child asked for.
    pub struct LoggingSource {
        pub inner: MemorySource,
        pub log: std::path::PathBuf,
    }

    impl Source for LoggingSource {
        fn identity(&self) -> String {
            self.inner.identity()
        }
        fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
            self.inner.probe()
        }
        fn read_range<'a>(
            &'a self,
            range: Range<u64>,
            expect: &'a SourceInfo,
        ) -> BoxFuture<'a, Result<RangeBody, SourceError>> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            writeln!(f, "{} {}", range.start, range.end).unwrap();
            f.sync_all().unwrap();
            self.inner.read_range(range, expect)
        }
    }

    /// Ranges a child logged.
    pub fn logged_ranges(log: &Path) -> Vec<Range<u64>> {
        let Ok(text) = std::fs::read_to_string(log) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some(it.next()?.parse().ok()?..it.next()?.parse().ok()?)
            })
            .collect()
    }

    /// How the child fills (and the parent resumes): 64 KiB chunks, two
    /// connections, requests of at most 1 MiB — many small steps to kill
    /// between.
    pub fn fill_options() -> cache_core::FetchOptions {
        cache_core::FetchOptions {
            chunk_size: 64 * super::KIB as u32,
            fill: cache_core::FillOptions {
                connections: 2,
                max_request_bytes: 1 << 20,
                ..cache_core::FillOptions::default()
            },
            ..cache_core::FetchOptions::default()
        }
    }

    /// What a child fill does: the object it fills and how slowly.
    pub struct ChildFill {
        pub url: &'static str,
        pub len: usize,
        pub seed: u64,
        /// Milliseconds between 16 KiB pieces of each body.
        pub piece_delay_ms: u64,
        /// The store's flush interval (how much a kill can lose).
        pub flush_ms: u64,
        pub options: cache_core::FetchOptions,
    }

    /// The body of a child test: when run as a child (the environment says
    /// where), fills `fill` into the store until killed; otherwise returns.
    pub fn run_child_fill(fill: ChildFill) {
        let (Ok(store_dir), Ok(log)) = (std::env::var(STORE_ENV), std::env::var(LOG_ENV)) else {
            return;
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let options = cache_core::StoreOptions {
                flush_interval: std::time::Duration::from_millis(fill.flush_ms),
                ..cache_core::StoreOptions::default()
            };
            let store = cache_core::Store::open_with(&store_dir, options).unwrap();
            let inner = MemorySource::new(fill.url, super::pattern(fill.len, fill.seed))
                .with_piece_size(16 * super::KIB)
                .with_piece_delay_ms(fill.piece_delay_ms);
            let src: Arc<dyn Source> = Arc::new(LoggingSource {
                inner,
                log: log.into(),
            });
            let object = store.fetch(src, fill.options).await.unwrap();
            object.wait_complete().await.unwrap();
        });
    }

    /// Waits (bounded) until a child has registered its object in the store
    /// and holds its fill lock.
    pub async fn wait_for_fill_lock(store_dir: &Path) {
        // The object's directory, then the pid file its filler writes once
        // it holds the fill lock: from then on the child surely fills it.
        let leased = || -> bool {
            let Ok(mut objects) = store_dir.join("objects").read_dir() else {
                return false;
            };
            objects
                .next()
                .and_then(|e| e.ok())
                .is_some_and(|e| e.path().join("filler.pid").exists())
        };
        let started = std::time::Instant::now();
        while !leased() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the child never registered its object and took its fill lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
