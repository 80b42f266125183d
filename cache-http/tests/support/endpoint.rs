//! Helpers for endpoint tests: a running endpoint over a temp store, an
//! in-memory origin behind the mirror source factory, and real clients.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{testing::MemorySource, Source, SourceError, SourceErrorKind, SourceInfo, Store};
use cache_http::endpoint::{Endpoint, EndpointConfig, MirrorSourceFactory};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Mirror base used with [`Origin`]: `/m/o/NAME` is `BASE/NAME`.
pub const BASE: &str = "http://origin.test/base/";

/// Mirror name used with [`Origin`].
pub const MIRROR: &str = "o";

/// Bound of one client run; never an assertion about speed.
pub const CLIENT_BOUND: Duration = Duration::from_secs(120);

/// An in-memory origin: URL → source. Unknown URLs answer 404; `down`
/// makes every probe fail with a network error.
#[derive(Clone, Default)]
pub struct Origin {
    objects: Arc<Mutex<HashMap<String, MemorySource>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    probes: Arc<AtomicUsize>,
}

struct Probed {
    inner: Option<MemorySource>,
    url: String,
    origin: Origin,
}

impl Source for Probed {
    fn identity(&self) -> String {
        self.url.clone()
    }

    fn probe(&self) -> BoxFuture<'_, Result<SourceInfo, SourceError>> {
        Box::pin(async move {
            self.origin.probes.fetch_add(1, Ordering::SeqCst);
            if self.origin.down.load(Ordering::SeqCst) {
                return Err(SourceError::new(
                    SourceErrorKind::Network,
                    format!("{}: connection refused", self.url),
                ));
            }
            match &self.inner {
                Some(s) => s.probe().await,
                None => Err(SourceError::new(
                    SourceErrorKind::NotFound,
                    format!("{}: 404 Not Found", self.url),
                )),
            }
        })
    }

    fn read_range<'a>(
        &'a self,
        range: std::ops::Range<u64>,
        expect: &'a SourceInfo,
    ) -> BoxFuture<'a, Result<cache_core::RangeBody, SourceError>> {
        match &self.inner {
            Some(s) => s.read_range(range, expect),
            None => {
                Box::pin(async move { Err(SourceError::new(SourceErrorKind::NotFound, "404")) })
            }
        }
    }
}

impl Origin {
    /// Serves `bytes` at `BASE/name`, each 64 KiB piece delayed by
    /// `delay_ms`. Returns the source (to inspect its requests).
    pub fn put(&self, name: &str, bytes: Vec<u8>, delay_ms: u64) -> MemorySource {
        let url = format!("{BASE}{name}");
        let src = MemorySource::new(&url, bytes)
            .with_piece_size(64 << 10)
            .with_piece_delay_ms(delay_ms);
        self.objects.lock().insert(url, src.clone());
        src
    }

    /// Makes the origin unreachable (or reachable again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Number of probes so far.
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    /// The factory to put in [`EndpointConfig::source_factory`].
    pub fn factory(&self) -> MirrorSourceFactory {
        let origin = self.clone();
        Arc::new(move |url: &str| {
            Ok(Arc::new(Probed {
                inner: origin.objects.lock().get(url).cloned(),
                url: url.to_owned(),
                origin: origin.clone(),
            }) as Arc<dyn Source>)
        })
    }
}

/// A running endpoint over a temp store.
pub struct TestEndpoint {
    pub addr: SocketAddr,
    pub store: Store,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestEndpoint {
    /// Starts an endpoint with mirror [`MIRROR`] → [`BASE`] over `origin`;
    /// `tweak` adjusts the config.
    pub async fn start(origin: &Origin, tweak: impl FnOnce(&mut EndpointConfig)) -> TestEndpoint {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let mut config = EndpointConfig {
            mirrors: vec![(MIRROR.to_owned(), url::Url::parse(BASE).expect("base url")).into()],
            source_factory: Some(origin.factory()),
            ..EndpointConfig::default()
        };
        config.fetch.chunk_size = 256 << 10;
        tweak(&mut config);
        Self::start_with_store(store, dir, config).await
    }

    /// Starts an endpoint with `config` over `store`.
    pub async fn start_with_store(
        store: Store,
        dir: tempfile::TempDir,
        config: EndpointConfig,
    ) -> TestEndpoint {
        let bound = Endpoint::bind(store.clone(), config).await.expect("bind");
        let addr = bound.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        TestEndpoint {
            addr,
            store,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://ADDR/m/o/NAME`.
    pub fn mirror_url(&self, name: &str) -> String {
        format!("http://{}/m/{MIRROR}/{name}", self.addr)
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the endpoint and waits (bounded) for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("serve returned within its bound")
                .expect("serve task")
                .expect("serve result");
        }
    }
}

impl Drop for TestEndpoint {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs a client command, bounded by [`CLIENT_BOUND`].
pub async fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    tokio::time::timeout(CLIENT_BOUND, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within the bound"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs curl with `args` (plus `-s -S`) and returns the output; panics
/// unless it succeeded.
pub async fn curl(args: &[&str]) -> Output {
    let mut all = vec!["-s", "-S", "--max-time", "100"];
    all.extend_from_slice(args);
    let out = run("curl", &all).await;
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic test bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    super::pattern(seed, len)
}
