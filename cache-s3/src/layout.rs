//! Key names in the bucket and the pointer record (the table is in the
//! crate docs; this file and that table must stay in sync).

use object_store::path::Path;
use sha2::{Digest as _, Sha256};

/// Version of the pointer record this code writes and reads.
const POINTER_FORMAT: u64 = 1;

/// The `<id>` of a source: hex SHA-256 of `identity`, a newline and
/// `validator` (see the crate docs).
pub fn source_id(identity: &str, validator: &str) -> String {
    let mut h = Sha256::new();
    h.update(identity.as_bytes());
    h.update(b"\n");
    h.update(validator.as_bytes());
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the keys of one bucket prefix are.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` without leading or trailing `/` (may be empty).
    pub(crate) fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// The prefix, without leading or trailing `/`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// `b3/<hex>`: the object.
    pub(crate) fn object(&self, root: &blake3::Hash) -> Path {
        self.key(&format!("b3/{}", root.to_hex()))
    }

    /// `b3/<hex>.manifest`: its manifest.
    pub(crate) fn manifest(&self, root: &blake3::Hash) -> Path {
        self.key(&format!("b3/{}.manifest", root.to_hex()))
    }

    /// `src/<id>`: the pointer of a source version.
    pub(crate) fn pointer(&self, id: &str) -> Path {
        self.key(&format!("src/{id}"))
    }

    /// `lease/<id>` (epoch 0) or `lease/<id>.<epoch>` (the epoch-th takeover).
    pub(crate) fn lease(&self, id: &str, epoch: u32) -> Path {
        match epoch {
            0 => self.key(&format!("lease/{id}")),
            n => self.key(&format!("lease/{id}.{n}")),
        }
    }

    /// A key for the one-time create-only probe.
    pub(crate) fn probe(&self, nonce: u64) -> Path {
        self.key(&format!("lease/probe-{nonce:016x}"))
    }
}

/// `src/<id>`: which object holds a source version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    /// The object's BLAKE3 root (its key `b3/<hex>`).
    pub root: blake3::Hash,
    /// Its length.
    pub len: u64,
    /// The origin's validator the object was downloaded under.
    pub validator: String,
}

impl Pointer {
    /// The JSON record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "format": POINTER_FORMAT,
            "blake3": self.root.to_hex().as_str(),
            "len": self.len,
            "validator": self.validator,
        })
        .to_string()
        .into_bytes()
    }

    /// Parses a record; `Err` names what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Pointer, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        match v["format"].as_u64() {
            Some(POINTER_FORMAT) => {}
            other => return Err(format!("format {other:?}, expected {POINTER_FORMAT}")),
        }
        let root = v["blake3"]
            .as_str()
            .and_then(|h| blake3::Hash::from_hex(h).ok())
            .ok_or("no valid \"blake3\"")?;
        let len = v["len"].as_u64().ok_or("no valid \"len\"")?;
        let validator = v["validator"]
            .as_str()
            .ok_or("no valid \"validator\"")?
            .to_owned();
        Ok(Pointer {
            root,
            len,
            validator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let root = blake3::hash(b"x");
        let hex = root.to_hex();
        let l = Layout::new("/fleet/images/");
        assert_eq!(l.object(&root).as_ref(), format!("fleet/images/b3/{hex}"));
        assert_eq!(
            l.manifest(&root).as_ref(),
            format!("fleet/images/b3/{hex}.manifest")
        );
        let id = source_id("http://h/disk.img", "\"etag\"");
        assert_eq!(id.len(), 64);
        assert_ne!(id, source_id("http://h/disk.img", "\"other\""));
        assert_eq!(l.pointer(&id).as_ref(), format!("fleet/images/src/{id}"));
        assert_eq!(l.lease(&id, 0).as_ref(), format!("fleet/images/lease/{id}"));
        assert_eq!(
            Layout::new("").lease(&id, 2).as_ref(),
            format!("lease/{id}.2")
        );
    }

    #[test]
    fn pointers_round_trip_and_bad_ones_are_named() {
        let p = Pointer {
            root: blake3::hash(b"y"),
            len: 7,
            validator: "\"v\"".into(),
        };
        assert_eq!(Pointer::decode(&p.encode()), Ok(p));
        assert!(Pointer::decode(b"{}").unwrap_err().contains("format"));
        assert!(
            Pointer::decode(br#"{"format":1,"blake3":"zz","len":1,"validator":""}"#)
                .unwrap_err()
                .contains("blake3")
        );
        assert!(Pointer::decode(b"garbage").unwrap_err().contains("JSON"));
    }
}
