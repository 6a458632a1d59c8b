//! A Stable Diffusion model file opened for the trainer: any checkpoint ldmkit-core reads (an
//! LDM-layout `.ckpt`/`.safetensors` release, a training checkpoint, or a diffusers folder),
//! held in the diffusers layout so every model here is built from one set of names.
//!
//! Weights are read per component and only for the keys a model asks for, so pre-encoding
//! never holds the UNet in memory. Models are built through a [`SimpleBackend`] that checks
//! every requested name and shape against the file and collects every problem, so a wrong
//! file yields one error that lists all missing or misshapen keys instead of the first.

use crate::cmd::inputs::{open_input, payload_warnings};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use indexmap::IndexMap;
use ldmkit_core::layout::{self, config};
use ldmkit_core::ops::{apply_ema, EmaMode, Inputs, Working, DIFFUSERS_WEIGHT_FILES};
use ldmkit_core::plan::{ElementReader, LazyTensor};
use ldmkit_core::recipe::Layout;
use ldmkit_core::source::SharedSource;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A model file, converted (lazily: nothing is read yet) to the diffusers layout.
pub struct ModelFile {
    pub path: PathBuf,
    /// Payload warnings ([`payload_warnings`]): printed by the command once its weights
    /// have loaded, so a file refused for another reason still gets one line.
    warnings: Vec<String>,
    work: Working,
    sources: Vec<SharedSource>,
}

/// A diffusers component of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Unet,
    Vae,
    TextEncoder,
}

impl Part {
    pub fn prefix(self) -> &'static str {
        match self {
            Part::Unet => "unet",
            Part::Vae => "vae",
            Part::TextEncoder => "text_encoder",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Part::Unet => "UNet (model.diffusion_model.*)",
            Part::Vae => "VAE (first_stage_model.*)",
            Part::TextEncoder => "text encoder (cond_stage_model.*)",
        }
    }
}

impl ModelFile {
    /// Open a checkpoint file or a diffusers folder. With `ema`, a training checkpoint's
    /// LitEma weights replace the UNet's. Errors are one line, without the path (callers
    /// name the file).
    pub fn open(path: &Path, ema: bool) -> Result<ModelFile, String> {
        let mut inputs = Inputs::new();
        let input = open_input(path, &mut inputs).map_err(|(file, e)| {
            if file == path {
                e
            } else {
                format!("{}: {e}", file.display())
            }
        })?;
        let mut work = inputs.working(&input).map_err(|e| e.to_string())?;
        if ema {
            let swapped = apply_ema(&mut work, EmaMode::Use).map_err(|e| e.to_string())?;
            if swapped == 0 {
                return Err("has no EMA weights (model_ema.*) to use".into());
            }
        }
        layout::convert(&mut work, Layout::Diffusers).map_err(|e| e.to_string())?;
        if work
            .state_dict
            .contains_key("text_encoder_2.text_model.embeddings.token_embedding.weight")
        {
            return Err("is an SDXL model; the trainer supports SD 1.x and 2.x".into());
        }
        Ok(ModelFile {
            path: path.to_path_buf(),
            warnings: payload_warnings(path, &input, &inputs),
            work,
            sources: inputs.sources(),
        })
    }

    /// Print the file's payload warnings (if any) on stderr.
    pub fn warn_payloads(&self) {
        for line in &self.warnings {
            eprintln!("{line}");
        }
    }

    /// The files the weights come from (what a model hash covers).
    pub fn weight_files(&self) -> Vec<PathBuf> {
        if !self.path.is_dir() {
            return vec![self.path.clone()];
        }
        ldmkit_core::layout::COMPONENTS
            .iter()
            .filter_map(|c| {
                DIFFUSERS_WEIGHT_FILES
                    .iter()
                    .map(|f| self.path.join(c).join(f))
                    .find(|p| p.is_file())
            })
            .collect()
    }

