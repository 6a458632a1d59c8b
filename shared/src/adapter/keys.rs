//! Adapter key spellings: every way the common tools name an adapter tensor, read into one
//! module name and one part.
//!
//! Module names are kept in kohya's flat form (`lora_unet_down_blocks_0_…_to_q`,
//! `lora_te1_text_model_encoder_layers_0_self_attn_q_proj`): the target module's path with
//! `.` turned into `_` under a prefix naming the network. kohya, LyCORIS and A1111 name
//! modules so; diffusers / PEFT files (`unet.down_blocks.0.….to_q.lora_A.weight`) are
//! flattened the same way, so one lookup serves both spellings (see [`super::resolve`]).

/// What one tensor of an adapter module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// LoRA / LoCon down (`lora_down`, PEFT `lora_A`): `[r, in(, kh, kw)]`.
    Down,
    /// LoRA / LoCon up (`lora_up`, PEFT `lora_B`): `[out, r(, 1, 1)]`.
    Up,
    /// LoCon's Tucker core (`lora_mid`): `[r, r, kh, kw]`.
    Mid,
    /// The module's alpha (a 0-d tensor; absent means alpha = rank).
    Alpha,
    /// DoRA's magnitude (kohya / LyCORIS `dora_scale`, PEFT `lora_magnitude_vector`).
    DoraScale,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    HadaT1,
    HadaT2,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    LokrT2,
    /// LyCORIS "full": the whole difference of the weight (`diff`) and of the bias (`diff_b`).
    Diff,
    DiffB,
    /// (IA)³: a per-channel scale (`weight`) and whether it scales inputs (`on_input`).
    Ia3Weight,
    Ia3OnInput,
    GloraA1,
    GloraA2,
    GloraB1,
    GloraB2,
}

/// Suffixes after the module name, longest spellings first where one ends another.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_mid.weight", Part::Mid),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    ("_lora.down.weight", Part::Down),
    ("_lora.up.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_magnitude_vector.weight", Part::DoraScale),
    (".lora_magnitude_vector", Part::DoraScale),
    (".dora_scale", Part::DoraScale),
    (".alpha", Part::Alpha),
    (".hada_w1_a", Part::HadaW1A),
    (".hada_w1_b", Part::HadaW1B),
    (".hada_w2_a", Part::HadaW2A),
    (".hada_w2_b", Part::HadaW2B),
    (".hada_t1", Part::HadaT1),
    (".hada_t2", Part::HadaT2),
    (".lokr_w1_a", Part::LokrW1A),
    (".lokr_w1_b", Part::LokrW1B),
    (".lokr_w1", Part::LokrW1),
    (".lokr_w2_a", Part::LokrW2A),
    (".lokr_w2_b", Part::LokrW2B),
    (".lokr_w2", Part::LokrW2),
    (".lokr_t2", Part::LokrT2),
    (".diff_b", Part::DiffB),
    (".diff", Part::Diff),
    (".on_input", Part::Ia3OnInput),
    (".a1.weight", Part::GloraA1),
    (".a2.weight", Part::GloraA2),
    (".b1.weight", Part::GloraB1),
    (".b2.weight", Part::GloraB2),
    // (IA)³'s scale: only an adapter part beside an `on_input` (checked by the caller).
    (".weight", Part::Ia3Weight),
];

/// Suffixes of adapter kinds ldmkit names but does not apply.
const UNSUPPORTED: &[(&str, &str)] = &[
    (".oft_blocks", "OFT"),
    (".oft_diag", "OFT"),
    (".oft_R", "BOFT"),
    (".rescale", "OFT"),
    (".lora_A2.weight", "LoRA-FA"),
    (".hada_w1_a2", "LoHa variant"),
    (".bm.weight", "GLoRA with a Tucker core"),
    (".lora_embedding_A", "PEFT embedding LoRA"),
    (".lora_embedding_B", "PEFT embedding LoRA"),
];

/// Which network of the base an adapter module sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Unet,
    /// SD 1.x/2.x's text encoder (`lora_te_`).
    TextEncoder,
    /// SDXL's CLIP ViT-L (`lora_te1_`).
    TextEncoder1,
    /// SDXL's OpenCLIP bigG (`lora_te2_`).
    TextEncoder2,
}

impl Network {
    /// kohya's prefix for the network's modules.
    pub fn prefix(self) -> &'static str {
        match self {
            Network::Unet => "lora_unet_",
            Network::TextEncoder => "lora_te_",
            Network::TextEncoder1 => "lora_te1_",
            Network::TextEncoder2 => "lora_te2_",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Network::Unet => "UNet",
            Network::TextEncoder => "text encoder",
            Network::TextEncoder1 => "text encoder 1 (CLIP-L)",
            Network::TextEncoder2 => "text encoder 2 (OpenCLIP bigG)",
        }
    }
}

