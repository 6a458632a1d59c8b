//! 2-D convolution through cuDNN, called directly.
//!
//! candle's cuDNN path (0.11) rebuilds every descriptor, asks the heuristic for an algorithm
//! and allocates and zeroes a fresh workspace on every call, and never allows tensor-op
//! math: f32 convolutions ran at plain-FP32 speed (9 ms for one 3×3 at 8 × 128 × 512² on an
//! H100) and bf16 ones were slower than f32. Here, per shape: descriptors made once, the
//! algorithm chosen by cuDNN's own timing (`cudnnFindConvolutionForwardAlgorithm`, as
//! PyTorch's `cudnn.benchmark` does), TF32 tensor cores for f32 (PyTorch's default for
//! cuDNN convolutions) and tensor cores with f32 accumulation for bf16/f16, one workspace
//! kept and grown, and the bias added in place by `cudnnAddTensor`. For training, both
//! gradients (input: `cudnnConvolutionBackwardData`, weight: `...BackwardFilter`) go the
//! same way, each algorithm timed the first time its shape is seen; the bias is added by
//! `cudnnAddTensor` and its gradient is one matrix product.
//!
//! cudarc's safe cuDNN wrappers keep their raw descriptors private (so they cannot be cached
//! or passed to the calls above); this module uses cudarc's `sys` bindings instead.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaStorage, CudaStorageSlice};
use candle_core::{CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_TF32: AtomicBool = AtomicBool::new(true);

/// Whether f32 convolutions may use TF32 tensor cores (on by default, as in PyTorch).
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Algorithms needing more workspace than this share of the free GPU memory are passed
/// over (TF32 on SD's first VAE level wants 2 GiB, and is six times faster than the best
/// algorithm without it).
const WORKSPACE_SHARE: usize = 4;

/// `x` `[n, c, h, w]` convolved with `weight` `[k, c, kh, kw]`, plus `bias` `[k]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    let op = Conv { padding, stride };
    let x = x.contiguous()?;
    match bias {
        Some(b) => x.apply_op3_no_bwd(weight, b, &op),
        None => x.apply_op2_no_bwd(weight, &op),
    }
}

struct Conv {
    padding: usize,
    stride: usize,
}

fn check(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    status
        .result()
        .map_err(|e| candle_core::Error::Msg(format!("cuDNN {what}: {e:?}")))
}

fn data_type(dtype: DType) -> Result<sys::cudnnDataType_t> {
    Ok(match dtype {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        other => candle_core::bail!("cuDNN convolution: {other:?} is not supported"),
    })
}

/// Descriptors and the chosen algorithms for one shape, made once; each pass's algorithm
/// is timed the first time that pass runs.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    bias: sys::cudnnTensorDescriptor_t,
    forward: Option<Choice<sys::cudnnConvolutionFwdAlgo_t>>,
    data: Option<Choice<sys::cudnnConvolutionBwdDataAlgo_t>>,
    filter: Option<Choice<sys::cudnnConvolutionBwdFilterAlgo_t>>,
    out: [usize; 4],
}

/// An algorithm, the math it runs with and the workspace it needs.
#[derive(Clone, Copy)]
struct Choice<A> {
    algo: A,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

/// Which of the three convolutions a call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// y from x and w.
    Forward,
    /// dx from dy and w (the input gradient).
    Data,
    /// dw from x and dy (the weight gradient).
    Filter,
}

