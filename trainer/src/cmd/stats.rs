//! `ldmkit stats FILE KEY`: min, max, mean, std, NaN/Inf counts and a histogram of one tensor.

use super::{open_source, report_error, EXIT_ERROR};
use crate::cli::StatsArgs;
use crate::format::bar;
use ldmkit_core::analysis::stats::{tensor_stats, TensorStats};
use ldmkit_core::model::components::state_dict_key;
use ldmkit_core::plan::{ElementReader, LazyTensor};
use ldmkit_core::Checkpoint;

fn compute(args: &StatsArgs) -> Result<(String, String, Vec<u64>, TensorStats), String> {
    let source = open_source(&args.file)?;
    let ckpt = Checkpoint::open(source.clone()).map_err(|e| e.to_string())?;
    let tensors = ckpt.tensors_named_once().map_err(|e| e.to_string())?;
    let found = tensors
        .iter()
        .find(|t| t.name == args.key)
        .or_else(|| {
            tensors
                .iter()
                .find(|t| state_dict_key(&t.name) == Some(args.key.as_str()))
        })
        .ok_or_else(|| format!("no tensor '{}' (see `ldmkit inspect --all`)", args.key))?;
    let lazy = LazyTensor::stored(0, found.tensor, ckpt.storage(found.tensor));
    let sources = [source];
    let mut reader = ElementReader::new(&sources);
    let stats = tensor_stats(&mut reader, &lazy, args.bins).map_err(|e| e.to_string())?;
    Ok((
        found.name.clone(),
        found.tensor.dtype.torch_name().to_string(),
        found.tensor.shape.clone(),
        stats,
    ))
}

pub fn run(args: &StatsArgs) -> u8 {
    let (name, dtype, shape, s) = match compute(args) {
        Ok(r) => r,
        Err(e) => {
            report_error(&args.file, e);
            return EXIT_ERROR;
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&s).expect("stats serialise");
        v["name"] = serde_json::json!(name);
        v["dtype"] = serde_json::json!(dtype);
        v["shape"] = serde_json::json!(shape);
        println!("{v}");
        return 0;
    }
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6e}"));
    println!("{name}  {dtype} {shape:?}  {} values", s.numel);
    println!("  min {}  max {}", num(s.min), num(s.max));
    println!("  mean {}  std {}", num(s.mean), num(s.std));
    println!("  NaN {}  Inf {}  zeros {}", s.nan, s.inf, s.zeros);
    let h = &s.histogram;
    let peak = h.counts.iter().copied().max().unwrap_or(0).max(1);
    let width = (h.hi - h.lo) / h.counts.len() as f64;
    for (i, &c) in h.counts.iter().enumerate() {
        let lo = h.lo + width * i as f64;
        println!("  {lo:>13.5e} {} {c}", bar(c as f64 / peak as f64, 40));
    }
    0
}
