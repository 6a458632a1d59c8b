//! Command-line arguments. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Inspect, scan and rewrite Stable Diffusion checkpoints (.ckpt .pt .pth .bin .safetensors)
/// without ever executing the pickles inside them.
#[derive(Debug, Parser)]
#[command(name = "ldmkit", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise a checkpoint: format, architecture, components, dtypes, Lightning metadata, safety.
    Inspect(InspectArgs),
    /// List every Python global the files would import when loaded, with a verdict by torch's
    /// allowlist: allowed (torch.load(weights_only=True) accepts it), training (the opt-in
    /// Lightning/OmegaConf extension) or not allowed (anything else; what a global is known to
    /// do is said beside it). Nested pickles are followed and polyglots named.
    ///
    /// Exit status: 0 when every global is allowed (or training, with --training), 1 when any
    /// is not, 2 when a file cannot be read.
    Scan(ScanArgs),
    /// Keep the state dict only: a training checkpoint becomes a release.
    ///
    /// Drops optimizer state, callbacks, loops and hyper-parameters, and the LitEma weights
    /// (model_ema.*) unless --ema puts them in place of the model's.
    Strip(StripArgs),
    /// Merge a training checkpoint back with its base release (the seed's merge-back).
    ///
    /// The result is TRAINING's state dict plus every key of BASE's that TRAINING lacks (the
    /// text encoder a pre-encoded run never saved). EMA weights are dropped unless --ema
    /// (use them for the UNet) or --keep-ema.
    Merge(MergeArgs),
    /// Copy a release's weights into a training checkpoint to resume from (the seed's graft).
    ///
    /// TRAINING keeps its optimizer state, callbacks, loops and hyper-parameters; BASE's
    /// weights replace its state dict entries except cond_stage_model.*.
    Graft(GraftArgs),
    /// Convert between the original LDM layout (one file) and diffusers (a folder).
    Convert(ConvertArgs),
    /// Weighted sum A*(1-alpha) + B*alpha (A1111's checkpoint merger).
    WeightedSum(WeightedSumArgs),
    /// Add difference A + (B - C)*alpha (A1111's checkpoint merger).
    AddDifference(AddDifferenceArgs),
    /// Replace a model's VAE with another one's (a full checkpoint or a VAE-only file).
    BakeVae(BakeVaeArgs),
    /// Bake LoRA / LoCon / DoRA / LyCORIS adapters into a checkpoint, as A1111, ComfyUI and
    /// kohya's merge_lora.py do: W += ratio · alpha/rank · ΔW, text encoders included, with
    /// diffusers' fuse_lora rounding. Untouched tensors are copied as they are.
    ///
    /// Each LORA may carry its ratio and block weights: `style.safetensors:0.8` or
    /// `char.safetensors:1:OUTS` (LBW presets NONE ALL INS IND INALL MIDD OUTD OUTS OUTALL
    /// ALL0.5, or 26 / 17 weights for SD 1.x/2.x, 20 / 12 for SDXL: BASE, IN00…, M00, OUT00…).
    BakeLora(BakeLoraArgs),
    /// Print a file's hashes as the ecosystem names them: AutoV2 (A1111, Civitai), AutoV3 =
    /// kohya's sshs_model_hash (SHA-256 of the tensor bytes), A1111's legacy hash, SHA-256.
    Hash(HashArgs),
    /// Show or edit a safetensors file's metadata (title, trigger words, description,
    /// modelspec.* and kohya ss_* fields). The header is rewritten and the tensor bytes copied
    /// as they are, so AutoV3 / sshs_model_hash stays and AutoV2 changes.
    Meta(MetaArgs),
    /// Run a recipe (its text form in a file, or a recipe link) on input files.
    Apply(ApplyArgs),
    /// Compare two checkpoints: keys only in one, shape or dtype changes, and how much each
    /// tensor changed, per component and per UNet block.
    Diff(DiffArgs),
    /// Statistics and a histogram of one tensor.
    Stats(StatsArgs),
    /// Encode a dataset once: images to VAE latents (posterior mean and std), captions to
    /// CLIP text states, in safetensors shards with a manifest. Re-running continues.
    PreEncode(PreEncodeArgs),
    /// Show how CLIP tokenizes captions (ids, tokens, whether they fit in 75 tokens).
    Tokenize(TokenizeArgs),
    /// Fine-tune the whole UNet on pre-encoded data (see `ldmkit pre-encode`), with optional
    /// class-prior preservation; writes a run folder that --resume continues.
    Train(Box<TrainArgs>),
    /// Turn a training run into a release checkpoint: the run's UNet (or its EMA) with the
    /// base model's VAE and text encoder, in the original LDM layout.
    Export(ExportArgs),
    /// Draw images from a model (text encoder, UNet with DDIM and classifier-free guidance,
    /// VAE decoder): a quick look at what a checkpoint does.
    Sample(SampleArgs),
    /// Time the VAE and text encoders alone (for bench/pre_encode_gpu.sh).
    #[command(hide = true)]
    BenchEncoders(BenchEncodersArgs),
    /// Time full-UNet training steps on random data, and check the GPU's gradients against
    /// the CPU's (for bench/train_gpu.sh).
    #[command(hide = true)]
    BenchTrain(BenchTrainArgs),
}

