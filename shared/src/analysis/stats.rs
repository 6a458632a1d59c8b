//! Statistics and a histogram of one tensor.

use super::CHUNK;
use crate::error::Result;
use crate::plan::{ElementReader, LazyTensor};
use serde::Serialize;

/// What `ldmkit stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TensorStats {
    pub numel: u64,
    /// Over finite values; `None` when there are none.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation (torch's `std(unbiased=False)`).
    pub std: Option<f64>,
    pub nan: u64,
    pub inf: u64,
    pub zeros: u64,
    pub histogram: Histogram,
}

/// Equal-width bins over `[lo, hi]` of the finite values.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

/// Two streaming passes: moments and range, then the histogram.
pub fn tensor_stats(
    reader: &mut ElementReader<'_>,
    tensor: &LazyTensor,
    bins: usize,
) -> Result<TensorStats> {
    let numel = tensor.numel();
    let (mut n, mut mean, mut m2) = (0u64, 0.0f64, 0.0f64);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut nan, mut inf, mut zeros) = (0, 0, 0);
    let mut start = 0;
    while start < numel {
        let count = (numel - start).min(CHUNK);
        for v in reader.read_values(tensor, start, count)? {
            if v.is_nan() {
                nan += 1;
            } else if v.is_infinite() {
                inf += 1;
            } else {
                // Welford: stable for millions of values.
                n += 1;
                let d = v - mean;
                mean += d / n as f64;
                m2 += d * (v - mean);
                lo = lo.min(v);
                hi = hi.max(v);
                zeros += u64::from(v == 0.0);
            }
        }
        start += count;
    }
    let bins = bins.max(1);
    let mut counts = vec![0u64; bins];
    if n > 0 {
        let width = (hi - lo) / bins as f64;
        let mut start = 0;
        while start < numel {
            let count = (numel - start).min(CHUNK);
            for v in reader.read_values(tensor, start, count)? {
                if v.is_finite() {
                    let b = if width > 0.0 {
                        ((v - lo) / width) as usize
                    } else {
                        0
                    };
                    counts[b.min(bins - 1)] += 1;
                }
            }
            start += count;
        }
    }
    let some = |v: f64| (n > 0).then_some(v);
    Ok(TensorStats {
        numel,
        min: some(lo),
        max: some(hi),
        mean: some(mean),
        std: some((m2 / n.max(1) as f64).sqrt()),
        nan,
        inf,
        zeros,
        histogram: Histogram {
            lo: if n > 0 { lo } else { 0.0 },
            hi: if n > 0 { hi } else { 0.0 },
            counts,
        },
    })
}
