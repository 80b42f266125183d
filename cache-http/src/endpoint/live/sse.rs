//! The `/events` response: the snapshot, then the hub's deltas as they are
//! broadcast, a keep-alive comment every 15 s, and an end when the
//! endpoint shuts down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::broadcast::error::RecvError;

use super::Live;
use crate::endpoint::response::{Body, BodyError};

/// Comment lines keep idle streams open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Client {
    live: Arc<Live>,
    first: Option<Bytes>,
    rx: tokio::sync::broadcast::Receiver<Bytes>,
    closed: tokio::sync::watch::Receiver<bool>,
}

/// Answers `GET /events`.
pub(crate) async fn events_response(live: &Arc<Live>) -> Response<Body> {
    let (snapshot, rx) = live.subscribe().await;
    let client = Client {
        live: live.clone(),
        first: Some(snapshot),
        rx,
        closed: live.closed.subscribe(),
    };
    let frames = stream::unfold(client, |mut c| async move {
        if let Some(first) = c.first.take() {
            return Some((Ok::<_, BodyError>(Frame::data(first)), c));
        }
        if *c.closed.borrow() {
            return None;
        }
        let bytes = tokio::select! {
            r = c.rx.recv() => match r {
                Ok(b) => b,
                // Fell behind: start over from a snapshot.
                Err(RecvError::Lagged(_)) => {
                    let (snapshot, rx) = c.live.subscribe().await;
                    c.rx = rx;
                    snapshot
                }
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            _ = c.closed.changed() => return None,
        };
        Some((Ok(Frame::data(bytes)), c))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
