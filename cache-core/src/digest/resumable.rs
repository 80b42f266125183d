//! SHA-256 and SHA-512 whose running state can be saved and taken up
//! again, so a resumed fill does not hash the object's completed prefix a
//! second time (see `fill::prefix`).
//!
//! The `sha2` crate keeps its state private; its `compress` feature gives
//! the raw compression functions (the same accelerated code paths: SHA-NI,
//! AVX2, NEON). What this module adds is the part around them: the
//! initial state, buffering to whole blocks and the final padding of FIPS
//! 180-4 §5.1 — checked against `sha2`'s own hashers for every length
//! split anywhere by the tests below.

use sha2::digest::generic_array::GenericArray;

/// One member of the SHA-2 family: its state, block and length field.
pub(crate) trait Variant {
    /// The eight chaining words.
    type State: Copy + Eq + std::fmt::Debug;
    /// Bytes per block: 64 or 128.
    const BLOCK: usize;
    /// Bytes of the message length at the end of the padding: 8 or 16.
    const LEN_BYTES: usize;
    /// Bytes of the state, as [`Variant::state_bytes`] writes it.
    const STATE_BYTES: usize;
    const INIT: Self::State;
    /// Compresses whole blocks (a multiple of `BLOCK` bytes) into
    /// `state`.
    fn compress(state: &mut Self::State, blocks: &[u8]);
    /// The state's words, big-endian: the digest after the padding, the
    /// checkpoint form before it.
    fn state_bytes(state: &Self::State) -> Vec<u8>;
    /// The inverse of [`Variant::state_bytes`]; `None` for another length.
    fn state_from(bytes: &[u8]) -> Option<Self::State>;
}

/// SHA-256.
pub(crate) enum Sha256 {}
/// SHA-512.
pub(crate) enum Sha512 {}

/// The two impls differ only in their word type, sizes, initial state and
/// compression function.
macro_rules! variant {
    ($name:ty, $word:ty, $block:expr, $len_bytes:expr, $compress:path, $init:expr) => {
        impl Variant for $name {
            type State = [$word; 8];
            const BLOCK: usize = $block;
            const LEN_BYTES: usize = $len_bytes;
            const STATE_BYTES: usize = 8 * std::mem::size_of::<$word>();
            const INIT: [$word; 8] = $init;
            fn compress(state: &mut [$word; 8], blocks: &[u8]) {
                debug_assert_eq!(blocks.len() % $block, 0);
                // SAFETY: `GenericArray<u8, N>` is `repr(transparent)` over
                // `[u8; N]` (size N, alignment 1), so `len / N` of them are
                // exactly the first `len / N * N` bytes; `sha2` casts the
                // same way the other way round.
                let blocks: &[GenericArray<u8, _>] = unsafe {
                    std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() / $block)
                };
                // One call for them all: the accelerated code keeps the
                // state in registers across blocks (per block, the calls
                // cost SHA-256 8 % over bytes in the cache).
                $compress(state, blocks);
            }
            fn state_bytes(state: &[$word; 8]) -> Vec<u8> {
                state.iter().flat_map(|w| w.to_be_bytes()).collect()
            }
            fn state_from(bytes: &[u8]) -> Option<[$word; 8]> {
                const W: usize = std::mem::size_of::<$word>();
                if bytes.len() != 8 * W {
                    return None;
                }
                let mut s = [0; 8];
                for (w, b) in s.iter_mut().zip(bytes.chunks_exact(W)) {
                    *w = <$word>::from_be_bytes(b.try_into().ok()?);
                }
                Some(s)
            }
        }
    };
}

variant!(
    Sha256,
    u32,
    64,
    8,
    sha2::compress256,
    [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ]
);

variant!(
    Sha512,
    u64,
    128,
    16,
    sha2::compress512,
    [
        0x6a09e667f3bcc908,
        0xbb67ae8584caa73b,
        0x3c6ef372fe94f82b,
        0xa54ff53a5f1d36f1,
        0x510e527fade682d1,
        0x9b05688c2b3e6c1f,
        0x1f83d9abfb41bd6b,
        0x5be0cd19137e2179,
    ]
);

/// A running SHA-2 hash that can be saved at any block boundary
/// ([`Resumable::saved`]) and taken up again from there
/// ([`Resumable::resume`]).
pub(crate) struct Resumable<V: Variant> {
    state: V::State,
    /// Bytes of a block not yet full.
    buf: [u8; 128],
    buf_len: usize,
    /// Bytes hashed so far.
    len: u64,
}

