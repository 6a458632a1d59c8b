//! Evaluating lazy tensors, a chunk of elements at a time.
//!
//! Memory stays bounded by the chunk, not the tensor: element-wise expressions (casts,
//! weighted sums, add difference, slices) read exactly the element range they produce.
//! Only a transpose or a strided gather needs a whole tensor or storage span, and those are
//! capped ([`MAX_MATERIALIZED`]); they occur for small tensors (OpenCLIP's text projection,
//! odd views).
//!
//! Arithmetic follows torch on CPU: float32 inputs are computed in float32 with the scalar
//! rounded to float32 (so `(1-α)·a + α·b` equals torch's result bit for bit); float64 in
//! float64; float16/bfloat16 are widened to float32 and rounded once at the end. Casts round
//! to nearest even, as torch does.

use super::lazy::{LazyData, LazyTensor};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::{read_vec, SharedSource};
use crate::tensor::{DataLocation, TensorRef};
use half::{bf16, f16};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

/// The most bytes a transpose, strided gather or compressed storage may pull into memory.
pub const MAX_MATERIALIZED: u64 = 1 << 30;
/// Reads of at most this many bytes are served from a read-ahead window of
/// [`WINDOW_BYTES`] per input, so a file of many tiny tensors costs a read call per window,
/// not per tensor.
const SMALL_READ: u64 = 4 << 10;
const WINDOW_BYTES: u64 = 64 << 10;

/// The last read-ahead window of each input, so that consecutive small reads of one input
/// (the tensors of a file of many small ones, in order) cost a read call per window.
#[derive(Debug, Default)]
pub(super) struct ReadWindows(HashMap<usize, (u64, Vec<u8>)>);

impl ReadWindows {
    /// Bytes `offset..offset + len` of input `input` (`source`), reading `window` bytes or
    /// to the end of the input when they are not at hand.
    pub(super) fn read(
        &mut self,
        input: usize,
        source: &dyn crate::source::Source,
        offset: u64,
        len: u64,
        window: u64,
    ) -> std::io::Result<&[u8]> {
        let (from, bytes) = self.0.entry(input).or_default();
        let end = offset.checked_add(len);
        let hit = offset >= *from && end.is_some_and(|e| e <= *from + bytes.len() as u64);
        if !hit {
            // Past the end, the read of exactly the asked range fails as it would have.
            let take = match end {
                Some(e) if e <= source.len() => window.max(len).min(source.len() - offset),
                _ => len,
            };
            bytes.resize(take as usize, 0);
            *from = offset;
            if let Err(e) = source.read_at(offset, bytes) {
                bytes.clear();
                return Err(e);
            }
        }
        let at = (offset - *from) as usize;
        Ok(&bytes[at..at + len as usize])
    }
}

/// Non-finite values found in computed outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonFinite {
    pub nan: u64,
    pub inf: u64,
}

/// Reads lazy tensors' elements from the inputs.
pub struct ElementReader<'a> {
    inputs: &'a [SharedSource],
    /// Whole tensors or storages pulled into memory (transposes, deflated storages), keyed
    /// by the address of their data so repeated chunks reuse them.
    materialized: HashMap<usize, Arc<Vec<u8>>>,
    /// Inflated storages of re-zipped files, by `(input, entry offset)`.
    inflated: HashMap<(usize, u64), Arc<Vec<u8>>>,
    /// The last read-ahead window of each input: its offset and bytes (kept across
    /// [`ElementReader::clear`]: it is small, and the next tiny tensor is likely in it).
    windows: ReadWindows,
    /// Adapter factors decoded to f32 (`plan::delta`), by the address of their data.
    pub(super) factors: HashMap<usize, Arc<Vec<f32>>>,
    /// Products of adapter factors computed once per tensor (Tucker cores, LoKr factors).
    pub(super) derived: HashMap<usize, Arc<Vec<f32>>>,
}

impl<'a> ElementReader<'a> {
    pub fn new(inputs: &'a [SharedSource]) -> Self {
        ElementReader {
            inputs,
            materialized: HashMap::new(),
            inflated: HashMap::new(),
            windows: ReadWindows::default(),
            factors: HashMap::new(),
            derived: HashMap::new(),
        }
    }

