//! Whole-object digests other than the BLAKE3 address: SHA-256 and
//! SHA-512, the sums image publishers print.
//!
//! BLAKE3 comes free from the chunk chaining values ([`crate::hash`]). The
//! SHA-2 family is sequential: it can only hash the object front to back.
//! The filler feeds it the *contiguous completed prefix* as that prefix
//! grows (chunks that arrived in order are still in the page cache; a
//! chunk that arrived out of order is read back when the prefix reaches
//! it). The hashers' state is saved with the object as the prefix grows
//! (`resumable`, `fill::prefix`), so a resume takes it up where the last
//! checkpoint left it instead of hashing the prefix on disk again. Final
//! digests are stored
//! with the object (the store's file `digests` of the object) and are names of the
//! object, like its BLAKE3.
//!
//! An [`Expected`] digest belongs to one request: it never names, renames
//! or hides an object; a mismatch fails that request only.

pub(crate) mod resumable;

use std::fmt;
use std::str::FromStr;

use resumable::{Resumable, Sha256, Sha512, Variant};

/// A digest algorithm the store knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    /// BLAKE3, the store's address (merged from the chunk values).
    Blake3,
    /// SHA-256, what publishers print (computed over the completed prefix).
    Sha256,
    /// SHA-512 (computed over the completed prefix when a request expects it).
    Sha512,
}

impl Algo {
    /// Every algorithm, in the order they are listed.
    pub const ALL: [Algo; 3] = [Algo::Blake3, Algo::Sha256, Algo::Sha512];
    /// The sequential ones (computed over the completed prefix).
    pub const SEQUENTIAL: [Algo; 2] = [Algo::Sha256, Algo::Sha512];

    /// Lowercase name: `blake3`, `sha256`, `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Blake3 => "blake3",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algo::Blake3 | Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// Stable one-byte code in the on-disk digests file.
    pub(crate) fn code(self) -> u8 {
        match self {
            Algo::Blake3 => 1,
            Algo::Sha256 => 2,
            Algo::Sha512 => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Algo> {
        Algo::ALL.into_iter().find(|a| a.code() == code)
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algo {
    type Err = String;
    fn from_str(s: &str) -> Result<Algo, String> {
        match s.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "blake3" | "b3" => Ok(Algo::Blake3),
            "sha256" => Ok(Algo::Sha256),
            "sha512" => Ok(Algo::Sha512),
            other => Err(format!(
                "unknown digest algorithm {other:?} (known: blake3, sha256, sha512)"
            )),
        }
    }
}

/// A digest value of one algorithm.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    /// Which algorithm produced `bytes`.
    pub algo: Algo,
    /// The raw digest (32 bytes for BLAKE3 and SHA-256, 64 for SHA-512).
    pub bytes: Vec<u8>,
}

impl Digest {
    /// Parses `hex` as a digest of `algo` (case-insensitive, full length).
    pub fn from_hex(algo: Algo, hex: &str) -> Result<Digest, String> {
        let hex = hex.trim();
        if hex.len() != algo.output_len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{algo} digest must be {} hex digits, got {hex:?}",
                algo.output_len() * 2
            ));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("{hex:?}: {e}"))?;
        Ok(Digest { algo, bytes })
    }

    /// Parses `ALGO=HEX` (or `ALGO:HEX`).
    pub fn parse(spec: &str) -> Result<Digest, String> {
        let (algo, hex) = spec
            .split_once(['=', ':'])
            .ok_or_else(|| format!("{spec:?}: expected ALGO=HEX (e.g. sha256=ab12...)"))?;
        Digest::from_hex(algo.parse()?, hex)
    }

    /// The BLAKE3 digest `hash`.
    pub fn blake3(hash: &blake3::Hash) -> Digest {
        Digest {
            algo: Algo::Blake3,
            bytes: hash.as_bytes().to_vec(),
        }
    }

    /// The BLAKE3 hash this digest is, if it is one.
    pub fn as_blake3(&self) -> Option<blake3::Hash> {
        let bytes: [u8; 32] = self.bytes.as_slice().try_into().ok()?;
        (self.algo == Algo::Blake3).then(|| blake3::Hash::from_bytes(bytes))
    }

    /// The BLAKE3 hash among `digests` (the root a manifest must prove).
    pub fn find_blake3(digests: &[Digest]) -> Option<blake3::Hash> {
        digests.iter().find_map(Digest::as_blake3)
    }

    /// Lowercase hex of the value.
    pub fn hex(&self) -> String {
        crate::hash::hex_id(&self.bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What one request expects of an object's bytes.
pub type Expected = Vec<Digest>;

/// Running sequential hashers, fed the object front to back.
pub(crate) struct PrefixHasher {
    sha256: Option<Resumable<Sha256>>,
    sha512: Option<Resumable<Sha512>>,
    /// Bytes hashed so far (the prefix length).
    pub(crate) pos: u64,
}

/// The saved state of a [`PrefixHasher`] after `pos` bytes (see
/// [`PrefixHasher::saved`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrefixState {
    pub(crate) pos: u64,
    pub(crate) sha256: Option<[u32; 8]>,
    pub(crate) sha512: Option<[u64; 8]>,
}

impl PrefixState {
    /// The algorithms it carries, in [`Algo::SEQUENTIAL`] order.
    pub(crate) fn algos(&self) -> Vec<Algo> {
        let mut out = Vec::new();
        if self.sha256.is_some() {
            out.push(Algo::Sha256);
        }
        if self.sha512.is_some() {
            out.push(Algo::Sha512);
        }
        out
    }

    /// The state words as bytes (SHA-256's, then SHA-512's): what a
    /// checkpoint file stores.
    pub(crate) fn state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(s) = &self.sha256 {
            out.extend(Sha256::state_bytes(s));
        }
        if let Some(s) = &self.sha512 {
            out.extend(Sha512::state_bytes(s));
        }
        out
    }

    /// The inverse of [`PrefixState::state_bytes`] for `algos`; `None`
    /// when `bytes` has another length.
    pub(crate) fn from_state_bytes(pos: u64, algos: &[Algo], bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let sha256 = match algos.contains(&Algo::Sha256) {
            true => Some(Sha256::state_from(take(Sha256::STATE_BYTES)?)?),
            false => None,
        };
        let sha512 = match algos.contains(&Algo::Sha512) {
            true => Some(Sha512::state_from(take(Sha512::STATE_BYTES)?)?),
            false => None,
        };
        rest.is_empty().then_some(PrefixState {
            pos,
            sha256,
            sha512,
        })
    }
}

