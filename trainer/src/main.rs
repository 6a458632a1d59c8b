//! `ldmkit`: the command line for Stable Diffusion checkpoints.
//!
//! This file only dispatches: parse arguments, run one command, turn its outcome into an exit
//! code. Commands live in `cmd/`, shared terminal formatting in `format.rs`. Exit codes follow
//! ripgrep's convention: 0 success, 1 "found something" (an unsafe global), 2 an error.

mod cli;
mod cmd;
mod format;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let code = match args.command {
        cli::Command::Inspect(a) => cmd::inspect::run(&a),
        cli::Command::Scan(a) => cmd::scan::run(&a),
    };
    ExitCode::from(code)
}
