//! Reading then rewriting: any checkpoint that opens is stripped to a torch zip and to
//! safetensors in memory. Invariants: no panic; every output reopens with (at least, for a
//! container whose pickled state holds tensors too) the tensors written.
#![no_main]
use ldmkit_core::ops::{Input, Inputs};
use ldmkit_core::plan::{execute, MemSink, Output};
use ldmkit_core::recipe::{output_plan, presets, run, OutputFormat};
use ldmkit_core::source::MemSource;
use ldmkit_core::Checkpoint;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(ckpt) = Checkpoint::open(Arc::new(MemSource::new(data.to_vec()))) else { return };
    let mut inputs = Inputs::new();
    let input = Input { files: vec![(String::new(), inputs.add(ckpt))] };
    let recipe = presets::strip(ldmkit_core::ops::EmaMode::Drop, None);
    let Ok((work, _)) = run(&recipe, &inputs, &[input]) else { return };
    for format in [OutputFormat::Torch, OutputFormat::Safetensors] {
        let Ok(Output::File(plan)) = output_plan(&work, &inputs, format, &recipe) else { continue };
        let mut sink = MemSink::default();
        if execute(&plan, &inputs.sources(), &mut sink, &mut |_, _| true).is_err() {
            continue;
        }
        assert_eq!(sink.0.len() as u64, plan.len());
        let back = Checkpoint::open(Arc::new(MemSource::new(sink.0))).expect("our output reopens");
        let n = back.tensors().expect("tensors walk").len();
        assert!(n >= work.state_dict.len(), "{format:?}: {n} tensors reopened");
    }
});