    /// Forget tensors and storages pulled into memory (called between output parts, so at
    /// most one tensor's worth is held at a time).
    pub fn clear(&mut self) {
        self.materialized.clear();
        self.inflated.clear();
        self.factors.clear();
        self.derived.clear();
    }

    /// Append the bytes of elements `start..start + count` of `tensor` (row-major, in its
    /// dtype) to `out`.
    pub fn read_bytes(
        &mut self,
        tensor: &LazyTensor,
        start: u64,
        count: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let size = tensor.dtype.size();
        if tensor.dtype.bits() % 8 != 0 {
            return Err(Error::op(format!(
                "{} tensors cannot be rewritten element-wise",
                tensor.dtype.torch_name()
            )));
        }
        match &*tensor.data {
            LazyData::Stored {
                input,
                storage,
                strides,
                storage_offset,
            } => {
                if TensorRef::contiguous(&tensor.shape, strides) {
                    let first = storage_offset + start;
                    self.storage_bytes(*input, storage, first * size, count * size, out)
                } else {
                    let index = element_indices(&tensor.shape, strides, start, count);
                    let (lo, hi) = match (index.iter().min(), index.iter().max()) {
                        (Some(&lo), Some(&hi)) => (lo, hi),
                        _ => return Ok(()),
                    };
                    let base = storage_offset + lo;
                    let span = (hi - lo + 1) * size;
                    check_materialized(span)?;
                    let mut buf = Vec::with_capacity(span as usize);
                    self.storage_bytes(*input, storage, base * size, span, &mut buf)?;
                    for i in index {
                        let at = ((i - lo) * size) as usize;
                        out.extend_from_slice(&buf[at..at + size as usize]);
                    }
                    Ok(())
                }
            }
            LazyData::Reshape(source) => self.read_bytes(source, start, count, out),
            LazyData::Flipped { source, neg, conj } => {
                let at = out.len();
                self.read_bytes(source, start, count, out)?;
                flip(&mut out[at..], tensor.dtype, *neg, *conj)
            }
            LazyData::Slice {
                source,
                start: first,
            } => self.read_bytes(source, first + start, count, out),
            LazyData::Concat(parts) => {
                let (mut at, end) = (start, start + count);
                let mut base = 0;
                for p in parts {
                    let n = p.numel();
                    if at < base + n && at < end {
                        let take = (base + n).min(end) - at;
                        self.read_bytes(p, at - base, take, out)?;
                        at += take;
                    }
                    base += n;
                }
                Ok(())
            }
            LazyData::Constant(bytes) => {
                let (a, b) = ((start * size) as usize, ((start + count) * size) as usize);
                out.extend_from_slice(&bytes[a..b]);
                Ok(())
            }
            LazyData::Transpose(source) => {
                let whole = self.materialize(source)?;
                let [rows, cols] = source.shape[..] else {
                    return Err(Error::op("transpose of a tensor that is not 2-D"));
                };
                // Output element k = (i, j) of the [cols, rows] result = source (j, i).
                for k in start..start + count {
                    let (i, j) = (k / rows, k % rows);
                    let at = ((j * cols + i) * size) as usize;
                    out.extend_from_slice(&whole[at..at + size as usize]);
                }
                Ok(())
            }
            LazyData::Adapted { base, terms }
                if base.dtype == tensor.dtype && base.shape == tensor.shape =>
            {
                self.adapted_bytes(tensor.dtype, base, terms, start, count, out)
            }
            LazyData::Cast(source)
                if is_half_or_single(source.dtype) && is_half_or_single(tensor.dtype) =>
            {
                let mut raw = Vec::with_capacity((count * source.dtype.size()) as usize);
                self.read_bytes(source, start, count, &mut raw)?;
                cast_floats(&raw, source.dtype, tensor.dtype, out);
                Ok(())
            }
            _ => {
                let values = self.read_values(tensor, start, count)?;
                encode(&values, tensor.dtype, out)
            }
        }
    }