impl<V: Variant> Resumable<V> {
    pub(crate) fn new() -> Self {
        Resumable {
            state: V::INIT,
            buf: [0; 128],
            buf_len: 0,
            len: 0,
        }
    }

    /// Takes up a hash saved after `len` bytes (a multiple of the block
    /// size; `None` otherwise).
    pub(crate) fn resume(state: V::State, len: u64) -> Option<Self> {
        len.is_multiple_of(V::BLOCK as u64).then_some(Resumable {
            state,
            buf: [0; 128],
            buf_len: 0,
            len,
        })
    }

    /// The state to save, when the bytes hashed end on a block boundary.
    pub(crate) fn saved(&self) -> Option<V::State> {
        (self.buf_len == 0).then_some(self.state)
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.buf_len > 0 {
            let take = (V::BLOCK - self.buf_len).min(bytes.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&bytes[..take]);
            self.buf_len += take;
            bytes = &bytes[take..];
            if self.buf_len < V::BLOCK {
                return;
            }
            V::compress(&mut self.state, &self.buf[..V::BLOCK]);
            self.buf_len = 0;
        }
        let whole = bytes.len() - bytes.len() % V::BLOCK;
        let (blocks, rest) = bytes.split_at(whole);
        if !blocks.is_empty() {
            V::compress(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The digest: the padding (0x80, zeros, the length in bits,
    /// big-endian) and the state's words, big-endian.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let bits = u128::from(self.len) * 8;
        let mut pad = [0u8; 256];
        pad[0] = 0x80;
        // Room for 0x80 and the length field in this block, else the next.
        let used = self.buf_len + 1 + V::LEN_BYTES;
        let blocks = used.div_ceil(V::BLOCK);
        let pad_len = blocks * V::BLOCK - self.buf_len;
        let len_field = &bits.to_be_bytes()[16 - V::LEN_BYTES..];
        pad[pad_len - V::LEN_BYTES..pad_len].copy_from_slice(len_field);
        let len_before = self.len;
        self.update(&pad[..pad_len]);
        debug_assert_eq!(self.buf_len, 0);
        debug_assert_eq!(self.len, len_before + pad_len as u64);
        V::state_bytes(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    fn check<V: Variant>(one_shot: impl Fn(&[u8]) -> Vec<u8>) {
        // Every length around the padding's edges, and a few large ones.
        let lens: Vec<usize> = (0..=300)
            .chain([1000, 4096, 65_536 + 17, 200_000])
            .collect();
        let data = bytes(200_000);
        for &n in &lens {
            let want = one_shot(&data[..n]);
            let mut h = Resumable::<V>::new();
            h.update(&data[..n]);
            assert_eq!(h.finish(), want, "length {n}");
            // Split anywhere, fed in odd pieces.
            let mut h = Resumable::<V>::new();
            for piece in data[..n].chunks(37) {
                h.update(piece);
            }
            assert_eq!(h.finish(), want, "length {n} in pieces");
        }
    }

    #[test]
    fn sha256_matches_the_sha2_crate() {
        check::<Sha256>(|b| sha2::Sha256::digest(b).to_vec());
    }

    #[test]
    fn sha512_matches_the_sha2_crate() {
        check::<Sha512>(|b| sha2::Sha512::digest(b).to_vec());
    }

    fn save_and_resume<V: Variant>(one_shot: impl Fn(&[u8]) -> Vec<u8>) {
        let data = bytes(100_000);
        let want = one_shot(&data);
        for cut in [0, V::BLOCK, 64 * V::BLOCK, 65_536] {
            let mut h = Resumable::<V>::new();
            h.update(&data[..cut]);
            let saved = h.saved().expect("on a block boundary");
            let bytes = V::state_bytes(&saved);
            assert_eq!(bytes.len(), V::STATE_BYTES);
            let state = V::state_from(&bytes).expect("round trip");
            let mut h = Resumable::<V>::resume(state, cut as u64).expect("aligned");
            h.update(&data[cut..]);
            assert_eq!(h.finish(), want, "resumed at {cut}");
        }
        let mut h = Resumable::<V>::new();
        h.update(&data[..V::BLOCK + 1]);
        assert!(h.saved().is_none(), "not on a block boundary");
        assert!(Resumable::<V>::resume(V::INIT, 1).is_none());
        assert!(V::state_from(&[0; 5]).is_none());
    }

    #[test]
    fn sha256_resumes_from_a_saved_state() {
        save_and_resume::<Sha256>(|b| sha2::Sha256::digest(b).to_vec());
    }

    #[test]
    fn sha512_resumes_from_a_saved_state() {
        save_and_resume::<Sha512>(|b| sha2::Sha512::digest(b).to_vec());
    }
}