    pub fn architecture(&self) -> &'static str {
        if self.sd2() {
            "SD 2.x"
        } else {
            "SD 1.x"
        }
    }

    /// The component's tensors, keyed without the component prefix. transformers 5 saves
    /// `CLIPTextModel` without the `text_model.` level (`embeddings.token_embedding.weight`);
    /// those names are given it back, so both generations of diffusers folders load.
    fn tensors(&self, part: Part) -> IndexMap<Cow<'_, str>, &LazyTensor> {
        let prefix = format!("{}.", part.prefix());
        self.work
            .state_dict
            .iter()
            .filter_map(|(k, e)| {
                let name = k.strip_prefix(&prefix)?;
                let bare = part == Part::TextEncoder
                    && ["embeddings.", "encoder.", "final_layer_norm."]
                        .iter()
                        .any(|p| name.starts_with(p));
                let name = if bare {
                    Cow::Owned(format!("text_model.{name}"))
                } else {
                    Cow::Borrowed(name)
                };
                Some((name, &e.tensor))
            })
            .collect()
    }

    /// Whether the UNet uses linear projections (SD 2.x; then the text encoder is OpenCLIP's).
    fn sd2(&self) -> bool {
        config::linear_projection(&borrowed(&self.tensors(Part::Unet)))
    }

    /// The component's diffusers config: its `config.json` in a diffusers folder, else
    /// inferred from tensor shapes by ldmkit-core (as `convert` writes it).
    pub fn config(&self, part: Part) -> Result<Value, String> {
        let file = self.path.join(part.prefix()).join("config.json");
        if file.is_file() {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            return serde_json::from_str(&text)
                .map_err(|e| format!("{}: not valid JSON: {e}", file.display()));
        }
        let owned = self.tensors(part);
        let tensors = borrowed(&owned);
        if tensors.is_empty() {
            return Err(format!("holds no {}", part.describe()));
        }
        match part {
            Part::Unet => config::unet(&tensors),
            Part::Vae => config::vae(&tensors, false),
            Part::TextEncoder => config::text_encoder(&tensors, self.sd2()),
        }
        .map_err(|e| format!("{}: {e}", part.describe()))
    }

    /// Read the component's tensors whose names start with one of `wanted` (all when empty)
    /// into a [`Weights`] on `device` in `dtype`.
    pub fn weights(
        &self,
        part: Part,
        wanted: &[&str],
        dtype: DType,
        device: &Device,
    ) -> Result<Weights, String> {
        let mut reader = ElementReader::new(&self.sources);
        let mut tensors = HashMap::new();
        let mut buf = Vec::new();
        for (name, t) in self.tensors(part) {
            if !wanted.is_empty() && !wanted.iter().any(|w| name.starts_with(w)) {
                continue;
            }
            buf.clear();
            let err = |e: String| format!("{}.{name}: {e}", part.prefix());
            reader
                .read_bytes(t, 0, t.numel(), &mut buf)
                .map_err(|e| err(e.to_string()))?;
            reader.clear();
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let tensor =
                Tensor::from_raw_buffer(&buf, candle_dtype(t.dtype)?, &shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .and_then(|t| t.to_device(device))
                    .map_err(|e| err(super::one_line(e)))?;
            tensors.insert(name.to_string(), tensor);
        }
        if tensors.is_empty() {
            return Err(format!("holds no {}", part.describe()));
        }
        Ok(Weights {
            part,
            tensors,
            problems: Arc::default(),
        })
    }
}

/// The name → tensor map ldmkit-core's config inference takes.
fn borrowed<'a>(
    m: &'a IndexMap<Cow<'_, str>, &'a LazyTensor>,
) -> IndexMap<&'a str, &'a LazyTensor> {
    m.iter().map(|(k, t)| (k.as_ref(), *t)).collect()
}

fn candle_dtype(dtype: ldmkit_core::DType) -> Result<DType, String> {
    use ldmkit_core::DType as D;
    Ok(match dtype {
        D::Float32 => DType::F32,
        D::Float16 => DType::F16,
        D::BFloat16 => DType::BF16,
        D::Float64 => DType::F64,
        D::Int64 => DType::I64,
        D::UInt8 => DType::U8,
        other => return Err(format!("{} tensors are not supported", other.torch_name())),
    })
}

/// Problems listed in full before the rest are counted.
const MAX_LISTED: usize = 24;

/// One component's tensors, handed to candle's `VarBuilder`; remembers every name a model
/// asked for that was missing or had the wrong shape.
pub struct Weights {
    part: Part,
    tensors: HashMap<String, Tensor>,
    problems: Arc<Mutex<BTreeSet<String>>>,
}

impl Weights {
    /// Build a model from these weights; on any missing or misshapen key, one error that
    /// lists them all (diffusers names, as `ldmkit convert --layout diffusers` shows them).
    pub fn build<M>(
        self,
        dtype: DType,
        device: &Device,
        make: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
    ) -> Result<M, String> {
        let part = self.part;
        let found = self.problems.clone();
        let backend: Box<dyn SimpleBackend> = Box::new(self);
        let built = make(VarBuilder::from_backend(backend, dtype, device.clone()));
        let problems = std::mem::take(&mut *found.lock().expect("not poisoned"));
        if !problems.is_empty() {
            let shown: Vec<&str> = problems
                .iter()
                .take(MAX_LISTED)
                .map(String::as_str)
                .collect();
            return Err(format!(
                "the {} does not fit this model: {} problem(s): {}{}",
                part.describe(),
                problems.len(),
                shown.join("; "),
                if problems.len() > shown.len() {
                    "; ..."
                } else {
                    ""
                }
            ));
        }
        built.map_err(|e| format!("building the {}: {}", part.describe(), super::one_line(e)))
    }
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let full = format!("{}.{name}", self.part.prefix());
        let problem = match self.tensors.get(name) {
            Some(t) if t.shape() == &shape => return t.to_dtype(dtype)?.to_device(dev),
            Some(t) => format!(
                "{full} is {:?}, the model needs {:?}",
                t.dims(),
                shape.dims()
            ),
            None => format!("{full} is missing"),
        };
        self.problems.lock().expect("not poisoned").insert(problem);
        // Carry on so every problem is found; the caller reports them all.
        Tensor::zeros(shape, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("{}.{name} is missing", self.part.prefix()),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
