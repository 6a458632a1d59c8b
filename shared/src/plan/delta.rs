//! Adapter differences (ΔW) evaluated into a weight, whole rows at a time.
//!
//! A baked weight is `W` plus terms, one per adapter module that touches it, applied in
//! order the way diffusers' `fuse_lora` (PEFT's `merge`) applies adapters one after
//! another: each term's ΔW is computed in float32, multiplied by its scale (ratio · alpha /
//! rank · block weight) in float32, rounded to the weight's dtype, and added in float32 with
//! one more rounding, so a float16 model gets exactly the rounding torch gives it on the CPU.
//! DoRA terms rescale each output row as PEFT's DoRA merge does.
//!
//! Every kind is a product of small factors: ΔW rows are computed from them without ever
//! forming ΔW whole, so memory is the chunk plus the factors. The products sum over the rank
//! in order, without fused multiply-add, so the CLI and the browser (wasm32) produce the
//! same bits. Definitions: kohya `networks/lora.py` (LoRA / LoCon), LyCORIS
//! `functional/{locon,loha,lokr}.py`, `modules/{full,ia3,glora}.py`, PEFT
//! `tuners/lora/{layer,dora}.py`.

use super::eval::ElementReader;
use super::lazy::LazyTensor;
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};
use std::sync::Arc;

/// One factor of a LoKr product.
#[derive(Debug, Clone)]
pub enum KronFactor {
    Whole(LazyTensor),
    /// `a · b`.
    Product(LazyTensor, LazyTensor),
    /// LyCORIS' Tucker form: `Σ_ij t[i,j,…]·a[i,p]·b[j,r]`.
    Tucker {
        t: LazyTensor,
        a: LazyTensor,
        b: LazyTensor,
    },
}

/// A module's ΔW, before its scale.
#[derive(Debug, Clone)]
pub enum Delta {
    /// `up · down`; with `mid`, the Tucker form `Σ_ij up[p,i]·mid[i,j,…]·down[j,r]`.
    LowRank {
        up: LazyTensor,
        down: LazyTensor,
        mid: Option<LazyTensor>,
    },
    /// `(w1a·w1b) ⊙ (w2a·w2b)`; with cores, each product in Tucker form
    /// (`w*a` `[r, out]`, `w*b` `[r, in]`).
    Hadamard {
        w1a: LazyTensor,
        w1b: LazyTensor,
        w2a: LazyTensor,
        w2b: LazyTensor,
        cores: Option<(LazyTensor, LazyTensor)>,
    },
    /// `kron(w1, w2)` (w1 widened with trailing 1s to w2's rank).
    Kronecker { w1: KronFactor, w2: KronFactor },
    /// The difference itself.
    Full(LazyTensor),
    /// (IA)³: `W ⊙ w` per output channel, or per input channel with `on_input`.
    Ia3 { weight: LazyTensor, on_input: bool },
    /// GLoRA: `b1·b2 + W·a1·a2` (`a1` `[in, r]`, `a2` `[r, in]`, contracting W's input
    /// channels).
    Glora {
        a1: LazyTensor,
        a2: LazyTensor,
        b1: LazyTensor,
        b2: LazyTensor,
    },
}

/// One adapter module applied to a weight.
#[derive(Debug, Clone)]
pub struct Term {
    pub delta: Delta,
    /// ΔW's multiplier (ratio · module scale · block weight).
    pub scale: f64,
    /// The weight's rows this term covers (`start, count`), when not all (a q, k or v
    /// projection inside OpenCLIP's joined `in_proj_weight`).
    pub rows: Option<(u64, u64)>,
    /// DoRA: the magnitude of each output row (PEFT `lora_magnitude_vector`).
    pub magnitude: Option<LazyTensor>,
}