impl PrefixHasher {
    pub(crate) fn new(algos: &[Algo]) -> PrefixHasher {
        PrefixHasher {
            sha256: algos.contains(&Algo::Sha256).then(Resumable::new),
            sha512: algos.contains(&Algo::Sha512).then(Resumable::new),
            pos: 0,
        }
    }

    /// Takes up hashing where `saved` left it (`None` when its position is
    /// not on a block boundary of each hasher, which a saved state always
    /// is).
    pub(crate) fn resume(saved: &PrefixState) -> Option<PrefixHasher> {
        let sha256 = match saved.sha256 {
            Some(s) => Some(Resumable::resume(s, saved.pos)?),
            None => None,
        };
        let sha512 = match saved.sha512 {
            Some(s) => Some(Resumable::resume(s, saved.pos)?),
            None => None,
        };
        Some(PrefixHasher {
            sha256,
            sha512,
            pos: saved.pos,
        })
    }

    /// The state to save, when every hasher is on a block boundary (any
    /// multiple of 128 bytes: every chunk boundary).
    pub(crate) fn saved(&self) -> Option<PrefixState> {
        let sha256 = match &self.sha256 {
            Some(h) => Some(h.saved()?),
            None => None,
        };
        let sha512 = match &self.sha512 {
            Some(h) => Some(h.saved()?),
            None => None,
        };
        Some(PrefixState {
            pos: self.pos,
            sha256,
            sha512,
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(bytes);
        }
        self.pos += bytes.len() as u64;
    }

    /// [`PrefixHasher::update`] for bytes that are not in the CPU's
    /// cache (a map of the page cache): it starts the loads of each next
    /// KiB while it hashes this one.
    ///
    /// Why: SHA-256 with SHA-NI waits on every load of such bytes, which
    /// the hardware prefetchers here do not start early enough. On the
    /// project's 2-core Xeon (`benches/examples/sha_from_cache.rs`):
    /// 1.55 GB/s through a map as is, 1.70 GB/s with this, 1.45 GB/s
    /// through a `pread` into a buffer first, 1.73 GB/s over bytes
    /// already in the cache.
    pub(crate) fn update_streaming(&mut self, bytes: &[u8]) {
        const STEP: usize = 1024;
        for (i, piece) in bytes.chunks(STEP).enumerate() {
            if let Some(next) = bytes.get((i + 1) * STEP..) {
                prefetch(&next[..next.len().min(STEP)]);
            }
            self.update(piece);
        }
    }

    pub(crate) fn finish(self) -> Vec<Digest> {
        let mut out = Vec::new();
        if let Some(h) = self.sha256 {
            out.push(Digest {
                algo: Algo::Sha256,
                bytes: h.finish(),
            });
        }
        if let Some(h) = self.sha512 {
            out.push(Digest {
                algo: Algo::Sha512,
                bytes: h.finish(),
            });
        }
        out
    }
}

/// SHA-256 as the fill's prefix hasher computes it, fed with loads
/// started ahead (`update_streaming`) or plain updates: for the benchmark
/// that compares them (`benches/examples/sha_from_cache.rs`).
#[cfg(feature = "internals")]
pub struct Sha256AsPrefix(PrefixHasher);

#[cfg(feature = "internals")]
impl Default for Sha256AsPrefix {
    fn default() -> Self {
        Sha256AsPrefix(PrefixHasher::new(&[Algo::Sha256]))
    }
}

#[cfg(feature = "internals")]
impl Sha256AsPrefix {
    /// The next bytes; `streaming`: with the loads started ahead.
    pub fn update(&mut self, bytes: &[u8], streaming: bool) {
        match streaming {
            true => self.0.update_streaming(bytes),
            false => self.0.update(bytes),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish().remove(0).bytes
    }
}

/// Asks the CPU to load `bytes` into its cache (a hint: nothing happens
/// where there is no such instruction).
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing into the program and cannot
        // fault; the address is inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn parse_forms() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(&format!("SHA256={}", h.to_uppercase())).unwrap();
        assert_eq!(d.algo, Algo::Sha256);
        assert_eq!(d.hex(), h);
        assert_eq!(d.to_string(), format!("sha256:{h}"));
        assert!(Digest::parse(&format!("sha-256:{h}")).is_ok());
        assert!(Digest::parse(&format!("sha512={h}")).is_err(), "too short");
        assert!(Digest::parse("md5=00").is_err());
        assert!(Digest::parse(h).is_err(), "no algorithm");
    }

