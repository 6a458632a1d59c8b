//! `ldmkit`: the command line for Stable Diffusion checkpoints.
//!
//! This file only dispatches: parse arguments, run one command, turn its outcome into an exit
//! code. Commands live in `cmd/`, shared terminal formatting in `format.rs`. Exit codes follow
//! ripgrep's convention: 0 success, 1 "found something" (an unsafe global), 2 an error.

mod cli;
mod cmd;
mod data;
mod encode;
mod format;
mod models;
mod text;
mod train;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as other Unix tools do, instead of a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    let code = match args.command {
        cli::Command::Inspect(a) => cmd::inspect::run(&a),
        cli::Command::Scan(a) => cmd::scan::run(&a),
        cli::Command::Strip(a) => cmd::shortcuts::strip(&a),
        cli::Command::Merge(a) => cmd::shortcuts::merge(&a),
        cli::Command::Graft(a) => cmd::shortcuts::graft(&a),
        cli::Command::Convert(a) => cmd::shortcuts::convert(&a),
        cli::Command::WeightedSum(a) => cmd::shortcuts::weighted_sum(&a),
        cli::Command::AddDifference(a) => cmd::shortcuts::add_difference(&a),
        cli::Command::BakeVae(a) => cmd::shortcuts::bake_vae(&a),
        cli::Command::BakeLora(a) => cmd::shortcuts::bake_lora(&a),
        cli::Command::Hash(a) => cmd::hash::run(&a),
        cli::Command::Meta(a) => cmd::meta::run(&a),
        cli::Command::Apply(a) => cmd::shortcuts::apply(&a),
        cli::Command::Diff(a) => cmd::diff::run(&a),
        cli::Command::Stats(a) => cmd::stats::run(&a),
        cli::Command::PreEncode(a) => cmd::pre_encode::run(&a),
        cli::Command::Tokenize(a) => cmd::tokenize::run(&a),
        cli::Command::Sample(a) => cmd::sample::run(&a),
        cli::Command::Train(a) => cmd::train::run(&a),
        cli::Command::Export(a) => cmd::export::run(&a),
        cli::Command::BenchEncoders(a) => cmd::bench_encoders::run(&a),
        cli::Command::BenchTrain(a) => cmd::bench_train::run(&a),
    };
    ExitCode::from(code)
}