impl Term {
    /// Every tensor the term reads (for the executor's streaming check).
    pub fn factors(&self) -> Vec<&LazyTensor> {
        let mut v: Vec<&LazyTensor> = match &self.delta {
            Delta::LowRank { up, down, mid } => {
                let mut v = vec![up, down];
                v.extend(mid.iter());
                v
            }
            Delta::Hadamard {
                w1a,
                w1b,
                w2a,
                w2b,
                cores,
            } => {
                let mut v = vec![w1a, w1b, w2a, w2b];
                if let Some((a, b)) = cores {
                    v.extend([a, b]);
                }
                v
            }
            Delta::Kronecker { w1, w2 } => {
                let mut v = Vec::new();
                for f in [w1, w2] {
                    match f {
                        KronFactor::Whole(w) => v.push(w),
                        KronFactor::Product(a, b) => v.extend([a, b]),
                        KronFactor::Tucker { t, a, b } => v.extend([t, a, b]),
                    }
                }
                v
            }
            Delta::Full(d) => vec![d],
            Delta::Ia3 { weight, .. } => vec![weight],
            Delta::Glora { a1, a2, b1, b2 } => vec![a1, a2, b1, b2],
        };
        v.extend(self.magnitude.iter());
        v
    }
}

/// The most bytes of factors one term may hold decoded (a rank-128 LoRA of SDXL's widest
/// layer is a few MB; a full difference the size of its weight).
const MAX_FACTOR_BYTES: u64 = 1 << 30;