impl Drop for Plan {
    fn drop(&mut self) {
        unsafe {
            sys::cudnnDestroyTensorDescriptor(self.x);
            sys::cudnnDestroyFilterDescriptor(self.w);
            sys::cudnnDestroyConvolutionDescriptor(self.conv);
            sys::cudnnDestroyTensorDescriptor(self.y);
            sys::cudnnDestroyTensorDescriptor(self.bias);
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    device: usize,
    dtype: DType,
    x: [usize; 4],
    w: [usize; 4],
    padding: usize,
    stride: usize,
    tf32: bool,
}

/// One cuDNN handle per (thread, device), bound to candle's stream, and what it has planned.
struct Handle {
    raw: sys::cudnnHandle_t,
    workspace: Option<CudaSlice<u8>>,
}

#[derive(Default)]
struct State {
    handles: HashMap<usize, Handle>,
    plans: HashMap<Key, Plan>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn tensor_desc(dt: sys::cudnnDataType_t, d: [usize; 4]) -> Result<sys::cudnnTensorDescriptor_t> {
    let mut desc = std::ptr::null_mut();
    unsafe {
        check(
            sys::cudnnCreateTensorDescriptor(&mut desc),
            "tensor descriptor",
        )?;
        check(
            sys::cudnnSetTensor4dDescriptor(
                desc,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dt,
                d[0] as i32,
                d[1] as i32,
                d[2] as i32,
                d[3] as i32,
            ),
            "tensor descriptor",
        )?;
    }
    Ok(desc)
}

/// Of cuDNN's timed candidates (fastest first), the first that ran and fits `limit`,
/// keeping FMA math for f32 when TF32 is off.
macro_rules! pick {
    ($perf:expr, $found:expr, $key:expr, $limit:expr, $what:expr) => {{
        let key: &Key = $key;
        if std::env::var_os("LDMKIT_CONV_DEBUG").is_some() {
            for r in &$perf[..$found.max(0) as usize] {
                eprintln!(
                    "conv {} {key:?}: {:?} {:?} {:?} {:.3} ms {} MiB",
                    $what,
                    r.algo,
                    r.mathType,
                    r.status,
                    r.time,
                    r.memory >> 20
                );
            }
        }
        $perf[..$found.max(0) as usize]
            .iter()
            .find(|r| {
                r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && r.memory <= $limit
                    && (key.tf32
                        || key.dtype != DType::F32
                        || r.mathType != sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH)
            })
            .map(|r| Choice {
                algo: r.algo,
                math: r.mathType,
                workspace: r.memory,
            })
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("cuDNN has no {} algorithm for {key:?}", $what))
            })
    }};
}

/// Candidates asked of each timed search.
const ALGOS: usize = 8;