/// A key read as an adapter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `network`'s module `path` (flat: `down_blocks_0_…_to_q`), tensor `part`.
    Part {
        network: Network,
        path: String,
        part: Part,
    },
    /// A tensor of an adapter kind ldmkit recognises but does not apply.
    Unsupported { module: String, kind: &'static str },
    /// Not an adapter tensor.
    Other,
}

/// Read one tensor name.
pub fn parse(key: &str) -> Parsed {
    // A raw PEFT save keeps the wrapper's prefixes.
    let key = key.strip_prefix("base_model.model.").unwrap_or(key);
    for (suffix, kind) in UNSUPPORTED {
        if let Some(module) = key.strip_suffix(suffix) {
            if network_of(module).is_some() {
                return Parsed::Unsupported {
                    module: module.to_string(),
                    kind,
                };
            }
        }
    }
    for &(suffix, part) in SUFFIXES {
        let Some(module) = key.strip_suffix(suffix) else {
            continue;
        };
        // The first spelling that ends the key decides: a name that does not read after it
        // is not an adapter key (never a shorter suffix of the same key).
        return match network_of(module) {
            Some((network, path)) => Parsed::Part {
                network,
                path,
                part,
            },
            None => Parsed::Other,
        };
    }
    Parsed::Other
}

/// The network and flat module path of a module name in any spelling.
fn network_of(module: &str) -> Option<(Network, String)> {
    const KOHYA: &[(&str, Network)] = &[
        ("lora_unet_", Network::Unet),
        ("lora_te1_", Network::TextEncoder1),
        ("lora_te2_", Network::TextEncoder2),
        ("lora_te_", Network::TextEncoder),
        // LyCORIS' own wrapper names UNet modules under its prefix.
        ("lycoris_", Network::Unet),
    ];
    for (prefix, network) in KOHYA {
        if let Some(rest) = module.strip_prefix(prefix) {
            // kohya's names never hold dots; a dotted rest is a PEFT path under a kohya
            // prefix (some converters write those).
            return valid(rest).then(|| (*network, flatten(rest)));
        }
    }
    const DOTTED: &[(&str, Network)] = &[
        ("unet.", Network::Unet),
        ("text_encoder_2.", Network::TextEncoder2),
        ("text_encoder.", Network::TextEncoder),
    ];
    for (prefix, network) in DOTTED {
        if let Some(rest) = module.strip_prefix(prefix) {
            return valid(rest).then(|| (*network, flatten(rest)));
        }
    }
    None
}

fn valid(rest: &str) -> bool {
    rest.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && rest.len() <= 512
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// A module path in kohya's flat form. diffusers' older attention-processor spelling
/// (`attn1.processor.to_q_lora.down`, `to_out_lora.down`) names the projection it wraps;
/// its `to_out` is the output linear, `to_out.0`.
fn flatten(path: &str) -> String {
    let processor = path.contains(".processor.");
    let mut path = path.replace(".processor.", ".");
    if processor && path.ends_with(".to_out") {
        path.push_str(".0");
    }
    path.replace('.', "_")
}

/// kohya's flat name of a model module (`down_blocks.0.attentions.0.proj_in` →
/// `down_blocks_0_attentions_0_proj_in`).
pub fn flat(module_path: &str) -> String {
    module_path.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &str) -> (Network, String, Part) {
        match parse(key) {
            Parsed::Part {
                network,
                path,
                part,
            } => (network, path, part),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn every_spelling_names_one_module() {
        let want = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
        for key in [
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "base_model.model.unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_linear_layer.down.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight",
        ] {
            assert_eq!(part(key), (Network::Unet, want.to_string(), Part::Down), "{key}");
        }
        let (_, path, _) =
            part("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight");
        assert_eq!(
            path,
            "mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0"
        );
        assert_eq!(
            part("text_encoder_2.text_model.encoder.layers.3.mlp.fc1.lora_B.weight").0,
            Network::TextEncoder2
        );
        assert_eq!(
            part("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"),
            (
                Network::TextEncoder1,
                "text_model_encoder_layers_0_self_attn_q_proj".into(),
                Part::Alpha
            )
        );
        assert_eq!(part("lora_unet_x.lokr_w1_a").2, Part::LokrW1A);
        assert_eq!(part("lora_unet_x.lokr_w1").2, Part::LokrW1);
        assert_eq!(part("lora_unet_x.diff_b").2, Part::DiffB);
    }

    #[test]
    fn checkpoints_and_odd_names_are_not_adapters() {
        for key in [
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            "lora_unet_.lora_down.weight",
            "lora_unet_a b.lora_down.weight",
            "transformer.single_blocks.0.lora_A.weight",
        ] {
            assert_eq!(parse(key), Parsed::Other, "{key}");
        }
        // A diffusers checkpoint's weights read as (IA)³ scales; only an `on_input` beside
        // one makes a module (the recogniser's rule).
        assert_eq!(part("unet.conv_in.weight").2, Part::Ia3Weight);
        assert!(matches!(
            parse("lora_unet_x.oft_blocks"),
            Parsed::Unsupported { kind: "OFT", .. }
        ));
    }
}