impl ElementReader<'_> {
    /// A factor's values as f32, decoded once per reader.
    fn factor(&mut self, t: &LazyTensor) -> Result<Arc<Vec<f32>>> {
        let key = Arc::as_ptr(&t.data) as usize;
        if let Some(f) = self.factors.get(&key) {
            return Ok(f.clone());
        }
        if t.numel() * 4 > MAX_FACTOR_BYTES {
            return Err(Error::Limit(format!(
                "an adapter factor of {} values (cap {})",
                t.numel(),
                MAX_FACTOR_BYTES / 4
            )));
        }
        let values = Arc::new(self.read_f32(t, 0, t.numel())?);
        self.factors.insert(key, values.clone());
        Ok(values)
    }

    /// A derived factor (a Tucker product), computed once per reader.
    fn derived(
        &mut self,
        key: &LazyTensor,
        tag: usize,
        make: impl FnOnce(&mut Self) -> Result<Vec<f32>>,
    ) -> Result<Arc<Vec<f32>>> {
        let key = (Arc::as_ptr(&key.data) as usize).wrapping_add(tag);
        if let Some(f) = self.derived.get(&key) {
            return Ok(f.clone());
        }
        let v = Arc::new(make(self)?);
        self.derived.insert(key, v.clone());
        Ok(v)
    }

    /// Elements `start..start + count` of `base` with `terms` applied, in `dtype`'s values.
    pub(super) fn adapted_values(
        &mut self,
        dtype: DType,
        base: &LazyTensor,
        terms: &[Term],
        start: u64,
        count: u64,
    ) -> Result<Vec<f32>> {
        let (out_rows, cols) = match base.shape.as_slice() {
            [] => (1, 1),
            [n, rest @ ..] => (*n, rest.iter().product::<u64>()),
        };
        if cols == 0 || count == 0 {
            return Ok(Vec::new());
        }
        let r0 = start / cols;
        let r1 = (start + count).div_ceil(cols).min(out_rows);
        let mut cur = self.read_f32(base, r0 * cols, (r1 - r0) * cols)?;
        let cols = cols as usize;
        for term in terms {
            let (t0, tn) = term.rows.unwrap_or((0, out_rows));
            let (a, b) = (r0.max(t0), r1.min(t0 + tn));
            if a >= b {
                continue;
            }
            // This term's rows of the current values, and their rows within the term.
            let here = &mut cur[((a - r0) as usize * cols)..((b - r0) as usize * cols)];
            let local = ((a - t0) as usize, (b - a) as usize);
            let raw = self.delta_rows(&term.delta, local, cols, here)?;
            let scale = term.scale as f32;
            match &term.magnitude {
                None => {
                    let mut d = raw;
                    d.iter_mut().for_each(|d| *d *= scale);
                    round_all(&mut d, dtype);
                    here.iter_mut().zip(&d).for_each(|(w, d)| *w += d);
                    round_all(here, dtype);
                }
                Some(m) => {
                    let m = self.factor(m)?;
                    for (i, row) in here.chunks_exact_mut(cols).enumerate() {
                        let d = &raw[i * cols..(i + 1) * cols];
                        for (w, d) in row.iter_mut().zip(d) {
                            *w = round(*w + round(d * scale, dtype), dtype);
                        }
                        let norm = round(row.iter().map(|v| v * v).sum::<f32>().sqrt(), dtype);
                        let mag = round(m[local.0 + i], dtype);
                        let factor = round(mag / norm, dtype);
                        row.iter_mut().for_each(|w| *w = round(factor * *w, dtype));
                    }
                }
            }
        }
        let skip = (start - r0 * cols as u64) as usize;
        cur.truncate(skip + count as usize);
        cur.drain(..skip);
        Ok(cur)
    }

    /// Elements of a tensor as f32: half and single precision by slice conversion, the rest
    /// through f64.
    fn read_f32(&mut self, t: &LazyTensor, start: u64, count: u64) -> Result<Vec<f32>> {
        use half::slice::HalfFloatSliceExt;
        let mut out = vec![0f32; count as usize];
        match t.dtype {
            DType::Float16 | DType::BFloat16 | DType::Float32 => {
                let mut bytes = Vec::with_capacity((count * t.dtype.size()) as usize);
                self.read_bytes(t, start, count, &mut bytes)?;
                match t.dtype {
                    DType::Float32 => {
                        bytemuck::cast_slice_mut::<f32, u8>(&mut out).copy_from_slice(&bytes)
                    }
                    // Little-endian bytes viewed as the target's halves (every target ldmkit
                    // builds for is little-endian).
                    DType::Float16 => {
                        let mut h = vec![f16::ZERO; count as usize];
                        bytemuck::cast_slice_mut::<f16, u8>(&mut h).copy_from_slice(&bytes);
                        h.convert_to_f32_slice(&mut out);
                    }
                    _ => {
                        let mut h = vec![bf16::ZERO; count as usize];
                        bytemuck::cast_slice_mut::<bf16, u8>(&mut h).copy_from_slice(&bytes);
                        h.convert_to_f32_slice(&mut out);
                    }
                }
            }
            _ => {
                let v = self.read_values(t, start, count)?;
                out.iter_mut().zip(v).for_each(|(o, v)| *o = v as f32);
            }
        }
        Ok(out)
    }

    /// [`Self::adapted_values`] as little-endian bytes of `dtype`, appended to `out`.
    pub(super) fn adapted_bytes(
        &mut self,
        dtype: DType,
        base: &LazyTensor,
        terms: &[Term],
        start: u64,
        count: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        use half::slice::HalfFloatSliceExt;
        let v = self.adapted_values(dtype, base, terms, start, count)?;
        match dtype {
            DType::Float32 => out.extend_from_slice(bytemuck::cast_slice(&v)),
            DType::Float16 => {
                let mut h = vec![f16::ZERO; v.len()];
                h.convert_from_f32_slice(&v);
                out.extend_from_slice(bytemuck::cast_slice(&h));
            }
            DType::BFloat16 => {
                let mut h = vec![bf16::ZERO; v.len()];
                h.convert_from_f32_slice(&v);
                out.extend_from_slice(bytemuck::cast_slice(&h));
            }
            _ => {
                let v: Vec<f64> = v.into_iter().map(f64::from).collect();
                super::eval::encode(&v, dtype, out)?;
            }
        }
        Ok(())
    }

    /// Rows `rows.0..rows.0 + rows.1` of ΔW (unscaled, row-major, `cols` wide); `current` is the
    /// weight's current values of those rows (the kinds that scale W read it).
    fn delta_rows(
        &mut self,
        delta: &Delta,
        rows: (usize, usize),
        cols: usize,
        current: &[f32],
    ) -> Result<Vec<f32>> {
        let (first, n) = rows;
        let mut out = vec![0f32; n * cols];
        let width = |t: &LazyTensor| -> usize {
            t.shape
                .get(1..)
                .map_or(1, |s| s.iter().product::<u64>() as usize)
        };
        match delta {
            Delta::LowRank { up, down, mid } => {
                let r = up.shape[1] as usize;
                let u = self.factor(up)?;
                let d = match mid {
                    None => self.factor(down)?,
                    Some(m) => {
                        let (m_t, d_t) = (m.clone(), down.clone());
                        self.derived(down, 1, move |me| {
                            // Σ_j mid[i,j,k]·down[j,c] → [r, in, k…] (down is [r, in, 1, 1]).
                            let (m, d) = (me.factor(&m_t)?, me.factor(&d_t)?);
                            let inn = d_t.shape[1] as usize;
                            let k: usize = m_t.shape[2..].iter().product::<u64>() as usize;
                            Ok(tucker_down(&m, &d, r, r, inn, k))
                        })?
                    }
                };
                check_width(d.len() / r.max(1), cols)?;
                low_rank(&u[first * r..(first + n) * r], r, &d, cols, &mut out);
            }
            Delta::Hadamard {
                w1a,
                w1b,
                w2a,
                w2b,
                cores,
            } => {
                let mut second = vec![0f32; n * cols];
                for (a, b, core, dst, tag) in [
                    (w1a, w1b, cores.as_ref().map(|c| &c.0), &mut out, 1usize),
                    (w2a, w2b, cores.as_ref().map(|c| &c.1), &mut second, 2),
                ] {
                    let (up, r, down) = match core {
                        None => (self.factor(a)?, a.shape[1] as usize, self.factor(b)?),
                        Some(t) => {
                            // Tucker: up[p,i] = a[i,p]; down[i,r,k] = Σ_j t[i,j,k]·b[j,r].
                            let r = a.shape[0] as usize;
                            let (at, bt, tt) = (a.clone(), b.clone(), t.clone());
                            let up = self.derived(a, tag, move |me| {
                                let a = me.factor(&at)?;
                                Ok(transpose(&a, r, at.shape[1] as usize))
                            })?;
                            let down = self.derived(b, tag + 16, move |me| {
                                let (t, b) = (me.factor(&tt)?, me.factor(&bt)?);
                                let k = tt.shape[2..].iter().product::<u64>() as usize;
                                Ok(tucker_down(&t, &b, r, r, bt.shape[1] as usize, k))
                            })?;
                            (up, r, down)
                        }
                    };
                    check_width(down.len() / r.max(1), cols)?;
                    low_rank(&up[first * r..(first + n) * r], r, &down, cols, dst);
                }
                out.iter_mut().zip(&second).for_each(|(x, y)| *x *= y);
            }
            Delta::Kronecker { w1, w2 } => {
                let (f1, a, b) = self.kron_factor(w1, 1)?;
                let (f2, c, dk) = self.kron_factor(w2, 2)?;
                check_width(b * dk, cols)?;
                for (i, row) in out.chunks_exact_mut(cols).enumerate() {
                    let o = first + i;
                    let (o1, o2) = (o / c, o % c);
                    if o1 >= a {
                        return Err(Error::op("a LoKr product has fewer rows than its weight"));
                    }
                    let w2row = &f2[o2 * dk..(o2 + 1) * dk];
                    for j1 in 0..b {
                        let x = f1[o1 * b + j1];
                        for (dst, &y) in row[j1 * dk..(j1 + 1) * dk].iter_mut().zip(w2row) {
                            *dst = x * y;
                        }
                    }
                }
            }
            Delta::Full(d) => {
                check_width(width(d), cols)?;
                let v = self.read_values(d, (first * cols) as u64, (n * cols) as u64)?;
                out.iter_mut().zip(v).for_each(|(o, v)| *o = v as f32);
            }
            Delta::Ia3 { weight, on_input } => {
                let w = self.factor(weight)?;
                for (i, (row, cur)) in out
                    .chunks_exact_mut(cols)
                    .zip(current.chunks_exact(cols))
                    .enumerate()
                {
                    if *on_input {
                        // Per input channel: W[o, c, k…] · w[c].
                        let k = cols / w.len().max(1);
                        if k == 0 || w.len() * k != cols {
                            return Err(Error::op(
                                "an (IA)³ scale does not fit its weight's inputs",
                            ));
                        }
                        for (j, (o, c)) in row.iter_mut().zip(cur).enumerate() {
                            *o = c * w[j / k];
                        }
                    } else {
                        let s = *w.get(first + i).ok_or_else(|| {
                            Error::op("an (IA)³ scale does not fit its weight's outputs")
                        })?;
                        row.iter_mut().zip(cur).for_each(|(o, c)| *o = c * s);
                    }
                }
            }
            Delta::Glora { a1, a2, b1, b2 } => {
                let r = b1.shape[1] as usize;
                let (fa1, fa2) = (self.factor(a1)?, self.factor(a2)?);
                let (fb1, fb2) = (self.factor(b1)?, self.factor(b2)?);
                check_width(fb2.len() / r.max(1), cols)?;
                low_rank(&fb1[first * r..(first + n) * r], r, &fb2, cols, &mut out);
                // W·a1·a2 over the input channels, per kernel position k.
                let inn = a1.shape[0] as usize;
                let k = cols / inn.max(1);
                if inn * k != cols || fa2.len() != r * inn || fa1.len() != inn * r {
                    return Err(Error::op("GLoRA factors do not fit their weight"));
                }
                let mut t = vec![0f32; r * k];
                for (row, cur) in out.chunks_exact_mut(cols).zip(current.chunks_exact(cols)) {
                    t.iter_mut().for_each(|v| *v = 0.0);
                    for c in 0..inn {
                        for q in 0..r {
                            let a = fa1[c * r + q];
                            for kk in 0..k {
                                t[q * k + kk] += cur[c * k + kk] * a;
                            }
                        }
                    }
                    for q in 0..r {
                        for j in 0..inn {
                            let a = fa2[q * inn + j];
                            for kk in 0..k {
                                row[j * k + kk] += t[q * k + kk] * a;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// A LoKr factor whole, as `[rows, cols·k]` values, with its row count and width.
    fn kron_factor(&mut self, f: &KronFactor, tag: usize) -> Result<(Arc<Vec<f32>>, usize, usize)> {
        match f {
            KronFactor::Whole(w) => {
                let rows = w.shape[0] as usize;
                let v = self.factor(w)?;
                Ok((v.clone(), rows, v.len() / rows.max(1)))
            }
            KronFactor::Product(a, b) => {
                let (rows, r) = (a.shape[0] as usize, a.shape[1] as usize);
                let (at, bt) = (a.clone(), b.clone());
                let v = self.derived(a, tag, move |me| {
                    let (a, b) = (me.factor(&at)?, me.factor(&bt)?);
                    let cols = b.len() / r.max(1);
                    let mut out = vec![0f32; rows * cols];
                    low_rank(&a, r, &b, cols, &mut out);
                    Ok(out)
                })?;
                let width = v.len() / rows.max(1);
                Ok((v, rows, width))
            }
            KronFactor::Tucker { t, a, b } => {
                // w[p, q, k] = Σ_ij t[i,j,k]·a[i,p]·b[j,q].
                let (r, rows) = (a.shape[0] as usize, a.shape[1] as usize);
                let (tt, at, bt) = (t.clone(), a.clone(), b.clone());
                let v = self.derived(t, tag, move |me| {
                    let (t, a, b) = (me.factor(&tt)?, me.factor(&at)?, me.factor(&bt)?);
                    let inn = bt.shape[1] as usize;
                    let k = tt.shape[2..].iter().product::<u64>() as usize;
                    let down = tucker_down(&t, &b, r, r, inn, k);
                    let up = transpose(&a, r, rows);
                    let mut out = vec![0f32; rows * inn * k];
                    low_rank(&up, r, &down, inn * k, &mut out);
                    Ok(out)
                })?;
                let width = v.len() / rows.max(1);
                Ok((v, rows, width))
            }
        }
    }
}

fn check_width(have: usize, want: usize) -> Result<()> {
    if have != want {
        return Err(Error::op(format!(
            "an adapter's ΔW rows are {have} wide, its weight's {want}"
        )));
    }
    Ok(())
}

/// `out[n×cols] = up[n×r] · down[r×cols]` (overwriting `out`), each element summed over the
/// rank in order (k = 0, 1, …) from zero with separate multiplies and adds, so every path —
/// AVX here, SSE2, wasm32 — gives the same bits.
fn low_rank(up: &[f32], r: usize, down: &[f32], cols: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { low_rank_avx(up, r, down, cols, out) };
    }
    low_rank_tiles(up, r, down, cols, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn low_rank_avx(up: &[f32], r: usize, down: &[f32], cols: usize, out: &mut [f32]) {
    low_rank_tiles(up, r, down, cols, out)
}

/// Tiles of 4 rows × 16 columns accumulate in registers over the whole rank; the rest of
/// the rows and columns one element at a time, in the same order.
#[inline(always)]
fn low_rank_tiles(up: &[f32], r: usize, down: &[f32], cols: usize, out: &mut [f32]) {
    const ROWS: usize = 4;
    const COLS: usize = 16;
    let n = out.len() / cols.max(1);
    let one = |i: usize, j: usize| {
        let mut s = 0f32;
        for k in 0..r {
            s += up[i * r + k] * down[k * cols + j];
        }
        s
    };
    let mut i = 0;
    while i + ROWS <= n {
        let a = &up[i * r..(i + ROWS) * r];
        let mut j = 0;
        while j + COLS <= cols {
            let mut acc = [[0f32; COLS]; ROWS];
            for k in 0..r {
                let d: &[f32; COLS] = down[k * cols + j..k * cols + j + COLS]
                    .try_into()
                    .expect("a tile is COLS wide");
                for (ii, row) in acc.iter_mut().enumerate() {
                    let x = a[ii * r + k];
                    for (o, &y) in row.iter_mut().zip(d) {
                        *o += x * y;
                    }
                }
            }
            for (ii, row) in acc.iter().enumerate() {
                out[(i + ii) * cols + j..(i + ii) * cols + j + COLS].copy_from_slice(row);
            }
            j += COLS;
        }
        for jj in j..cols {
            for ii in 0..ROWS {
                out[(i + ii) * cols + jj] = one(i + ii, jj);
            }
        }
        i += ROWS;
    }
    for ii in i..n {
        for jj in 0..cols {
            out[ii * cols + jj] = one(ii, jj);
        }
    }
}

/// `Σ_j t[i,j,k]·b[j,c]` as `[ri, c, k]` (c over `inn`, k over the kernel positions).
fn tucker_down(t: &[f32], b: &[f32], ri: usize, rj: usize, inn: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; ri * inn * k];
    for i in 0..ri {
        for j in 0..rj {
            for c in 0..inn {
                let bv = b[j * inn + c];
                for kk in 0..k {
                    out[(i * inn + c) * k + kk] += t[(i * rj + j) * k + kk] * bv;
                }
            }
        }
    }
    out
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = a[i * cols + j];
        }
    }
    out
}

/// `v` rounded to what `dtype` holds (nearest even), as torch stores a result.
fn round(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::Float16 => f16::from_f32(v).to_f32(),
        DType::BFloat16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// [`round`] over a slice, through `half`'s slice conversions (the CPU's conversion
/// instructions where it has them; the same results).
fn round_all(v: &mut [f32], dtype: DType) {
    use half::slice::HalfFloatSliceExt;
    match dtype {
        DType::Float16 => {
            let mut h = vec![f16::ZERO; v.len()];
            h.convert_from_f32_slice(v);
            h.convert_to_f32_slice(v);
        }
        DType::BFloat16 => {
            let mut h = vec![bf16::ZERO; v.len()];
            h.convert_from_f32_slice(v);
            h.convert_to_f32_slice(v);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_rows_equal_the_plain_product() {
        let (n, r, cols) = (7, 3, 5);
        let up: Vec<f32> = (0..n * r).map(|i| (i as f32 * 0.37).sin()).collect();
        let down: Vec<f32> = (0..r * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![0f32; n * cols];
        low_rank(&up, r, &down, cols, &mut out);
        for i in 0..n {
            for j in 0..cols {
                let mut want = 0f32;
                for k in 0..r {
                    want += up[i * r + k] * down[k * cols + j];
                }
                assert_eq!(out[i * cols + j], want);
            }
        }
    }

    #[test]
    fn tucker_is_the_einsum() {
        // rebuild[p, c, k] = Σ_ij t[i,j,k]·a[i,p]·b[j,c], with r = 2, out 3, in 2, k 2.
        let (r, out_n, inn, k) = (2, 3, 2, 2);
        let t: Vec<f32> = (0..r * r * k).map(|i| i as f32 + 1.0).collect();
        let a: Vec<f32> = (0..r * out_n).map(|i| (i as f32) * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..r * inn).map(|i| (i as f32) * 0.25 + 0.5).collect();
        let down = tucker_down(&t, &b, r, r, inn, k);
        let up = transpose(&a, r, out_n);
        let mut got = vec![0f32; out_n * inn * k];
        low_rank(&up, r, &down, inn * k, &mut got);
        for p in 0..out_n {
            for c in 0..inn {
                for kk in 0..k {
                    let mut want = 0f32;
                    for i in 0..r {
                        for j in 0..r {
                            want += t[(i * r + j) * k + kk] * a[i * out_n + p] * b[j * inn + c];
                        }
                    }
                    let have = got[(p * inn + c) * k + kk];
                    assert!((have - want).abs() < 1e-4, "{have} vs {want}");
                }
            }
        }
    }
}
