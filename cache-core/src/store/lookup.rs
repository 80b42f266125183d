//! Finding objects: by hash, hash prefix, key or URL; listing them all.

use std::fs::{self, TryLockError};
use std::path::Path;

use super::names::alias_dir;
use super::{disk_usage, list_names, ObjectSummary, Store, StoreShared, INDEX_FILE};
use crate::digest::Algo;
use crate::error::{Error, Result};
use crate::index::{IndexHeader, IndexReader};
use crate::layout::*;
use crate::object::{info_of, ObjectShared, ObjectState};

impl Store {
    /// The key of the object `reference` names (see [`Store::open_ref`]).
    pub fn resolve(&self, reference: &str) -> Result<String> {
        let s = &self.shared;
        if reference.contains("://") {
            let mut best: Option<(bool, u64, String)> = None;
            for (key, header, complete) in s.scan_headers()? {
                if header.source == reference {
                    let rank = (complete, header.created_unix, key);
                    if best.as_ref().is_none_or(|b| rank > *b) {
                        best = Some(rank);
                    }
                }
            }
            return best
                .map(|b| b.2)
                .ok_or_else(|| Error::NotFound(reference.to_owned()));
        }
        let r = reference.to_ascii_lowercase();
        // `sha256:HEX` / `sha512:HEX` / `blake3:HEX` name a digest (a
        // unique prefix of at least 8 digits will do); a bare hex is BLAKE3
        // (a prefix of at least 4 digits).
        let (algo, r, min_prefix) = match r.split_once(':') {
            Some((a, hex)) => match a.parse::<Algo>() {
                Ok(algo) => (algo, hex.to_owned(), 8),
                Err(_) => return Err(Error::NotFound(reference.to_owned())),
            },
            None => (Algo::Blake3, r, 4),
        };
        let full = r.len() == algo.output_len() * 2 && r.bytes().all(|b| b.is_ascii_hexdigit());
        if full {
            return s
                .read_alias(algo, &r)?
                .ok_or_else(|| Error::NotFound(reference.to_owned()));
        }
        if algo == Algo::Blake3 && is_key(&r) && s.dir.join(OBJECTS).join(&r).is_dir() {
            return Ok(r);
        }
        if r.len() < min_prefix || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NotFound(reference.to_owned()));
        }
        let mut keys: Vec<String> = Vec::new();
        let dir = s.dir.join(alias_dir(algo));
        let names = if dir.is_dir() {
            list_names(&dir)?
        } else {
            Vec::new()
        };
        for name in names {
            if name.starts_with(&r) {
                if let Some(k) = s.read_alias(algo, &name)? {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
        match keys.len() {
            0 => Err(Error::NotFound(reference.to_owned())),
            1 => Ok(keys.remove(0)),
            count => Err(Error::Ambiguous {
                reference: reference.to_owned(),
                count,
            }),
        }
    }

    /// Every object in the store.
    pub fn list(&self) -> Result<Vec<ObjectSummary>> {
        let s = &self.shared;
        let mut out = Vec::new();
        for key in list_names(&s.dir.join(OBJECTS))? {
            if !is_key(&key) {
                continue;
            }
            let dir = s.dir.join(OBJECTS).join(&key);
            let Ok((_, header, state)) = IndexReader::open(&dir.join(INDEX_FILE)) else {
                continue;
            };
            let live = s.live(&key);
            let (done, root) = match &live {
                Some(o) => {
                    let st = o.state.lock();
                    (st.done.len(), st.root)
                }
                None => (state.done.len(), state.root),
            };
            let total = u64::from(header.chunk_count());
            let progress = live.as_ref().map(|o| o.progress.borrow().bytes_done);
            let state_name = if root.is_some() {
                ObjectState::Complete
            } else {
                s.fill_state(&dir, live.as_deref())
            };
            out.push(ObjectSummary {
                chunks_done: done,
                chunks_total: total,
                // A short last chunk counts its own length, not a chunk's.
                bytes_done: progress
                    .unwrap_or_else(|| crate::object::bytes_done(&header, &state.done)),
                state: state_name,
                last_used: fs::metadata(dir.join(USED_FILE))
                    .and_then(|m| m.modified())
                    .ok(),
                disk_bytes: disk_usage(&dir),
                created_unix: header.created_unix,
                digests: if root.is_some() {
                    read_digests(&dir, &header)
                } else {
                    Vec::new()
                },
                info: info_of(&key, &header, root),
            });
        }
        Ok(out)
    }
}

impl StoreShared {
    /// (key, header, complete) of every readable object.
    fn scan_headers(&self) -> Result<Vec<(String, IndexHeader, bool)>> {
        let mut out = Vec::new();
        for key in list_names(&self.dir.join(OBJECTS))? {
            if let Ok((_, header, state)) =
                IndexReader::open(&self.dir.join(OBJECTS).join(&key).join(INDEX_FILE))
            {
                out.push((key, header, state.root.is_some()));
            }
        }
        Ok(out)
    }

    /// Whether some process fills the object in `dir`.
    /// The state of an incomplete object: filled here, by another process
    /// (its index lock is held), failed here, or partial.
    pub(crate) fn fill_state(&self, dir: &Path, live: Option<&ObjectShared>) -> ObjectState {
        if let Some(o) = live {
            match o.state.lock().phase {
                crate::object::Phase::Filling => return ObjectState::Filling,
                crate::object::Phase::Failed(_) => return ObjectState::Failed,
                _ => {}
            }
        }
        let Ok(f) = fs::File::open(dir.join(INDEX_FILE)) else {
            return ObjectState::Partial;
        };
        match f.try_lock() {
            Err(TryLockError::WouldBlock) => ObjectState::Following,
            _ => ObjectState::Partial,
        }
    }
}