/// Where and how a rewrite writes its result.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Cast floating-point tensors of the result (f16, bf16, f32).
    #[arg(long, value_name = "DTYPE")]
    pub dtype: Option<String>,
    /// Output: .safetensors, .ckpt/.pt/.pth/.bin (torch zip), or a folder (diffusers).
    #[arg(
        short,
        long,
        value_name = "OUT",
        required_unless_present = "print_recipe"
    )]
    pub output: Option<PathBuf>,
    /// Print the recipe this command runs (text and link) instead of running it.
    #[arg(long)]
    pub print_recipe: bool,
    /// In a .ckpt output, keep non-tensor entries whose classes torch's weights_only loader
    /// refuses (dropped with a warning by default). Globals known to run code are never kept.
    /// The output is then not loadable with torch.load(weights_only=True).
    #[arg(long)]
    pub keep_foreign: bool,
}

#[derive(Debug, Args)]
pub struct StripArgs {
    pub input: PathBuf,
    /// Put the EMA weights in place of the model's.
    #[arg(long)]
    pub ema: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    pub training: PathBuf,
    pub base: PathBuf,
    /// Use the EMA weights for the UNet.
    #[arg(long, conflicts_with = "keep_ema")]
    pub ema: bool,
    /// Keep the EMA tensors in the result.
    #[arg(long)]
    pub keep_ema: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct GraftArgs {
    pub base: PathBuf,
    pub training: PathBuf,
    /// Copy tensors even when their shape or dtype differ.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    pub input: PathBuf,
    /// Target layout.
    #[arg(long, value_parser = ["diffusers", "ldm"])]
    pub layout: String,
    /// Use the EMA weights for the UNet (training checkpoints).
    #[arg(long)]
    pub ema: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct WeightedSumArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Weight of B, from 0 (A) to 1 (B).
    #[arg(long)]
    pub alpha: f64,
    /// Block-weighted merge (supermerger): alpha per block, 26 values for SD 1.x/2.x
    /// (BASE = text encoder, IN00-IN11, M00, OUT00-OUT11) or 20 for SDXL; --alpha stays the
    /// weight of everything outside the blocks (the VAE).
    #[arg(long, value_name = "W,W,...")]
    pub blocks: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct AddDifferenceArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    pub c: PathBuf,
    /// Weight of (B - C), any finite number.
    #[arg(long)]
    pub alpha: f64,
    /// Block weights as for weighted-sum: the weight of (B - C) per block.
    #[arg(long, value_name = "W,W,...")]
    pub blocks: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct BakeLoraArgs {
    /// The checkpoint to bake into (LDM single file or diffusers folder).
    pub model: PathBuf,
    /// Adapters, each `FILE[:RATIO[:BLOCKS]]` (ratio 1 when left out).
    #[arg(required = true, value_name = "LORA[:RATIO[:BLOCKS]]")]
    pub loras: Vec<String>,
    /// Block weights for every adapter that names none of its own (a preset or a list).
    #[arg(long, value_name = "W,W,...|PRESET")]
    pub blocks: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MetaArgs {
    /// A .safetensors file.
    pub file: PathBuf,
    /// Set a metadata field (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Remove a metadata field (repeatable).
    #[arg(long, value_name = "KEY")]
    pub delete: Vec<String>,
    /// Set modelspec.title.
    #[arg(long)]
    pub title: Option<String>,
    /// Set modelspec.trigger_phrase (the words that call up what was trained).
    #[arg(long)]
    pub trigger: Option<String>,
    /// Set modelspec.description.
    #[arg(long)]
    pub description: Option<String>,
    /// Where to write the edited file (without it, the metadata is printed).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Print the metadata as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BakeVaeArgs {
    pub model: PathBuf,
    pub vae: PathBuf,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A recipe file (text form), or a recipe link (`...#recipe=...`).
    pub recipe: String,
    /// One file or diffusers folder per recipe input, in the recipe's order.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    pub file: PathBuf,
    /// The tensor's name as `inspect` lists it (state_dict/ may be left out).
    pub key: String,
    /// Histogram bins.
    #[arg(long, default_value_t = 40)]
    pub bins: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The checkpoint (format is detected from content, not the extension).
    pub file: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// List the tensors whose names match this glob (e.g. '*attn2.to_k*', 'state_dict/first_stage_model.*').
    #[arg(long, value_name = "GLOB")]
    pub filter: Option<String>,
    /// List every tensor (same as --filter '*').
    #[arg(long, conflicts_with = "filter")]
    pub all: bool,
    /// For an adapter: list every module with its rank, alpha and strength.
    #[arg(long)]
    pub modules: bool,
    /// Also compute the file's hashes (AutoV2, AutoV3, legacy, SHA-256): reads every byte.
    #[arg(long)]
    pub hash: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files to scan; a folder scans every checkpoint inside it, recursively (.ckpt, .pt,
    /// .pth, .bin, .safetensors, .pkl, .pickle), e.g. a diffusers folder or a hub cache.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
    /// Accept the Lightning/OmegaConf training-state classes (OmegaConf configs, typing.Any,
    /// defaultdict, dict/list/int) for the exit status: a training checkpoint then exits 0.
    #[arg(long)]
    pub training: bool,
}

#[derive(Debug, Args)]
pub struct PreEncodeArgs {
    /// The model: an LDM-layout .ckpt/.safetensors (release or training checkpoint) or a
    /// diffusers folder.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Datasets: folders of images with same-stem .txt captions (kohya), folders with a
    /// metadata.jsonl (Hugging Face), or webdataset .tar shards (or a folder of them).
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Output folder (shards, manifest.json, extras.safetensors).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// CLIP tokenizer: tokenizer.json, or a folder with vocab.json + merges.txt. Default: the
    /// model folder's tokenizer/.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Training resolution (square side, or the bucket area's side with --buckets).
    #[arg(long, default_value_t = 512)]
    pub resolution: u32,
    /// Aspect-ratio buckets: sides multiples of 64, area about resolution².
    #[arg(long)]
    pub buckets: bool,
    /// Also encode every image mirrored left to right.
    #[arg(long)]
    pub flip: bool,
    /// Text encoder layer, counted as A1111 does: 1 = last, 2 = penultimate.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// One prompt per line, encoded for preview images during training.
    #[arg(long, value_name = "FILE")]
    pub sample_prompts: Option<PathBuf>,
    /// Metadata.jsonl column holding the caption (default: text, caption or prompt).
    #[arg(long, value_name = "NAME")]
    pub caption_column: Option<String>,
    /// Stored dtype of latents and text states: f16, bf16, f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// Compute precision of the VAE and text encoder: f32, bf16, f16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// auto (CUDA when built with it and present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32 on the GPU without TF32 tensor cores (slower; on by default, as in PyTorch's
    /// cuDNN convolutions).
    #[arg(long)]
    pub no_tf32: bool,
    /// Images per encoder batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Samples per shard file.
    #[arg(long, default_value_t = 256)]
    pub shard_size: usize,
    /// Image decoding threads (default: one per core, up to 16).
    #[arg(long)]
    pub workers: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// tokenizer.json, or a folder with vocab.json + merges.txt.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: PathBuf,
    /// Captions.
    #[arg(required = true)]
    pub text: Vec<String>,
    /// Print ids as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchEncodersArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Comma-separated compute precisions to time.
    #[arg(long, default_value = "f32,bf16")]
    pub precision: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32 on the GPU without TF32 tensor cores (slower; on by default, as in PyTorch's
    /// cuDNN convolutions).
    #[arg(long)]
    pub no_tf32: bool,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub text_batch: usize,
    #[arg(long, default_value_t = 512)]
    pub resolution: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Also time each VAE stage and single ops (group norm, conv, SiLU, add).
    #[arg(long)]
    pub stages: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The model: an LDM-layout .ckpt/.safetensors or a diffusers folder.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// CLIP tokenizer (tokenizer.json, or a folder with vocab.json + merges.txt). Default:
    /// the model folder's tokenizer/.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Prompts; one image each (N each with -n).
    #[arg(long, num_args = 1.., required = true)]
    pub prompt: Vec<String>,
    /// Images per prompt, each with the next seed. With -n, each image also gets a
    /// same-named .txt caption (the prompt), so the folder is ready for `pre-encode`
    /// (class images for --prior-data).
    #[arg(short = 'n', long = "count")]
    pub count: Option<usize>,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Use a training checkpoint's EMA weights (model_ema.*) for the UNet.
    #[arg(long)]
    pub ema: bool,
    /// What the UNet predicts: epsilon (SD 1.x, SD 2.x base) or v (SD 2.x 768-v models).
    #[arg(long, default_value = "epsilon", value_parser = ["epsilon", "v"])]
    pub prediction: String,
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    /// Text encoder layer, counted as A1111 does: 1 = last, 2 = penultimate.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Output PNG; with several prompts, NAME-1.png, NAME-2.png, ...
    #[arg(short, long, value_name = "PNG")]
    pub output: PathBuf,
    /// auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32 on the GPU without TF32 tensor cores (slower; on by default, as in PyTorch's
    /// cuDNN convolutions).
    #[arg(long)]
    pub no_tf32: bool,
    /// f32, bf16, f16 (GPU only for the last two).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model to fine-tune (any SD 1.x / 2.x checkpoint or diffusers folder); its VAE
    /// draws the previews.
    #[arg(long, value_name = "FILE", required_unless_present = "resume")]
    pub model: Option<PathBuf>,
    /// A pre-encoded data folder (`ldmkit pre-encode`).
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// The run folder to create.
    #[arg(
        long,
        value_name = "RUN",
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN from its last complete checkpoint, with its saved settings
    /// (only --steps, --save-every, --sample-every and --device may change).
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    /// Class-prior preservation (DreamBooth): a pre-encoded folder of class images (make them
    /// with `ldmkit sample -n N`), mixed into every batch with its own loss term.
    #[arg(long, value_name = "DIR")]
    pub prior_data: Option<PathBuf>,
    /// Weight of the prior-preservation loss.
    #[arg(long, default_value_t = 1.0)]
    pub prior_weight: f64,
    /// Optimizer steps in all.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Samples per micro-batch (and as many prior samples with --prior-data).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (absolute: not scaled by batch size).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Linear learning-rate warm-up, in optimizer steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    #[arg(long, default_value_t = 0.9)]
    pub adam_beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// AdamW's decoupled weight decay (torch's default).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Keep an EMA of the weights (LitEma's schedule); `export --ema` releases it.
    #[arg(long)]
    pub ema: bool,
    #[arg(long, default_value_t = 0.9999)]
    pub ema_decay: f64,
    /// Probability of training a sample on the empty caption instead of its own.
    #[arg(long, default_value_t = 0.0)]
    pub caption_dropout: f64,
    /// min-SNR-γ loss weighting (5 is the paper's choice).
    #[arg(long)]
    pub min_snr_gamma: Option<f64>,
    /// Noise offset (about 0.1 helps very dark and bright images).
    #[arg(long, default_value_t = 0.0)]
    pub noise_offset: f64,
    /// What the UNet predicts: epsilon (SD 1.x, SD 2.x base) or v (SD 2.x 768-v).
    #[arg(long, default_value = "epsilon", value_parser = ["epsilon", "v"])]
    pub prediction: String,
    /// Compute dtype: bf16 (GPU default) or f32 (CPU); weights and optimizer stay f32.
    #[arg(long)]
    pub precision: Option<String>,
    /// Recompute each block's activations in the backward pass (less memory, ~30% slower).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N steps (and at the end).
    #[arg(long)]
    pub save_every: Option<u64>,
    /// Checkpoints kept (0: all).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Draw the data folder's sample prompts every N steps (0: never).
    #[arg(long)]
    pub sample_every: Option<u64>,
    /// DDIM steps of a preview.
    #[arg(long, default_value_t = 25)]
    pub sample_steps: usize,
    /// Classifier-free guidance of previews.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Data-parallel training on N GPUs of this machine (one process each, NCCL);
    /// --batch-size stays the global batch, split over all GPUs.
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
    /// Machines in a multi-node job (each runs the same command with its --node-rank).
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub nodes: usize,
    /// This machine's index in a multi-node job (0 creates the NCCL id).
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub node_rank: usize,
    /// Where the nodes meet: tcp:HOST:PORT (node 0 listens) or file:PATH on a shared
    /// filesystem (node 0 writes the NCCL id there; use a new path per job).
    #[arg(long, value_name = "ADDR")]
    pub rendezvous: Option<String>,
    /// Seconds a rank waits without progress from the others before it stops the job.
    #[arg(long, default_value_t = 1800, value_name = "S")]
    pub dist_timeout: u64,
    /// Run N data-parallel ranks as threads of this process on the CPU, summing through
    /// memory instead of NCCL: the multi-GPU logic, testable without GPUs.
    #[arg(long, hide = true, value_name = "N")]
    pub simulate_ranks: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder.
    pub run: PathBuf,
    /// The release the run started from: its VAE and text encoder go into the result.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// Release the EMA weights (the run must have used --ema).
    #[arg(long)]
    pub ema: bool,
    /// The checkpoint to export (default: the last).
    #[arg(long)]
    pub step: Option<u64>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,4,8")]
    pub batch: String,
    /// Comma-separated compute precisions (bf16, f32).
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Comma-separated recomputation settings: off, on.
    #[arg(long, default_value = "off,on")]
    pub checkpointing: String,
    /// Latent side (64 = 512² images).
    #[arg(long, default_value_t = 64)]
    pub latent: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Instead of timing, compare the device's output and gradients with the CPU's on this
    /// (small) model.
    #[arg(long, value_name = "MODEL")]
    pub check: Option<PathBuf>,
    /// Append one JSON line per result here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also time each block kind's forward and backward (synchronised) and the step's phases.
    #[arg(long)]
    pub profile: bool,
    /// Sum each step's gradients through a one-rank NCCL communicator in buckets, as
    /// `train --gpus` does: what the data-parallel path costs at world size 1.
    #[arg(long)]
    pub nccl: bool,
}
