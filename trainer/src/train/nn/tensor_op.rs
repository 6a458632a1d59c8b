//! Autograd ops whose forward is written with candle tensor ops and whose backward is
//! written by hand: attention, the norms, linear-with-bias.
//!
//! candle's custom ops receive storages, not tensors. These ops hold detached handles of
//! their own arguments (the same storage, no copy), compute the forward on those with tensor
//! ops (fused kernels where there are some), and hand candle the result's storage; the
//! backward gets tensors anyway.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

pub trait TensorOp3 {
    fn name(&self) -> &'static str;
    /// The forward, from the inputs the op holds.
    fn forward_tensors(&self) -> Result<Tensor>;
    /// Gradients of the three arguments given the output's.
    fn backward_tensors(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>;
    /// What `bench-train --profile` calls the forward and the backward.
    fn profile_names(&self) -> (&'static str, &'static str);
}

/// Apply `op` to its arguments `a`, `b`, `c` (the tensors it holds detached handles of).
pub fn apply<T: TensorOp3 + Send + Sync + 'static>(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    op: T,
) -> Result<Tensor> {
    a.apply_op3(b, c, Op(op))
}

struct Op<T>(T);

/// The storage of a freshly computed contiguous tensor.
fn storage_of<S>(t: &Tensor, pick: impl Fn(&Storage) -> Option<&S>) -> Result<(S, Shape)>
where
    S: BackendStorage,
{
    let (storage, layout) = t.storage_and_layout();
    let s = pick(&storage)
        .ok_or_else(|| candle_core::Error::Msg("attention: device mismatch".into()))?;
    Ok((s.try_clone(layout)?, t.shape().clone()))
}

impl<T: TensorOp3> CustomOp3 for Op<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        storage_of(&self.0.forward_tensors()?.contiguous()?, |s| match s {
            Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dev = candle_core::Device::Cuda(s.device.clone());
        let out = super::profile::time(self.0.profile_names().0, &dev, || {
            self.0.forward_tensors()?.contiguous()
        })?;
        storage_of(&out, |s| match s {
            Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::profile::time(self.0.profile_names().1, a.device(), || {
            self.0.backward_tensors(a, b, c, out, grad)
        })
    }
}
