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
    /// List every Python global the files would import when loaded, with a safety verdict.
    ///
    /// Exit status: 0 when every global is one `torch.load(weights_only=True)` accepts, 1 when
    /// any is not, 2 when a file cannot be read.
    Scan(ScanArgs),
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
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files to scan.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
}
