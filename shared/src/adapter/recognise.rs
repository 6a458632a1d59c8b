//! Grouping a file's tensors into adapter modules, checking each module's shapes against its
//! kind, and telling which base the adapter is for.
//!
//! A module counts when it holds a part that only adapters have (a LoRA half, a LoHa or LoKr
//! factor, a `diff`, an (IA)³ `on_input`, a GLoRA factor): a checkpoint's `….weight` keys
//! never make a file an adapter. Shapes are checked as each library's definition needs them
//! (LyCORIS `functional/*.py`, kohya `networks/lora.py`), so a half that does not fit its
//! rank is refused here, naming the module, instead of failing in the middle of a bake.

use super::keys::{self, Network, Parsed, Part};
use super::{Adapter, Base, Module, ModuleKind, Spelling};
use crate::error::{Error, Result};
use crate::ops::Working;
use crate::plan::LazyTensor;
use std::collections::BTreeMap;

/// Ranks beyond this are not adapters (a rank is at most a layer's width; SDXL's widest is
/// 10240).
const MAX_RANK: u64 = 1 << 16;

fn bad(module: &str, why: impl std::fmt::Display) -> Error {
    Error::op(format!("adapter module '{module}': {why}"))
}

/// Recognise the adapter in `work`'s tensors, stored in `sources`. `Ok(None)`: not an
/// adapter. `metadata` is the file's safetensors metadata (PEFT files record alpha there).
pub fn recognise_working(
    work: &Working,
    metadata: &BTreeMap<String, String>,
    sources: &[crate::source::SharedSource],
) -> Result<Option<Adapter>> {
    let tensors: Vec<(String, LazyTensor)> = work
        .state_dict
        .iter()
        .map(|(k, e)| (k.clone(), e.tensor.clone()))
        .collect();
    recognise_in(&tensors, metadata, sources)
}

/// [`recognise`] reading alphas from `sources` (the inputs the tensors are stored in).
pub fn recognise_in(
    tensors: &[(String, LazyTensor)],
    metadata: &BTreeMap<String, String>,
    sources: &[crate::source::SharedSource],
) -> Result<Option<Adapter>> {
    let mut reader = crate::plan::ElementReader::new(sources);
    let mut read = |t: &LazyTensor| -> Result<f64> {
        Ok(reader
            .read_values(t, 0, 1)?
            .first()
            .copied()
            .unwrap_or(f64::NAN))
    };
    recognise(tensors, metadata, &mut read)
}

