//! The collective on GPUs: NCCL (through cudarc's bindings), on candle's own stream, so a
//! sum is ordered with the kernels that made its input and those that use its output, with
//! no host synchronisation.

use super::Collective;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CudaDevice, DType, Device, Result, Storage, Tensor};

pub struct Nccl {
    comm: Comm,
    device: CudaDevice,
}

/// A new NCCL unique id as hex (its bootstrap root lives in the calling process, which must
/// stay up while the ranks connect: the launcher does).
pub fn new_id() -> std::result::Result<String, String> {
    let id =
        Id::new().map_err(|e| format!("NCCL: {e:?} (is libnccl.so.2 on the library path?)"))?;
    Ok(id
        .internal()
        .iter()
        .map(|&b| format!("{:02x}", b as u8))
        .collect())
}

fn parse_id(hex: &str) -> std::result::Result<Id, String> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or("the NCCL id is not hex")?;
    let internal: [std::ffi::c_char; 128] = bytes
        .iter()
        .map(|&b| b as std::ffi::c_char)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| format!("the NCCL id has {} bytes, not 128", bytes.len()))?;
    Ok(Id::uninit(internal))
}

impl Nccl {
    /// Join the job as `rank` of `world` (blocks until every rank has joined).
    pub fn join(
        device: &Device,
        rank: usize,
        world: usize,
        id: &str,
    ) -> std::result::Result<Nccl, String> {
        let Device::Cuda(dev) = device else {
            return Err("data-parallel training needs CUDA devices".into());
        };
        let comm = Comm::from_rank(dev.cuda_stream(), rank, world, parse_id(id)?)
            .map_err(|e| format!("rank {rank}: NCCL init: {e:?}"))?;
        Ok(Nccl {
            comm,
            device: dev.clone(),
        })
    }

    fn all_reduce<T>(&self, t: &Tensor) -> Result<Tensor>
    where
        T: candle_core::cuda_backend::CudaDType
            + candle_core::cuda_backend::cudarc::nccl::safe::NcclType
            + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
    {
        let t = t.contiguous()?;
        let out = {
            let (storage, layout) = t.storage_and_layout();
            let Storage::Cuda(s) = &*storage else {
                candle_core::bail!("NCCL: the tensor is not on the GPU");
            };
            let input = crate::models::cuda::view(s.as_cuda_slice::<T>()?, layout)?;
            let mut out = unsafe { self.device.alloc::<T>(layout.shape().elem_count())? };
            self.comm
                .all_reduce(&input, &mut out, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::Msg(format!("NCCL all-reduce: {e:?}")))?;
            out
        };
        Ok(crate::models::cuda::tensor(
            out,
            &self.device,
            t.shape().clone(),
        ))
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world_size()
    }
    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        self.all_reduce::<f32>(&t.to_dtype(DType::F32)?)
    }
    fn sum_host(&self, v: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(v, v.len(), &Device::Cuda(self.device.clone()))?;
        self.all_reduce::<f64>(&t)?.to_vec1::<f64>()
    }
}
