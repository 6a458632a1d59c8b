//! Data-parallel training: one process per GPU, gradients summed over NCCL.
//!
//! Semantics are one GPU's with the same global batch: `--batch-size` is the global batch,
//! every rank walks the same data order and draws the same host randomness (keyed by seed
//! and step), and rank r computes only its contiguous slice of each batch ([`shard`]). The
//! gradients of the slices — each weighted by 1 / global batch — are summed over the ranks in
//! buckets ([`bucket`]), so every rank clips and steps AdamW on the same gradient and the
//! weights stay identical with no broadcast. Only rank 0 writes the run folder; checkpoints
//! hold nothing per rank, so `--resume` works for any rank count.
//!
//! [`launch`] starts and supervises the ranks (a rank that fails takes the job down),
//! [`nccl`] is the collective on GPUs, [`threads`] simulates N ranks in one process so the
//! rank logic is tested on CPUs, and [`watchdog`] ends a rank whose peers stopped answering.

pub mod bucket;
// The launcher and the watchdog only run in builds with NCCL; their tests run everywhere.
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
pub mod launch;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod threads;
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
pub mod watchdog;

use candle_core::{Result, Tensor};

/// What a rank needs from the other ranks.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// The elementwise sum over all ranks of `t` (f32, any shape, on this rank's device);
    /// every rank calls it in the same order with the same shapes.
    fn sum(&self, t: &Tensor) -> Result<Tensor>;
    /// The same for a few host numbers (losses, counts, flags).
    fn sum_host(&self, v: &[f64]) -> Result<Vec<f64>>;
    /// Whether there are ranks to sum with (also a one-rank NCCL job, so one GPU runs the
    /// multi-GPU path).
    fn distributed(&self) -> bool {
        true
    }
}

/// One process, no peers.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn sum_host(&self, v: &[f64]) -> Result<Vec<f64>> {
        Ok(v.to_vec())
    }
    fn distributed(&self) -> bool {
        false
    }
}

/// The rows of a `len`-sample batch that rank `rank` of `world` computes: contiguous and
/// balanced (sizes differ by at most one; a rank may get none of a short last batch).
pub fn shard(len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let world = world.max(1);
    (rank * len / world)..((rank + 1) * len / world)
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_are_disjoint_and_cover_every_row() {
        for len in 0..20 {
            for world in 1..6 {
                let mut seen = Vec::new();
                for r in 0..world {
                    let s = shard(len, r, world);
                    assert!(s.len() <= len.div_ceil(world) && s.len() + 1 >= len / world);
                    seen.extend(s);
                }
                assert_eq!(
                    seen,
                    (0..len).collect::<Vec<_>>(),
                    "len {len} world {world}"
                );
            }
        }
    }
}