    /// Elements `start..start + count` of `tensor` as numbers (f64 holds every value of the
    /// float and integer types up to 32 bits exactly).
    pub fn read_values(&mut self, tensor: &LazyTensor, start: u64, count: u64) -> Result<Vec<f64>> {
        let values = match &*tensor.data {
            LazyData::Cast(source) => self.read_values(source, start, count)?,
            LazyData::WeightedSum { a, b, alpha } => {
                let (x, y) = (
                    self.read_values(a, start, count)?,
                    self.read_values(b, start, count)?,
                );
                if tensor.dtype == DType::Float64 {
                    x.iter()
                        .zip(&y)
                        .map(|(x, y)| (1.0 - alpha) * x + alpha * y)
                        .collect()
                } else {
                    let (wa, wb) = ((1.0 - alpha) as f32, *alpha as f32);
                    x.iter()
                        .zip(&y)
                        .map(|(&x, &y)| (wa * x as f32 + wb * y as f32) as f64)
                        .collect()
                }
            }
            LazyData::AddDifference { a, b, c, alpha } => {
                let x = self.read_values(a, start, count)?;
                let y = self.read_values(b, start, count)?;
                let z = self.read_values(c, start, count)?;
                if tensor.dtype == DType::Float64 {
                    (0..x.len()).map(|i| x[i] + (y[i] - z[i]) * alpha).collect()
                } else {
                    let w = *alpha as f32;
                    (0..x.len())
                        .map(|i| (x[i] as f32 + (y[i] as f32 - z[i] as f32) * w) as f64)
                        .collect()
                }
            }
            LazyData::Adapted { base, terms } => {
                if base.dtype != tensor.dtype || base.shape != tensor.shape {
                    return Err(Error::op("an adapted tensor differs from its base"));
                }
                let v = self.adapted_values(tensor.dtype, base, terms, start, count)?;
                return Ok(v.into_iter().map(f64::from).collect());
            }
            _ => {
                let mut bytes = Vec::with_capacity((count * tensor.dtype.size()) as usize);
                self.read_bytes(tensor, start, count, &mut bytes)?;
                return decode(&bytes, tensor.dtype);
            }
        };
        // A computed tensor's values are what its dtype can hold: an outer operation reads
        // them rounded, as it would read them from a file.
        Ok(round_to(values, tensor.dtype))
    }

    fn storage_bytes(
        &mut self,
        input: usize,
        storage: &crate::tensor::StorageRef,
        offset: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let source = self
            .inputs
            .get(input)
            .ok_or_else(|| Error::op(format!("input {input} is not open")))?;
        let end = offset
            .checked_add(len)
            .filter(|&e| storage.nbytes().is_some_and(|n| e <= n))
            .ok_or_else(|| Error::torch(format!("view reaches past storage '{}'", storage.key)))?;
        match &storage.data {
            DataLocation::Range { offset: at, .. } => {
                let (start, fits) = (at + offset, (at + offset).checked_add(len));
                if len > SMALL_READ || fits.is_none_or(|e| e > source.len()) {
                    // Large reads go straight to the output; one past the end fails here.
                    out.extend_from_slice(&read_vec(source.as_ref(), start, len)?);
                    return Ok(());
                }
                let bytes = self
                    .windows
                    .read(input, source.as_ref(), start, len, WINDOW_BYTES)?;
                out.extend_from_slice(bytes);
                Ok(())
            }
            DataLocation::Deflated {
                entry,
                offset: at,
                compressed_len,
                len: full,
            } => {
                let key = (input, *at);
                let whole = match self.inflated.get(&key) {
                    Some(w) => w.clone(),
                    None => {
                        check_materialized(*full)?;
                        // Deflate never grows data by more than a few bytes per 16 KiB.
                        if *compressed_len > full + full / 8 + (1 << 20) {
                            return Err(Error::zip(format!(
                                "{entry}: {compressed_len} compressed bytes for {full}"
                            )));
                        }
                        let packed = read_vec(source.as_ref(), *at, *compressed_len)?;
                        let mut data = Vec::with_capacity(*full as usize);
                        flate2::read::DeflateDecoder::new(&packed[..])
                            .take(*full)
                            .read_to_end(&mut data)
                            .map_err(|e| Error::zip(format!("{entry}: {e}")))?;
                        if (data.len() as u64) < *full {
                            return Err(Error::zip(format!("{entry}: inflates short")));
                        }
                        let data = Arc::new(data);
                        self.inflated.insert(key, data.clone());
                        data
                    }
                };
                out.extend_from_slice(&whole[offset as usize..end as usize]);
                Ok(())
            }
            DataLocation::Pending => Err(Error::torch(format!(
                "storage '{}' was never located",
                storage.key
            ))),
        }
    }

