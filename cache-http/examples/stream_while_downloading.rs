//! Read an image while it downloads, using only the public API:
//!
//! ```sh
//! cargo run -p cache-http --example stream_while_downloading -- URL [STORE_DIR]
//! ```
//!
//! Prints the image's last 16 bytes as soon as they are there (they are
//! fetched first, ahead of the sequential download), then streams the whole
//! image in order and prints its BLAKE3. Run it twice: the second run is
//! served from the store; interrupt the first and the second resumes.

use std::path::PathBuf;
use std::sync::Arc;

use cache_core::{FetchOptions, Store};
use cache_http::{HttpSource, HttpSourceConfig};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).ok_or("usage: URL [STORE_DIR]")?;
    let dir = std::env::args().nth(2).map(PathBuf::from);
    let store = Store::open(dir.or_else(Store::default_dir).ok_or("no store dir")?)?;
    let source = Arc::new(HttpSource::new(&url, HttpSourceConfig::default())?);
    let object = store.fetch(source, FetchOptions::default()).await?;
    let tail = object.read_tail(16).await?.to_vec(); // demanded: fetched first
    let chunks_done = object.progress().chunks_done;
    println!("tail {tail:02x?} read with {chunks_done} chunks done");
    let (mut bytes, mut stream) = (0, Box::pin(object.stream(0..object.len())));
    while let Some(piece) = stream.next().await {
        bytes += piece?.len();
    }
    let hash = object.wait_complete().await?;
    println!("streamed {bytes} bytes, BLAKE3 {hash}");
    Ok(())
}
