//! Gradients summed over the ranks in buckets of about 25 MiB (PyTorch DDP's default): one
//! collective per bucket instead of one per tensor (SD's UNet has ~700), each large enough
//! to run at link speed, few enough that the copies in and out stay small.
//!
//! Buckets follow the parameters in reverse order, the order the backward pass finishes
//! them. They are reduced after the backward (and only after the last micro-batch of an
//! accumulated step): candle's backward returns every gradient at once on one stream, so
//! there is no point at which a finished bucket could start early.

use super::Collective;
use candle_core::{Result, Tensor, Var};
use std::ops::Range;

/// f32 elements per bucket (25 MiB).
pub const BUCKET_ELEMENTS: usize = 25 << 18;

/// Parameter indices per bucket, given each parameter's element count: consecutive runs in
/// reverse order of at most `limit` elements (a larger parameter gets a bucket alone).
pub fn plan(sizes: &[usize], limit: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut filled = 0;
    for i in (0..sizes.len()).rev() {
        match buckets.last_mut() {
            Some(b) if filled + sizes[i] <= limit => b.push(i),
            _ => {
                buckets.push(vec![i]);
                filled = 0;
            }
        }
        filled += sizes[i];
    }
    buckets
}

/// Replace every gradient by its sum over the ranks. A parameter without a gradient on this
/// rank (a rank with no samples in a short batch) contributes zeros, so every rank sends
/// buckets of the same layout.
pub fn sum_gradients(
    c: &dyn Collective,
    vars: &[Var],
    grads: &mut [Option<Tensor>],
    limit: usize,
) -> Result<()> {
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    for bucket in plan(&sizes, limit) {
        let mut flat = Vec::with_capacity(bucket.len());
        let mut spans: Vec<(usize, Range<usize>)> = Vec::with_capacity(bucket.len());
        let mut at = 0;
        for &i in &bucket {
            let g = match grads[i].take() {
                Some(g) => g.flatten_all()?,
                None => vars[i].zeros_like()?.flatten_all()?,
            };
            flat.push(g);
            spans.push((i, at..at + sizes[i]));
            at += sizes[i];
        }
        let summed = c.sum(&Tensor::cat(&flat, 0)?)?;
        drop(flat);
        for (i, span) in spans {
            grads[i] = Some(
                summed
                    .narrow(0, span.start, span.len())?
                    .reshape(vars[i].shape())?,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::dist::threads::ranks;
    use candle_core::Device;

    #[test]
    fn buckets_hold_every_parameter_once_in_reverse_order() {
        let sizes = [5, 3, 9, 1, 1, 4, 12, 2];
        let buckets = plan(&sizes, 8);
        let order: Vec<usize> = buckets.iter().flatten().copied().collect();
        assert_eq!(order, (0..sizes.len()).rev().collect::<Vec<_>>());
        for b in &buckets {
            let n: usize = b.iter().map(|&i| sizes[i]).sum();
            assert!(n <= 8 || b.len() == 1, "bucket {b:?} holds {n}");
        }
        // 2 | 12 | 4+1+1 | 9 | 3+5 (the 3 and the 5 fit together).
        assert_eq!(
            buckets,
            vec![vec![7], vec![6], vec![5, 4, 3], vec![2], vec![1, 0]]
        );
    }

    /// Three simulated ranks: each gets the sum of all ranks' gradients, in the parameters'
    /// shapes, with a missing gradient counted as zeros.
    #[test]
    fn every_rank_gets_the_sum_of_all_gradients() {
        let dev = Device::Cpu;
        let shapes: [&[usize]; 4] = [&[3, 2], &[7], &[2, 2, 2], &[1]];
        let grad = |rank: usize, i: usize| -> Option<Tensor> {
            (rank != 1 || i != 2).then(|| {
                let n: usize = shapes[i].iter().product();
                let v: Vec<f32> = (0..n).map(|k| (rank * 100 + i * 10 + k) as f32).collect();
                Tensor::from_vec(v, shapes[i], &dev).unwrap()
            })
        };
        let results = ranks(3, |c| {
            let vars: Vec<Var> = shapes
                .iter()
                .map(|s| Var::zeros(*s, candle_core::DType::F32, &dev).unwrap())
                .collect();
            let mut grads: Vec<Option<Tensor>> = (0..4).map(|i| grad(c.rank(), i)).collect();
            sum_gradients(c, &vars, &mut grads, 9).unwrap();
            grads
        });
        for i in 0..4 {
            let mut want = grad(0, i).unwrap();
            for r in 1..3 {
                if let Some(g) = grad(r, i) {
                    want = (want + g).unwrap();
                }
            }
            for got in &results {
                let got = got[i].as_ref().unwrap();
                assert_eq!(got.dims(), shapes[i]);
                let d = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
    }
}
