//! Randomness. Everything random in keyward comes from `ring::rand::SystemRandom`
//! (the operating system's CSPRNG), including the RNG handed to the `rsa` crate.

use ring::rand::{SecureRandom as _, SystemRandom};

/// Fills `buf` from the system CSPRNG.
///
/// # Panics
/// Only if the operating system's random source fails, which ring treats as
/// unrecoverable; continuing without randomness would be worse.
pub fn fill(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// Bytes drawn from the system CSPRNG in 4 KiB batches per thread: for
/// values that must be unpredictable and unique but guard nothing (request
/// ids, token ids), where one system call per value would be a measurable share of a
/// request. Never for keys, secrets or tokens: use [`bytes`].
pub fn unguessable<const N: usize>() -> [u8; N] {
    const BATCH: usize = 4096;
    const { assert!(N <= BATCH) };
    thread_local! {
        static POOL: std::cell::RefCell<(Box<[u8; BATCH]>, usize)> =
            std::cell::RefCell::new((Box::new([0; BATCH]), BATCH));
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (buf, used) = &mut *pool;
        if *used + N > BATCH {
            fill(&mut buf[..]);
            *used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&buf[*used..*used + N]);
        // Each byte is handed out once.
        buf[*used..*used + N].fill(0);
        *used += N;
        out
    })
}

/// A fresh request id: 12 unguessable bytes, 16 characters of base64url.
/// Random rather than counted, so a caller learns nothing of other callers'
/// traffic from it.
pub fn request_id() -> String {
    super::b64url(&unguessable::<12>())
}

/// Adapts `SystemRandom` to the `rand_core` traits the `rsa` crate needs for key
/// generation.
pub struct RingRng;

impl rand_core::RngCore for RingRng {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes(bytes())
    }

    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(bytes())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for RingRng {}

#[cfg(test)]
mod tests {
    use super::unguessable;

    #[test]
    fn unguessable_values_are_distinct_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // 2000 × 12 bytes spans several 4 KiB refills.
        for _ in 0..2000 {
            assert!(seen.insert(unguessable::<12>()), "a value repeated");
        }
        assert!(seen.iter().all(|v| v != &[0u8; 12]));
    }
}
