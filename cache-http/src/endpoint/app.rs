//! The state every request handler of an endpoint shares: the store, the
//! mirrors (replaced on reload), metrics, the live-status hub, the fill
//! tracker, the per-URL probe state and the recently resolved objects.
//! Handlers (`routes`, `mirror`, `serve_object`, `manifest`, `access`,
//! `housekeeping`) depend on this
//! module; it depends on none of them, only on the endpoint's leaf types
//! (config, metrics, live status, tracker).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{Digest, FetchOptions, Object, Store};
use parking_lot::{Mutex, RwLock};

use super::config::{AccessLogFormat, EndpointConfig, MirrorConfig, MirrorSourceFactory};
use super::hot::HotMap;
use super::live::Live;
use super::metrics::Metrics;
use super::status::Tracker;

/// What the endpoint remembers about one mirrored URL.
#[derive(Default)]
pub(crate) struct MirrorEntry {
    /// Key of the object the last successful probe resolved to (or, before
    /// the first probe, the complete stored copy of the URL).
    pub(crate) key: Option<String>,
    /// When the origin last confirmed `key`.
    pub(crate) probed: Option<Instant>,
    /// A background revalidation is running.
    pub(crate) revalidating: bool,
    /// The origin no longer serves `key` (a new version, or 404): the next
    /// request asks the origin before it serves anything.
    pub(crate) must_probe: bool,
}

/// Shared state of a running endpoint.
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: Tracker,
    pub(crate) live: Arc<Live>,
    /// Replaced as a whole on reload; a request keeps the `Arc` it took.
    pub(crate) mirrors: RwLock<HashMap<String, Arc<MirrorConfig>>>,
    pub(crate) factory: Option<MirrorSourceFactory>,
    pub(crate) revalidate: Duration,
    pub(crate) access_log: AccessLogFormat,
    pub(crate) max_size: Option<u64>,
    pub(crate) fetch: FetchOptions,
    pub(crate) max_ranges: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) parents: Vec<String>,
    /// The shared tier (`serve --shared`), asked after the parents.
    pub(crate) shared: Option<Arc<dyn super::shared_tier::ServeTier>>,
    /// Per mirrored URL, serialised by its own async mutex so that two
    /// first requests for one URL probe the origin once.
    pub(crate) entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<MirrorEntry>>>>,
    /// `/blobs/` names resolved in the last seconds (see [`super::hot`]).
    pub(crate) hot_blobs: HotMap<Digest>,
    /// Objects `/m/` served in the last seconds, by object key.
    pub(crate) hot_keys: HotMap<String>,
}

impl App {
    pub(crate) fn new(store: Store, config: &EndpointConfig) -> App {
        let metrics = Arc::new(Metrics::new());
        if let Some(tier) = &config.shared {
            metrics.attach_shared(tier.clone());
        }
        let live = Arc::new(Live::new(store.clone(), config.max_size));
        // Started here, not by the first request (see `Live::track`).
        live.ensure_started();
        let app = App {
            store,
            tracker: Tracker::default(),
            live,
            metrics,
            mirrors: RwLock::default(),
            factory: config.source_factory.clone(),
            revalidate: config.revalidate,
            access_log: config.access_log,
            max_size: config.max_size,
            fetch: config.fetch.clone(),
            max_ranges: config.max_ranges,
            max_header_bytes: config.max_header_bytes,
            parents: config.parents.clone(),
            shared: config.shared.clone(),
            entries: Mutex::default(),
            hot_blobs: HotMap::default(),
            hot_keys: HotMap::default(),
        };
        app.set_mirrors(config.mirrors.clone());
        app
    }

    /// Makes `mirrors` the mirror set (checked by the caller).
    pub(crate) fn set_mirrors(&self, mirrors: Vec<MirrorConfig>) {
        let map: HashMap<String, Arc<MirrorConfig>> = mirrors
            .into_iter()
            .map(|m| (m.name.clone(), Arc::new(m)))
            .collect();
        self.live.set_mirrors(
            map.values()
                .map(|m| (m.name.clone(), m.base.to_string()))
                .collect(),
        );
        *self.mirrors.write() = map;
    }
}

impl App {
    /// Runs `f` on the store on a blocking thread: store calls read and
    /// write files (an alias, an index replay), which must not stall the
    /// runtime's workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Store) -> cache_core::Result<T> + Send + 'static,
    ) -> cache_core::Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| cache_core::Error::task(what, e))?
    }

    /// [`Store::open_ref`] off the runtime.
    pub(crate) async fn open_ref(&self, reference: &str) -> cache_core::Result<Object> {
        let reference = reference.to_owned();
        self.blocking("open object", move |s| s.open_ref(&reference))
            .await
    }
}