impl Plan {
    fn new(key: &Key) -> Result<Plan> {
        let dt = data_type(key.dtype)?;
        let [n, c, h, w] = key.x;
        let [k, wc, kh, kw] = key.w;
        if wc != c {
            candle_core::bail!("conv2d: input has {c} channels, the weight expects {wc}");
        }
        let (p, s) = (key.padding, key.stride);
        if h + 2 * p < kh || w + 2 * p < kw || s == 0 {
            candle_core::bail!("conv2d: a {kh}×{kw} kernel does not fit {h}×{w} (padding {p})");
        }
        let out = [n, k, (h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1];
        let mut plan = Plan {
            x: tensor_desc(dt, key.x)?,
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            y: tensor_desc(dt, out)?,
            bias: tensor_desc(dt, [1, k, 1, 1])?,
            forward: None,
            data: None,
            filter: None,
            out,
        };
        unsafe {
            check(sys::cudnnCreateFilterDescriptor(&mut plan.w), "filter")?;
            check(
                sys::cudnnSetFilter4dDescriptor(
                    plan.w,
                    dt,
                    sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                    k as i32,
                    c as i32,
                    kh as i32,
                    kw as i32,
                ),
                "filter",
            )?;
            check(
                sys::cudnnCreateConvolutionDescriptor(&mut plan.conv),
                "convolution",
            )?;
            check(
                sys::cudnnSetConvolution2dDescriptor(
                    plan.conv,
                    p as i32,
                    p as i32,
                    s as i32,
                    s as i32,
                    1,
                    1,
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
                "convolution",
            )?;
            let math = match key.dtype {
                DType::F32 if !key.tf32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
                DType::F32 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
                _ => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            };
            check(
                sys::cudnnSetConvolutionMathType(plan.conv, math),
                "math type",
            )?;
        }
        Ok(plan)
    }

    /// Time `pass`'s algorithms once (cuDNN's own search, as PyTorch's `cudnn.benchmark`).
    fn choose(
        &mut self,
        handle: sys::cudnnHandle_t,
        key: &Key,
        pass: Pass,
        free_memory: usize,
    ) -> Result<usize> {
        let limit = (free_memory / WORKSPACE_SHARE).max(256 << 20);
        let mut found = 0;
        unsafe {
            match pass {
                Pass::Forward if self.forward.is_none() => {
                    let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; ALGOS] = std::mem::zeroed();
                    check(
                        sys::cudnnFindConvolutionForwardAlgorithm(
                            handle,
                            self.x,
                            self.w,
                            self.conv,
                            self.y,
                            ALGOS as i32,
                            &mut found,
                            perf.as_mut_ptr(),
                        ),
                        "algorithm search",
                    )?;
                    self.forward = Some(pick!(perf, found, key, limit, "forward")?);
                }
                Pass::Data if self.data.is_none() => {
                    let mut perf: [sys::cudnnConvolutionBwdDataAlgoPerf_t; ALGOS] =
                        std::mem::zeroed();
                    check(
                        sys::cudnnFindConvolutionBackwardDataAlgorithm(
                            handle,
                            self.w,
                            self.y,
                            self.conv,
                            self.x,
                            ALGOS as i32,
                            &mut found,
                            perf.as_mut_ptr(),
                        ),
                        "algorithm search (input gradient)",
                    )?;
                    self.data = Some(pick!(perf, found, key, limit, "input-gradient")?);
                }
                Pass::Filter if self.filter.is_none() => {
                    let mut perf: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; ALGOS] =
                        std::mem::zeroed();
                    check(
                        sys::cudnnFindConvolutionBackwardFilterAlgorithm(
                            handle,
                            self.x,
                            self.y,
                            self.conv,
                            self.w,
                            ALGOS as i32,
                            &mut found,
                            perf.as_mut_ptr(),
                        ),
                        "algorithm search (weight gradient)",
                    )?;
                    self.filter = Some(pick!(perf, found, key, limit, "weight-gradient")?);
                }
                _ => {}
            }
        }
        Ok(match pass {
            Pass::Forward => self.forward.map_or(0, |c| c.workspace),
            Pass::Data => self.data.map_or(0, |c| c.workspace),
            Pass::Filter => self.filter.map_or(0, |c| c.workspace),
        })
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} x {:?} * w {:?} (padding {}, stride {})",
            self.dtype, self.x, self.w, self.padding, self.stride
        )
    }
}

fn dims4(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match l.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        d => candle_core::bail!("conv2d: {what} must be 4-D, got {d:?}"),
    }
}

/// The device pointer of a contiguous operand (its start offset applied).
fn ptr(s: &CudaStorage, l: &Layout, what: &str) -> Result<*const c_void> {
    let Some((start, _)) = l.contiguous_offsets() else {
        candle_core::bail!("conv2d: {what} must be contiguous");
    };
    let stream = s.device.cuda_stream();
    macro_rules! at {
        ($slice:expr) => {{
            let (p, _sync) = $slice.device_ptr(&stream);
            (p as usize + start * s.dtype().size_in_bytes()) as *const c_void
        }};
    }
    Ok(match &s.slice {
        CudaStorageSlice::F32(v) => at!(v),
        CudaStorageSlice::BF16(v) => at!(v),
        CudaStorageSlice::F16(v) => at!(v),
        _ => candle_core::bail!("conv2d: {:?} is not supported", s.dtype()),
    })
}

impl Conv {
    fn run(
        &self,
        x: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let (xd, wd) = (dims4(x.1, "input")?, dims4(w.1, "weight")?);
        launch(self, Pass::Forward, x, w, bias, xd, wd)
    }
}