    #[test]
    fn prefix_hasher_matches_one_shot() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut p = PrefixHasher::new(&Algo::SEQUENTIAL);
        for piece in bytes.chunks(7777) {
            p.update(piece);
        }
        let d = p.finish();
        assert_eq!(d[0].bytes, sha2::Sha256::digest(&bytes).to_vec());
        assert_eq!(d[1].bytes, sha2::Sha512::digest(&bytes).to_vec());
    }

    #[test]
    fn streaming_updates_hash_the_same_bytes() {
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        // Lengths around the prefetch step (1 KiB) and none at all.
        for len in [0, 1, 1023, 1024, 1025, 4096, 65_537, 70_000] {
            let mut plain = PrefixHasher::new(&Algo::SEQUENTIAL);
            let mut streaming = PrefixHasher::new(&Algo::SEQUENTIAL);
            plain.update(&bytes[..len]);
            // In two calls, split off the step: the state carries over.
            let cut = len / 3;
            streaming.update_streaming(&bytes[..cut]);
            streaming.update_streaming(&bytes[cut..len]);
            assert_eq!(streaming.pos, len as u64);
            assert_eq!(streaming.finish(), plain.finish(), "len {len}");
        }
    }

    #[test]
    fn prefix_hasher_saves_and_resumes() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut p = PrefixHasher::new(&Algo::SEQUENTIAL);
        p.update(&bytes[..65_536]);
        let saved = p.saved().expect("chunk boundary");
        assert_eq!(saved.algos(), Algo::SEQUENTIAL.to_vec());
        let raw = saved.state_bytes();
        let back = PrefixState::from_state_bytes(65_536, &Algo::SEQUENTIAL, &raw).unwrap();
        assert_eq!(back, saved);
        assert!(PrefixState::from_state_bytes(65_536, &[Algo::Sha256], &raw).is_none());
        let mut q = PrefixHasher::resume(&back).unwrap();
        q.update(&bytes[65_536..]);
        let d = q.finish();
        assert_eq!(d[0].bytes, sha2::Sha256::digest(&bytes).to_vec());
        assert_eq!(d[1].bytes, sha2::Sha512::digest(&bytes).to_vec());
        p.update(&bytes[65_536..65_537]);
        assert!(p.saved().is_none());
    }
}