    fn materialize(&mut self, tensor: &LazyTensor) -> Result<Arc<Vec<u8>>> {
        let key = Arc::as_ptr(&tensor.data) as usize;
        if let Some(m) = self.materialized.get(&key) {
            return Ok(m.clone());
        }
        check_materialized(tensor.nbytes())?;
        let mut all = Vec::with_capacity(tensor.nbytes() as usize);
        self.read_bytes(tensor, 0, tensor.numel(), &mut all)?;
        let all = Arc::new(all);
        self.materialized.insert(key, all.clone());
        Ok(all)
    }
}

/// Whether evaluating any element range of `t` reads only that range: no transpose, no
/// strided gather, no compressed storage (those pull a whole tensor or storage into memory,
/// which parallel workers must not each do).
pub fn streams(t: &LazyTensor) -> bool {
    match &*t.data {
        LazyData::Stored {
            storage, strides, ..
        } => {
            matches!(storage.data, DataLocation::Range { .. })
                && TensorRef::contiguous(&t.shape, strides)
        }
        LazyData::Cast(s)
        | LazyData::Reshape(s)
        | LazyData::Slice { source: s, .. }
        | LazyData::Flipped { source: s, .. } => streams(s),
        LazyData::WeightedSum { a, b, .. } => streams(a) && streams(b),
        LazyData::AddDifference { a, b, c, .. } => streams(a) && streams(b) && streams(c),
        LazyData::Concat(parts) => parts.iter().all(streams),
        LazyData::Constant(_) => true,
        LazyData::Transpose(_) => false,
        // Factors are decoded whole per worker; they are small beside the weight.
        LazyData::Adapted { base, terms } => {
            streams(base) && terms.iter().all(|t| t.factors().into_iter().all(streams))
        }
    }
}

/// Apply torch's neg / conj view bits to little-endian elements of `dtype` in place:
/// negation flips a float's sign bit (exact, as torch's `neg` is) and negates an integer
/// with wrap-around; conjugation negates a complex number's imaginary half.
fn flip(bytes: &mut [u8], dtype: DType, neg: bool, conj: bool) -> Result<()> {
    let size = dtype.size() as usize;
    let flip_float = |b: &mut [u8]| {
        let last = b.len() - 1;
        b[last] ^= 0x80;
    };
    match dtype {
        DType::Complex32 | DType::Complex64 | DType::Complex128 => {
            let half = size / 2;
            for e in bytes.chunks_exact_mut(size) {
                let (re, im) = e.split_at_mut(half);
                if neg {
                    flip_float(re);
                }
                if neg != conj {
                    flip_float(im);
                }
            }
        }
        _ if !neg => {} // conj of a real tensor is the tensor
        DType::Float64
        | DType::Float32
        | DType::Float16
        | DType::BFloat16
        | DType::Float8E4M3Fn
        | DType::Float8E5M2 => bytes.chunks_exact_mut(size).for_each(flip_float),
        DType::Int64
        | DType::Int32
        | DType::Int16
        | DType::Int8
        | DType::UInt64
        | DType::UInt32
        | DType::UInt16
        | DType::UInt8 => {
            for e in bytes.chunks_exact_mut(size) {
                let mut carry = 1u16;
                for b in e.iter_mut() {
                    let v = (!*b) as u16 + carry;
                    *b = v as u8;
                    carry = v >> 8;
                }
            }
        }
        other => {
            return Err(Error::op(format!(
                "a {} tensor with torch's neg view flag (ldmkit cannot negate that dtype)",
                other.torch_name()
            )))
        }
    }
    Ok(())
}