/// Run `pass` of the convolution whose input is `xd` and weight `wd`: operands `a`, `b` are
/// (x, w) forward, (dy, w) for the input gradient and (x, dy) for the weight gradient.
fn launch(
    conv: &Conv,
    pass: Pass,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    xd: [usize; 4],
    wd: [usize; 4],
) -> Result<(CudaStorage, Shape)> {
    let dev = a.0.device().clone();
    let dtype = a.0.dtype();
    if b.0.dtype() != dtype || bias.is_some_and(|b| b.0.dtype() != dtype) {
        candle_core::bail!("conv2d: operands of different dtypes");
    }
    let device = match dev.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
        _ => unreachable!("a CUDA storage lives on a CUDA device"),
    };
    let key = Key {
        device,
        dtype,
        x: xd,
        w: wd,
        padding: conv.padding,
        stride: conv.stride,
        tf32: ALLOW_TF32.load(Ordering::Relaxed),
    };
    let stream = dev.cuda_stream();
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let state = &mut *state;
        let handle = match state.handles.entry(key.device) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut raw = std::ptr::null_mut();
                unsafe {
                    check(sys::cudnnCreate(&mut raw), "handle")?;
                    check(
                        sys::cudnnSetStream(raw, stream.cu_stream() as sys::cudaStream_t),
                        "stream",
                    )?;
                }
                e.insert(Handle {
                    raw,
                    workspace: None,
                })
            }
        };
        if !state.plans.contains_key(&key) {
            state.plans.insert(key.clone(), Plan::new(&key)?);
        }
        let plan = state.plans.get_mut(&key).expect("inserted above");
        let (free, _) = stream.context().mem_get_info().w()?;
        let workspace = plan.choose(handle.raw, &key, pass, free)?;
        if handle.workspace.as_ref().map_or(0, |w| w.len()) < workspace {
            // Free the old one first: the two need not both fit.
            handle.workspace = None;
            handle.workspace = Some(
                stream
                    .alloc_zeros::<u8>(workspace)
                    .map_err(|e| candle_core::Error::Msg(format!("cuDNN workspace: {e}")))?,
            );
        }
        let dims = match pass {
            Pass::Forward => plan.out,
            Pass::Data => key.x,
            Pass::Filter => key.w,
        };
        let el: usize = dims.iter().product();
        let mut out = match dtype {
            DType::F32 => CudaStorageSlice::F32(unsafe { stream.alloc::<f32>(el) }.w()?),
            DType::BF16 => CudaStorageSlice::BF16(unsafe { stream.alloc(el) }.w()?),
            DType::F16 => CudaStorageSlice::F16(unsafe { stream.alloc(el) }.w()?),
            other => candle_core::bail!("conv2d: {other:?} is not supported"),
        };
        let (one, zero) = (1f32, 0f32);
        let (one, zero) = (
            &one as *const f32 as *const c_void,
            &zero as *const f32 as *const c_void,
        );
        let ap = ptr(a.0, a.1, "first operand")?;
        let bp = ptr(b.0, b.1, "second operand")?;
        macro_rules! out {
            ($v:expr) => {{
                let (p, _sync) = $v.device_ptr_mut(&stream);
                p as *mut c_void
            }};
        }
        let op = match &mut out {
            CudaStorageSlice::F32(v) => out!(v),
            CudaStorageSlice::BF16(v) => out!(v),
            CudaStorageSlice::F16(v) => out!(v),
            _ => unreachable!("allocated above"),
        };
        let (wsp, wsn) = match handle.workspace.as_mut() {
            Some(ws) if workspace > 0 => (out!(ws), ws.len()),
            _ => (std::ptr::null_mut(), 0),
        };
        let h = handle.raw;
        unsafe {
            match pass {
                Pass::Forward => {
                    let c = plan.forward.expect("chosen above");
                    check(
                        sys::cudnnSetConvolutionMathType(plan.conv, c.math),
                        "math type",
                    )?;
                    check(
                        sys::cudnnConvolutionForward(
                            h, one, plan.x, ap, plan.w, bp, plan.conv, c.algo, wsp, wsn, zero,
                            plan.y, op,
                        ),
                        "convolution",
                    )?;
                    if let Some(b) = bias {
                        let bp = ptr(b.0, b.1, "bias")?;
                        check(
                            sys::cudnnAddTensor(h, one, plan.bias, bp, one, plan.y, op),
                            "bias",
                        )?;
                    }
                }
                Pass::Data => {
                    let c = plan.data.expect("chosen above");
                    check(
                        sys::cudnnSetConvolutionMathType(plan.conv, c.math),
                        "math type",
                    )?;
                    check(
                        sys::cudnnConvolutionBackwardData(
                            h, one, plan.w, bp, plan.y, ap, plan.conv, c.algo, wsp, wsn, zero,
                            plan.x, op,
                        ),
                        "convolution input gradient",
                    )?;
                }
                Pass::Filter => {
                    let c = plan.filter.expect("chosen above");
                    check(
                        sys::cudnnSetConvolutionMathType(plan.conv, c.math),
                        "math type",
                    )?;
                    check(
                        sys::cudnnConvolutionBackwardFilter(
                            h, one, plan.x, ap, plan.y, bp, plan.conv, c.algo, wsp, wsn, zero,
                            plan.w, op,
                        ),
                        "convolution weight gradient",
                    )?;
                }
            }
        }
        Ok((super::storage(out, &dev), Shape::from(dims.to_vec())))
    })
}