/// [`recognise_working`] over named tensors.
pub fn recognise(
    tensors: &[(String, LazyTensor)],
    metadata: &BTreeMap<String, String>,
    read_scalar: &mut dyn FnMut(&LazyTensor) -> Result<f64>,
) -> Result<Option<Adapter>> {
    // Modules in first-seen order.
    let mut order: Vec<(Network, String)> = Vec::new();
    let mut parts: BTreeMap<(Network, String), BTreeMap<Part, (String, LazyTensor)>> =
        BTreeMap::new();
    let mut unsupported: Vec<(String, &'static str)> = Vec::new();
    let mut other = Vec::new();
    let mut dotted = false;
    for (name, t) in tensors {
        match keys::parse(name) {
            Parsed::Part {
                network,
                path,
                part,
            } => {
                if !name.starts_with("lora_") && !name.starts_with("lycoris_") {
                    dotted = true;
                }
                let key = (network, path);
                let entry = parts.entry(key.clone()).or_insert_with(|| {
                    order.push(key.clone());
                    BTreeMap::new()
                });
                if entry.insert(part, (name.clone(), t.clone())).is_some() {
                    return Err(bad(
                        &format!("{}{}", key.0.prefix(), key.1),
                        format!("two tensors are its {part:?} (one spelled '{name}')"),
                    ));
                }
            }
            Parsed::Unsupported { module, kind } => {
                if !unsupported.iter().any(|(m, _)| *m == module) {
                    unsupported.push((module, kind));
                }
            }
            Parsed::Other => other.push(name.clone()),
        }
    }
    let defining = |p: &BTreeMap<Part, _>| {
        p.keys().any(|k| {
            !matches!(
                k,
                Part::Alpha | Part::DoraScale | Part::Ia3Weight | Part::DiffB
            )
        }) || p.contains_key(&Part::DiffB)
    };
    let peft_alpha = PeftAlpha::from_metadata(metadata);
    let mut modules = Vec::new();
    for key in order {
        let p = parts.remove(&key).expect("every ordered key has parts");
        if !defining(&p) {
            // A checkpoint's `.weight` read as an (IA)³ scale: not an adapter tensor.
            other.extend(p.into_values().map(|(n, _)| n));
            continue;
        }
        let name = format!("{}{}", key.0.prefix(), key.1);
        let alpha = match p.get(&Part::Alpha) {
            Some((n, t)) => {
                if t.numel() != 1 {
                    return Err(bad(&name, format!("alpha '{n}' has {} values", t.numel())));
                }
                let a = read_scalar(t)?;
                if !a.is_finite() {
                    return Err(bad(&name, format!("alpha is {a}")));
                }
                Some(a)
            }
            None => peft_alpha.get(key.0),
        };
        let on_input = match p.get(&Part::Ia3OnInput) {
            Some((_, t)) if t.numel() == 1 => read_scalar(t)? != 0.0,
            Some((n, _)) => return Err(bad(&name, format!("'{n}' is not one flag"))),
            None => false,
        };
        let mut m = module(key.0, key.1, p, alpha)?;
        m.ia3_on_input = on_input;
        modules.push(m);
    }
    if modules.is_empty() {
        if unsupported.is_empty() {
            return Ok(None);
        }
        let (m, kind) = &unsupported[0];
        return Err(Error::op(format!(
            "is a {kind} adapter ('{m}'): ldmkit reads LoRA, LoCon, DoRA, LoHa, LoKr, full, (IA)³ and GLoRA modules only"
        )));
    }
    // SDXL files written by diffusers name the first text encoder `text_encoder.`.
    if modules.iter().any(|m| m.network == Network::TextEncoder2) {
        for m in &mut modules {
            if m.network == Network::TextEncoder {
                m.network = Network::TextEncoder1;
            }
        }
    }
    let (base, base_evidence) = base_of(&modules, metadata);
    Ok(Some(Adapter {
        spelling: if dotted {
            Spelling::Diffusers
        } else {
            Spelling::Kohya
        },
        modules,
        base,
        base_evidence,
        unsupported,
        other_tensors: other,
    }))
}

/// diffusers' alpha for PEFT files: `lora_adapter_metadata` in the safetensors metadata, a
/// JSON object per component (`{"unet": {"r": 4, "lora_alpha": 8}}` or flat
/// `{"unet.lora_alpha": 8}`).
#[derive(Default)]
struct PeftAlpha(BTreeMap<&'static str, f64>);

impl PeftAlpha {
    fn from_metadata(metadata: &BTreeMap<String, String>) -> Self {
        let mut out = PeftAlpha::default();
        let Some(json) = metadata
            .get("lora_adapter_metadata")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        else {
            return out;
        };
        for component in ["unet", "text_encoder", "text_encoder_2"] {
            let nested = json.get(component).and_then(|c| c.get("lora_alpha"));
            let flat = json.get(format!("{component}.lora_alpha"));
            if let Some(a) = nested.or(flat).and_then(|v| v.as_f64()) {
                out.0.insert(component, a);
            }
        }
        out
    }

    fn get(&self, network: Network) -> Option<f64> {
        let component = match network {
            Network::Unet => "unet",
            Network::TextEncoder | Network::TextEncoder1 => "text_encoder",
            Network::TextEncoder2 => "text_encoder_2",
        };
        self.0.get(component).copied()
    }
}

fn dims(t: &LazyTensor) -> &[u64] {
    &t.shape
}

fn module(
    network: Network,
    path: String,
    parts: BTreeMap<Part, (String, LazyTensor)>,
    alpha: Option<f64>,
) -> Result<Module> {
    let name = format!("{}{}", network.prefix(), path);
    let get = |p: Part| parts.get(&p).map(|(_, t)| t);
    let need =
        |p: Part| get(p).ok_or_else(|| bad(&name, format!("has no {} tensor", part_name(p))));
    let has = |p: Part| parts.contains_key(&p);
    let check_rank = |r: u64| {
        if r == 0 || r > MAX_RANK {
            Err(bad(&name, format!("rank {r}")))
        } else {
            Ok(r)
        }
    };
    let mismatch = |what: &str| bad(&name, format!("shapes do not fit: {what}"));
    let (kind, rank, weight_shape): (ModuleKind, Option<u64>, Vec<u64>) =
        if has(Part::Down) || has(Part::Up) {
            let down = need(Part::Down)?;
            let up = need(Part::Up)?;
            let (d, u) = (dims(down), dims(up));
            if !(d.len() == 2 || d.len() == 4) || u.len() != d.len() {
                return Err(mismatch(&format!("down {d:?}, up {u:?}")));
            }
            let r = check_rank(d[0])?;
            if u[1] != r || (u.len() == 4 && u[2..] != [1, 1]) {
                return Err(mismatch(&format!("down {d:?} (rank {r}), up {u:?}")));
            }
            let mut shape = vec![u[0], d[1]];
            let mut kind = ModuleKind::Lora;
            if let Some(mid) = get(Part::Mid) {
                let m = dims(mid);
                if d.len() != 4 || m.len() != 4 || m[0] != r || m[1] != r || d[2..] != [1, 1] {
                    return Err(mismatch(&format!("down {d:?}, mid {m:?}")));
                }
                shape.extend_from_slice(&m[2..]);
                kind = ModuleKind::Locon;
            } else if d.len() == 4 {
                shape.extend_from_slice(&d[2..]);
                if d[2] * d[3] > 1 {
                    kind = ModuleKind::Locon;
                }
            }
            (kind, Some(r), shape)
        } else if has(Part::HadaW1A) || has(Part::HadaW2A) {
            let (w1a, w1b) = (need(Part::HadaW1A)?, need(Part::HadaW1B)?);
            let (w2a, w2b) = (need(Part::HadaW2A)?, need(Part::HadaW2B)?);
            let (a1, b1, a2, b2) = (dims(w1a), dims(w1b), dims(w2a), dims(w2b));
            if [a1, b1, a2, b2].iter().any(|s| s.len() != 2) {
                return Err(mismatch(&format!(
                    "hada factors {a1:?} {b1:?} {a2:?} {b2:?}"
                )));
            }
            let r = check_rank(b1[0])?;
            match (get(Part::HadaT1), get(Part::HadaT2)) {
                (Some(t1), Some(t2)) => {
                    // Tucker: t [r, r, k..], w_a [r, out], w_b [r, in].
                    let (t1, t2) = (dims(t1), dims(t2));
                    let fits = t1.len() >= 3
                        && t1 == t2
                        && t1[0] == r
                        && t1[1] == r
                        && a1[0] == r
                        && a2 == a1
                        && b2 == b1;
                    if !fits {
                        return Err(mismatch(&format!("tucker {t1:?}, factors {a1:?} {b1:?}")));
                    }
                    let mut shape = vec![a1[1], b1[1]];
                    shape.extend_from_slice(&t1[2..]);
                    (ModuleKind::Loha, Some(r), shape)
                }
                (None, None) => {
                    // w_a [out, r], w_b [r, in·k·k].
                    if a1[1] != r || a2 != a1 || b2 != b1 {
                        return Err(mismatch(&format!(
                            "hada factors {a1:?} {b1:?} {a2:?} {b2:?}"
                        )));
                    }
                    (ModuleKind::Loha, Some(r), vec![a1[0], b1[1]])
                }
                _ => return Err(bad(&name, "has one Tucker core of two")),
            }
        } else if [Part::LokrW1, Part::LokrW1A, Part::LokrW2, Part::LokrW2A]
            .iter()
            .any(|&p| has(p))
        {
            lokr(&name, &parts)?
        } else if has(Part::Diff) || has(Part::DiffB) {
            let shape = get(Part::Diff).map_or_else(Vec::new, |t| t.shape.clone());
            (ModuleKind::Full, None, shape)
        } else if has(Part::Ia3OnInput) {
            let w = need(Part::Ia3Weight)?;
            if w.shape.len() != 1 && !(w.shape.len() == 2 && w.shape.contains(&1)) {
                return Err(mismatch(&format!("(IA)³ scale {:?}", w.shape)));
            }
            (ModuleKind::Ia3, None, Vec::new())
        } else {
            let (a1, a2) = (need(Part::GloraA1)?, need(Part::GloraA2)?);
            let (b1, b2) = (need(Part::GloraB1)?, need(Part::GloraB2)?);
            let (a1, a2, b1, b2) = (
                flat2(&a1.shape),
                flat2(&a2.shape),
                flat2(&b1.shape),
                flat2(&b2.shape),
            );
            // a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in(·k·k)].
            let r = check_rank(a2.0)?;
            if a1 != (a2.1, r) || b1.1 != r || b2.0 != r || a2.1 > b2.1 {
                return Err(mismatch(&format!("glora {a1:?} {a2:?} {b1:?} {b2:?}")));
            }
            (ModuleKind::Glora, Some(r), vec![b1.0, b2.1])
        };
    let dora = has(Part::DoraScale);
    if let Some(m) = get(Part::DoraScale) {
        let out = weight_shape.first().copied();
        let row_wise = match m.shape.as_slice() {
            [o] => Some(*o) == out,
            [o, rest @ ..] => Some(*o) == out && rest.iter().all(|&d| d == 1),
            [] => false,
        };
        if !row_wise {
            return Err(bad(
                &name,
                format!(
                    "dora_scale {:?} is not one magnitude per output channel (ldmkit applies DoRA as PEFT and LyCORIS' default do)",
                    m.shape
                ),
            ));
        }
    }
    let scale = match (kind, rank) {
        (ModuleKind::Lokr, _) => lokr_scale(&parts, alpha),
        (_, Some(r)) => alpha.unwrap_or(r as f64) / r as f64,
        _ => 1.0,
    };
    Ok(Module {
        network,
        path,
        kind,
        dora,
        rank,
        alpha,
        scale,
        ia3_on_input: false,
        weight_shape,
        tensors: parts,
    })
}

fn flat2(shape: &[u64]) -> (u64, u64) {
    match shape {
        [] => (0, 0),
        [a] => (*a, 1),
        [a, rest @ ..] => (*a, rest.iter().product()),
    }
}

/// LoKr: `kron(w1, w2)`, each factor whole or as `a·b`, w2 optionally with a Tucker core.
fn lokr(
    name: &str,
    parts: &BTreeMap<Part, (String, LazyTensor)>,
) -> Result<(ModuleKind, Option<u64>, Vec<u64>)> {
    let get = |p: Part| parts.get(&p).map(|(_, t)| t.shape.clone());
    let mismatch = |what: String| bad(name, format!("shapes do not fit: {what}"));
    let mut rank = None;
    let w1 = match (get(Part::LokrW1), get(Part::LokrW1A), get(Part::LokrW1B)) {
        (Some(w), None, None) if w.len() == 2 => (w[0], w[1]),
        (None, Some(a), Some(b)) if a.len() == 2 && b.len() == 2 && a[1] == b[0] => {
            rank = Some(b[0]);
            (a[0], b[1])
        }
        (w, a, b) => return Err(mismatch(format!("lokr_w1 {w:?} / {a:?} {b:?}"))),
    };
    let w2: Vec<u64> = match (
        get(Part::LokrW2),
        get(Part::LokrW2A),
        get(Part::LokrW2B),
        get(Part::LokrT2),
    ) {
        (Some(w), None, None, None) if w.len() >= 2 => w,
        (None, Some(a), Some(b), None) if a.len() == 2 && b.len() >= 2 && a[1] == b[0] => {
            rank = rank.or(Some(b[0]));
            let mut s = vec![a[0]];
            s.extend_from_slice(&b[1..]);
            s
        }
        // Tucker: t [r, r, k..], a [r, c], b [r, d].
        (None, Some(a), Some(b), Some(t))
            if a.len() == 2 && b.len() == 2 && t.len() >= 3 && t[0] == a[0] && t[1] == b[0] =>
        {
            rank = rank.or(Some(b[0]));
            let mut s = vec![a[1], b[1]];
            s.extend_from_slice(&t[2..]);
            s
        }
        (w, a, b, t) => return Err(mismatch(format!("lokr_w2 {w:?} / {a:?} {b:?} {t:?}"))),
    };
    if let Some(r) = rank {
        if r == 0 || r > MAX_RANK {
            return Err(bad(name, format!("rank {r}")));
        }
    }
    let mut shape = vec![w1.0 * w2[0], w1.1 * w2[1]];
    shape.extend_from_slice(&w2[2..]);
    Ok((ModuleKind::Lokr, rank, shape))
}

/// LoKr's scale: alpha / rank when a factor is decomposed, 1 when both are whole (LyCORIS
/// `modules/lokr.py`, ComfyUI `weight_adapter/lokr.py`).
fn lokr_scale(parts: &BTreeMap<Part, (String, LazyTensor)>, alpha: Option<f64>) -> f64 {
    let rank = parts
        .get(&Part::LokrW1B)
        .or_else(|| parts.get(&Part::LokrW2B))
        .map(|(_, t)| t.shape[0]);
    match rank {
        Some(r) => alpha.unwrap_or(r as f64) / r as f64,
        None => 1.0,
    }
}

fn part_name(p: Part) -> &'static str {
    match p {
        Part::Down => "down (lora_down / lora_A)",
        Part::Up => "up (lora_up / lora_B)",
        Part::HadaW1A => "hada_w1_a",
        Part::HadaW1B => "hada_w1_b",
        Part::HadaW2A => "hada_w2_a",
        Part::HadaW2B => "hada_w2_b",
        Part::Ia3Weight => "(IA)³ weight",
        Part::GloraA1 => "a1",
        Part::GloraA2 => "a2",
        Part::GloraB1 => "b1",
        Part::GloraB2 => "b2",
        _ => "required",
    }
}

/// The base from the networks present, the widths of cross-attention and text encoder
/// inputs, and the metadata's claim when nothing else tells.
fn base_of(modules: &[Module], metadata: &BTreeMap<String, String>) -> (Base, String) {
    if let Some(m) = modules.iter().find(|m| m.network == Network::TextEncoder2) {
        return (
            Base::Sdxl,
            format!("{} (SDXL's second text encoder)", m.name()),
        );
    }
    // Cross-attention's key/value input is the text width: 768 / 1024 / 2048.
    for m in modules {
        let cross = m.network == Network::Unet
            && (m.path.ends_with("attn2_to_k") || m.path.ends_with("attn2_to_v"));
        if let (true, Some(&width)) = (cross, m.weight_shape.get(1)) {
            let base = match width {
                768 => Base::Sd1,
                1024 => Base::Sd2,
                2048 => Base::Sdxl,
                _ => continue,
            };
            return (base, format!("{} takes {width}-wide context", m.name()));
        }
    }
    for m in modules {
        let text = matches!(m.network, Network::TextEncoder | Network::TextEncoder1)
            && m.path.ends_with("self_attn_q_proj");
        if let (true, Some(&width)) = (text, m.weight_shape.get(1)) {
            let base = match (width, m.network) {
                (768, Network::TextEncoder) => Base::Sd1,
                (768, _) => Base::Sdxl,
                (1024, _) => Base::Sd2,
                _ => continue,
            };
            return (base, format!("{} is {width} wide", m.name()));
        }
    }
    if modules.iter().any(|m| m.network == Network::TextEncoder1) {
        return (
            Base::Sdxl,
            "lora_te1_ names (SDXL's two text encoders)".into(),
        );
    }
    let claim = metadata
        .get("ss_base_model_version")
        .or_else(|| metadata.get("modelspec.architecture"));
    if let Some(c) = claim {
        let c_low = c.to_ascii_lowercase();
        let base = if c_low.contains("xl") {
            Some(Base::Sdxl)
        } else if c_low.contains("v2") || c_low.contains("sd_2") || c_low.contains("-v2") {
            Some(Base::Sd2)
        } else if c_low.contains("v1") {
            Some(Base::Sd1)
        } else {
            None
        };
        if let Some(b) = base {
            return (b, format!("the metadata says '{c}'"));
        }
    }
    let ldm_names = modules.iter().any(|m| {
        m.network == Network::Unet
            && ["input_blocks_", "middle_block_", "output_blocks_"]
                .iter()
                .any(|p| m.path.starts_with(p))
    });
    if ldm_names {
        return (
            Base::Unknown,
            "UNet modules in LDM names (kohya writes those for SDXL) without a width that tells"
                .into(),
        );
    }
    (
        Base::Sd1OrSd2,
        "diffusers UNet module names without a width that tells".into(),
    )
}