fn is_half_or_single(d: DType) -> bool {
    matches!(d, DType::Float32 | DType::Float16 | DType::BFloat16)
}

/// The common casts (f32 ↔ f16/bf16), through an f32 slice so `half` can use the CPU's
/// conversion instructions; same results as [`encode`] (round to nearest even).
fn cast_floats(raw: &[u8], from: DType, to: DType, out: &mut Vec<u8>) {
    use half::slice::HalfFloatSliceExt;
    let n = raw.len() / from.size() as usize;
    let mut single = vec![0f32; n];
    match from {
        DType::Float32 => {
            for (s, c) in single.iter_mut().zip(raw.chunks_exact(4)) {
                *s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::Float16 => {
            let h: Vec<f16> = raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            h.convert_to_f32_slice(&mut single);
        }
        _ => {
            let h: Vec<bf16> = raw
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect();
            h.convert_to_f32_slice(&mut single);
        }
    }
    let at = out.len();
    out.resize(at + n * to.size() as usize, 0);
    let dst = &mut out[at..];
    match to {
        DType::Float32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(&single) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::Float16 => {
            let mut h = vec![f16::ZERO; n];
            h.convert_from_f32_slice(&single);
            for (d, v) in dst.chunks_exact_mut(2).zip(&h) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            let mut h = vec![bf16::ZERO; n];
            h.convert_from_f32_slice(&single);
            for (d, v) in dst.chunks_exact_mut(2).zip(&h) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

fn check_materialized(bytes: u64) -> Result<()> {
    if bytes > MAX_MATERIALIZED {
        return Err(Error::Limit(format!(
            "operation needs {bytes} bytes in memory at once (cap {MAX_MATERIALIZED})"
        )));
    }
    Ok(())
}

/// Storage element indices (relative to the view's offset) of row-major elements
/// `start..start + count`.
fn element_indices(shape: &[u64], strides: &[u64], start: u64, count: u64) -> Vec<u64> {
    let contiguous = TensorRef::contiguous_strides(shape);
    (start..start + count)
        .map(|k| {
            let mut rest = k;
            let mut at = 0;
            for ((&c, &s), &n) in contiguous.iter().zip(strides).zip(shape) {
                let i = if n == 0 { 0 } else { rest / c };
                rest -= i * c;
                at += i * s;
            }
            at
        })
        .collect()
}

/// Round computed values to what `dtype` holds (through f32, as torch does).
fn round_to(mut values: Vec<f64>, dtype: DType) -> Vec<f64> {
    match dtype {
        DType::Float32 => values.iter_mut().for_each(|v| *v = *v as f32 as f64),
        DType::Float16 => values
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v as f32).to_f64()),
        DType::BFloat16 => values
            .iter_mut()
            .for_each(|v| *v = bf16::from_f32(*v as f32).to_f64()),
        _ => {}
    }
    values
}

/// Numbers from little-endian bytes of `dtype`.
pub fn decode(bytes: &[u8], dtype: DType) -> Result<Vec<f64>> {
    macro_rules! le {
        ($t:ty, $n:expr, $f:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    $f(<$t>::from_le_bytes(
                        c.try_into().expect("chunks_exact gives whole elements"),
                    ))
                })
                .collect()
        };
    }
    Ok(match dtype {
        DType::Float64 => le!(f64, 8, |v| v),
        DType::Float32 => le!(f32, 4, |v: f32| v as f64),
        DType::Float16 => le!(u16, 2, |v| f16::from_bits(v).to_f64()),
        DType::BFloat16 => le!(u16, 2, |v| bf16::from_bits(v).to_f64()),
        DType::Int64 => le!(i64, 8, |v| v as f64),
        DType::Int32 => le!(i32, 4, |v| v as f64),
        DType::Int16 => le!(i16, 2, |v| v as f64),
        DType::Int8 => le!(i8, 1, |v| v as f64),
        DType::UInt64 => le!(u64, 8, |v| v as f64),
        DType::UInt32 => le!(u32, 4, |v| v as f64),
        DType::UInt16 => le!(u16, 2, |v| v as f64),
        DType::UInt8 | DType::Bool => le!(u8, 1, |v| v as f64),
        other => {
            return Err(Error::op(format!(
                "{} values cannot be computed with",
                other.torch_name()
            )))
        }
    })
}

/// Little-endian bytes of `dtype` from numbers (floats round to nearest even).
pub fn encode(values: &[f64], dtype: DType, out: &mut Vec<u8>) -> Result<()> {
    out.reserve(values.len() * dtype.size() as usize);
    match dtype {
        DType::Float64 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::Float32 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as f32).to_le_bytes())),
        // Through f32, as torch's Half(double) and BFloat16(double) constructors go.
        DType::Float16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&f16::from_f32(v as f32).to_bits().to_le_bytes())),
        DType::BFloat16 => values.iter().for_each(|&v| {
            out.extend_from_slice(&bf16::from_f32(v as f32).to_bits().to_le_bytes())
        }),
        other => {
            return Err(Error::op(format!(
                "cannot compute {} values",
                other.torch_name()
            )))
        }
    }
    Ok(())
}