/// `x` ⊛ `w` (no bias) with a backward pass: both gradients through cuDNN as well
/// (candle's input gradient is a naive transposed-convolution kernel, ~80% of a training
/// convolution's time: ../shared/CUDA.md).
pub fn conv2d_trainable(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        Trainable(Conv { padding, stride }),
    )
}

struct Trainable(Conv);

/// One gradient of a convolution: `dims` are the other operand's (x for the weight
/// gradient, w for the input gradient).
struct Gradient {
    conv: Conv,
    pass: Pass,
    dims: [usize; 4],
}

impl CustomOp3 for Trainable {
    fn name(&self) -> &'static str {
        "ldmkit-cudnn-conv2d-trainable"
    }
    cpu_refused!(3, "ldmkit-cudnn-conv2d-trainable");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.0.run((x, xl), (w, wl), Some((b, bl)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dims = |t: &Tensor| -> Result<[usize; 4]> {
            let (a, b, c, d) = t.dims4()?;
            Ok([a, b, c, d])
        };
        let grad = |pass, t: &Tensor| -> Result<Gradient> {
            Ok(Gradient {
                conv: Conv {
                    padding: self.0.padding,
                    stride: self.0.stride,
                },
                pass,
                dims: dims(t)?,
            })
        };
        use crate::train::nn::profile::time;
        let dev = x.device();
        let dx = time("conv bwd data", dev, || {
            dy.apply_op2_no_bwd(w, &grad(Pass::Data, x)?)
        })?;
        let dw = time("conv bwd filter", dev, || {
            x.apply_op2_no_bwd(&dy, &grad(Pass::Filter, w)?)
        })?;
        // db = Σ over samples and pixels, as one product with a ones vector (cuDNN's
        // cudnnConvolutionBackwardBias refuses bf16).
        let db = time("conv bwd bias", dev, || {
            let (n, c, h, w) = dy.dims4()?;
            let ones = Tensor::ones((h * w, 1), dy.dtype(), dy.device())?;
            dy.reshape((n * c, h * w))?
                .matmul(&ones)?
                .reshape((n, c))?
                .sum(0)
        })?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for Gradient {
    fn name(&self) -> &'static str {
        "ldmkit-cudnn-conv2d-gradient"
    }
    cpu_refused!(2, "ldmkit-cudnn-conv2d-gradient");
    fn cuda_fwd(
        &self,
        a: &CudaStorage,
        al: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match self.pass {
            // (dy, w): x's dims given, w's from the operand.
            Pass::Data => launch(
                &self.conv,
                Pass::Data,
                (a, al),
                (b, bl),
                None,
                self.dims,
                dims4(bl, "weight")?,
            ),
            // (x, dy): w's dims given.
            Pass::Filter => launch(
                &self.conv,
                Pass::Filter,
                (a, al),
                (b, bl),
                None,
                dims4(al, "input")?,
                self.dims,
            ),
            Pass::Forward => unreachable!("gradients only"),
        }
    }
}

use candle_core::cuda_backend::WrapErr;

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ldmkit-cudnn-conv2d"
    }
    cpu_refused!(2, "ldmkit-cudnn-conv2d");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run((x, xl), (w, wl), None)
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "ldmkit-cudnn-conv2d"
    }
    cpu_refused!(3, "ldmkit-cudnn-conv2d");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run((x, xl), (w, wl), Some((b, bl)))
    }
}
