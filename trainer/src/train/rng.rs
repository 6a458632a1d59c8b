//! Counter-based randomness: every random draw of a run comes from a generator seeded by
//! (run seed, purpose, step, index), so the generator's whole state is the step counter the
//! checkpoint already records — a resumed run draws exactly what the uninterrupted run
//! would have — and draws happen on the host, so a seed means the same on any device.

use rand::rngs::StdRng;
use rand::SeedableRng;

#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Stream {
    /// Order of the samples in an epoch (index: epoch).
    DataOrder = 1,
    /// Latent draws, timesteps, noise and caption dropout of a micro-batch.
    Batch = 2,
    /// Order of the prior-preservation samples (index: epoch).
    PriorOrder = 3,
}

/// SplitMix64's finaliser: nearby inputs give unrelated seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn generator(seed: u64, stream: Stream, a: u64, b: u64) -> StdRng {
    let s = mix(mix(mix(seed) ^ stream as u64) ^ a);
    StdRng::seed_from_u64(mix(s ^ b.rotate_left(17)))
}