/// Count NaN and infinite values in computed little-endian bytes, from the bit patterns
/// (all-ones exponent: zero mantissa is infinite, anything else NaN).
pub fn count_non_finite(bytes: &[u8], dtype: DType, into: &mut NonFinite) {
    fn tally(into: &mut NonFinite, bits: u64, exponent: u64, mantissa: u64) {
        if bits & exponent == exponent {
            if bits & mantissa == 0 {
                into.inf += 1;
            } else {
                into.nan += 1;
            }
        }
    }
    match dtype {
        DType::Float16 | DType::BFloat16 => {
            let (exp, man) = if dtype == DType::Float16 {
                (0x7c00, 0x03ff)
            } else {
                (0x7f80, 0x007f)
            };
            for c in bytes.chunks_exact(2) {
                tally(into, u16::from_le_bytes([c[0], c[1]]) as u64, exp, man);
            }
        }
        DType::Float32 => {
            for c in bytes.chunks_exact(4) {
                let bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64;
                tally(into, bits, 0x7f80_0000, 0x007f_ffff);
            }
        }
        DType::Float64 => {
            for c in bytes.chunks_exact(8) {
                let bits = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                tally(into, bits, 0x7ff0_0000_0000_0000, 0x000f_ffff_ffff_ffff);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{MemSource, Source};
    use crate::tensor::{StorageRef, TensorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the reads that reach the input.
    struct Counting(MemSource, AtomicUsize);

    impl Source for Counting {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.read_at(offset, buf)
        }
    }

    /// A one-element f32 tensor whose storage starts at byte `offset` of input 0.
    fn scalar_at(offset: u64) -> LazyTensor {
        let storage = StorageRef {
            key: offset.to_string(),
            dtype: DType::Float32,
            numel: 1,
            location: "cpu".into(),
            data: DataLocation::Range { offset, len: 4 },
            untyped: false,
            crc32: None,
        };
        let view = TensorRef {
            storage: 0,
            dtype: DType::Float32,
            shape: vec![1],
            strides: vec![1],
            storage_offset: 0,
            requires_grad: false,
            kind: TensorKind::Tensor,
            flags: Default::default(),
        };
        LazyTensor::stored(0, &view, &storage)
    }

    #[test]
    fn tiny_tensors_are_read_through_a_window_not_one_call_each() {
        let n = 40_000u64; // 160 kB: three windows
        let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let counting = Arc::new(Counting(MemSource::new(bytes), AtomicUsize::new(0)));
        let inputs: Vec<SharedSource> = vec![counting.clone()];
        let mut reader = ElementReader::new(&inputs);
        for i in 0..n {
            let v = reader.read_values(&scalar_at(4 * i), 0, 1).unwrap();
            assert_eq!(v, [i as f64]);
        }
        assert_eq!(counting.1.load(Ordering::Relaxed), 3);
        // Back to the start: the window moves there.
        assert_eq!(reader.read_values(&scalar_at(0), 0, 1).unwrap(), [0.0]);
        // Past the end is still an error, not a short window.
        assert!(reader.read_values(&scalar_at(4 * n - 2), 0, 1).is_err());
    }
}
