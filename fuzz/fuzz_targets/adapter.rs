//! Adapters: a safetensors file of adapter-named tensors with fuzzed names, parts, shapes and
//! values is recognised, summarised and baked into a tiny model whose output plan is run.
//! Invariants: no panic, no hang; a bake that plans runs to exactly the planned length.
#![no_main]
use ldmkit_core::ops::Inputs;
use ldmkit_core::plan::{execute, MemSink, Output};
use ldmkit_core::recipe::{self, presets, OutputFormat};
use ldmkit_core::source::MemSource;
use ldmkit_core::{Checkpoint, Report};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const MODULES: &[&str] = &[
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_input_blocks_1_1_proj_in",
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "unet.down_blocks.0.attentions.0.proj_in",
    "lora_unet_bogus",
];
const PARTS: &[&str] = &[
    ".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", ".alpha", ".dora_scale",
    ".lora_A.weight", ".lora_B.weight", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b",
    ".hada_t1", ".hada_t2", ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a",
    ".lokr_w2_b", ".lokr_t2", ".diff", ".diff_b", ".weight", ".on_input", ".a1.weight",
    ".a2.weight", ".b1.weight", ".b2.weight", ".oft_blocks",
];

/// A safetensors file of F16 tensors `(name, shape)` with values taken from `fill`.
fn safetensors(tensors: &[(String, Vec<u64>)], fill: &[u8]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: u64 = shape.iter().product();
        let start = data.len();
        for k in 0..n as usize * 2 {
            data.push(fill.get(k % fill.len().max(1)).copied().unwrap_or(0x3c));
        }
        if i > 0 {
            header.push(',');
        }
        header += &format!(
            "{:?}:{{\"dtype\":\"F16\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            name,
            data.len()
        );
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn base() -> Vec<u8> {
    let t = |n: &str, s: &[u64]| (n.to_string(), s.to_vec());
    safetensors(
        &[
            t("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", &[8, 8]),
            t("model.diffusion_model.input_blocks.1.1.proj_in.weight", &[8, 8, 1, 1]),
            t("model.diffusion_model.input_blocks.1.1.proj_in.bias", &[8]),
            t("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", &[8, 8, 3, 3]),
            t("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", &[8, 8]),
        ],
        &[0x00, 0x3c, 0x00, 0xbc],
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, mut rest)) = data.split_first() else { return };
    let mut tensors = Vec::new();
    for _ in 0..(count % 8) + 1 {
        let [m, p, rank, d0, d1, d2, d3, tail @ ..] = rest else { break };
        rest = tail;
        let dims = [*d0 % 10, *d1 % 10, *d2 % 4, *d3 % 4].map(u64::from);
        let shape = dims[..(*rank % 5) as usize].to_vec();
        let name = format!(
            "{}{}",
            MODULES[*m as usize % MODULES.len()],
            PARTS[*p as usize % PARTS.len()]
        );
        if !tensors.iter().any(|(n, _)| *n == name) {
            tensors.push((name, shape));
        }
    }
    let adapter = safetensors(&tensors, rest);
    let Ok(lora) = Checkpoint::open(Arc::new(MemSource::new(adapter))) else { return };
    let _ = Report::new(&lora);
    let model = Checkpoint::open(Arc::new(MemSource::new(base()))).expect("the base reads");
    let mut inputs = Inputs::new();
    let bound = [
        ldmkit_core::ops::Input { files: vec![(String::new(), inputs.add(model))] },
        ldmkit_core::ops::Input { files: vec![(String::new(), inputs.add(lora))] },
    ];
    let recipe = presets::bake_lora(&[(0.7, None)], None);
    let Ok((work, _)) = recipe::run(&recipe, &inputs, &bound) else { return };
    let Ok(Output::File(plan)) =
        recipe::output_plan(&work, &inputs, OutputFormat::Safetensors, &recipe)
    else {
        return;
    };
    let mut sink = MemSink::default();
    if execute(&plan, &inputs.sources(), &mut sink, &mut |_, _| true).is_ok() {
        assert_eq!(sink.0.len() as u64, plan.len());
    }
});
