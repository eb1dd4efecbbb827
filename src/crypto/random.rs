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
