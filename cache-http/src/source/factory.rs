//! The store's source factory for HTTP: how an object recorded by URL is
//! fetched again (resume, repair, a read of an incomplete object opened by
//! hash or URL).

use std::sync::Arc;

use cache_core::SourceFactory;
use cache_core::{Source, SourceError, SourceErrorKind};

use super::{client, HttpSource, HttpSourceConfig, HttpSourceError};

/// A [`SourceFactory`] that makes an [`HttpSource`] for each URL, all
/// sharing one client (one connection pool, TLS roots loaded once). Give
/// it to the store so that objects it reopens can resume:
///
/// ```
/// use cache_core::{Store, StoreOptions};
/// use cache_http::{source_factory, HttpSourceConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let options = StoreOptions {
///     source_factory: Some(source_factory(HttpSourceConfig::default())?),
///     ..StoreOptions::default()
/// };
/// let store = Store::open_with(dir.path(), options)?;
/// # drop(store); Ok(()) }
/// ```
///
/// Fails only when the client cannot be built (an unreadable extra CA
/// file, say); a bad URL fails later, when the factory is called with it.
pub fn source_factory(config: HttpSourceConfig) -> Result<SourceFactory, HttpSourceError> {
    let (client, matcher) = client::build(&config)?;
    Ok(Arc::new(move |url: &str| {
        HttpSource::with_client(url, config.clone(), client.clone(), matcher.clone())
            .map(|s| Arc::new(s) as Arc<dyn Source>)
            .map_err(|e| SourceError::new(SourceErrorKind::Other, e.to_string()))
    }))
}
