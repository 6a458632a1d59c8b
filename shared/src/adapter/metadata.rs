//! Training metadata read as what it is: kohya's `ss_*` settings (sd-scripts
//! `train_network.py` writes them, every value a string, JSON inside some), the tags of
//! `ss_tag_frequency` ranked (the likely trigger words first), Stability's `modelspec.*`,
//! and what the file claims against what it holds.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The settings table: label and kohya key, in the order people read them.
const SETTINGS: &[(&str, &str)] = &[
    ("base model", "ss_sd_model_name"),
    ("base version", "ss_base_model_version"),
    ("network", "ss_network_module"),
    ("dim (rank)", "ss_network_dim"),
    ("alpha", "ss_network_alpha"),
    ("network args", "ss_network_args"),
    ("resolution", "ss_resolution"),
    ("buckets", "ss_enable_bucket"),
    ("epochs", "ss_num_epochs"),
    ("epoch", "ss_epoch"),
    ("steps", "ss_steps"),
    ("max steps", "ss_max_train_steps"),
    ("training images", "ss_num_train_images"),
    ("regularisation images", "ss_num_reg_images"),
    ("batch size", "ss_total_batch_size"),
    ("batch per device", "ss_batch_size_per_device"),
    ("gradient accumulation", "ss_gradient_accumulation_steps"),
    ("learning rate", "ss_learning_rate"),
    ("UNet learning rate", "ss_unet_lr"),
    ("text encoder learning rate", "ss_text_encoder_lr"),
    ("optimizer", "ss_optimizer"),
    ("scheduler", "ss_lr_scheduler"),
    ("warmup steps", "ss_lr_warmup_steps"),
    ("noise offset", "ss_noise_offset"),
    ("min SNR gamma", "ss_min_snr_gamma"),
    ("clip skip", "ss_clip_skip"),
    ("mixed precision", "ss_mixed_precision"),
    ("seed", "ss_seed"),
    ("started", "ss_training_started_at"),
    ("finished", "ss_training_finished_at"),
    ("output name", "ss_output_name"),
    ("comment", "ss_training_comment"),
];

/// One dataset folder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dataset {
    pub folder: String,
    pub images: Option<u64>,
    pub repeats: Option<u64>,
}

/// The metadata, read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainingInfo {
    /// `(label, key, value)` for every known setting the file has, in table order.
    pub settings: Vec<(String, String, String)>,
    /// Other `ss_*` keys (not tag frequencies and datasets, which are read below).
    pub other: Vec<(String, String)>,
    pub datasets: Vec<Dataset>,
    /// Tags over all datasets, most frequent first (ties by name).
    pub tags: Vec<(String, u64)>,
    /// Captioned images the tag counts come from, when the file says.
    pub tagged_images: Option<u64>,
    /// `modelspec.*` fields without the prefix.
    pub modelspec: Vec<(String, String)>,
    /// The trigger phrase the file names (`modelspec.trigger_phrase`, `ss_trigger_words`).
    pub trigger: Option<String>,
    /// Metadata values that are not what their key promises: `(key, why)`.
    pub unreadable: Vec<(String, String)>,
}

impl TrainingInfo {
    /// Read a safetensors file's metadata (empty for files without any).
    pub fn read(metadata: &BTreeMap<String, String>) -> TrainingInfo {
        let mut info = TrainingInfo::default();
        for (label, key) in SETTINGS {
            if let Some(v) = metadata.get(*key) {
                let v = match *key {
                    "ss_training_started_at" | "ss_training_finished_at" => unix_time(v),
                    _ => v.clone(),
                };
                info.settings.push((label.to_string(), key.to_string(), v));
            }
        }
        let special = [
            "ss_tag_frequency",
            "ss_dataset_dirs",
            "ss_datasets",
            "ss_reg_dataset_dirs",
        ];
        for (k, v) in metadata {
            if k.starts_with("ss_")
                && !special.contains(&k.as_str())
                && !SETTINGS.iter().any(|(_, key)| key == k)
            {
                info.other.push((k.clone(), v.clone()));
            }
            if let Some(field) = k.strip_prefix("modelspec.") {
                info.modelspec.push((field.to_string(), v.clone()));
            }
        }
        let mut tags: HashMap<String, u64> = HashMap::new();
        if let Some(v) = metadata.get("ss_tag_frequency") {
            match serde_json::from_str::<serde_json::Value>(v) {
                Ok(serde_json::Value::Object(sets)) => {
                    for (_, set) in sets {
                        add_tags(&set, &mut tags);
                    }
                }
                _ => info
                    .unreadable
                    .push(("ss_tag_frequency".into(), "not a JSON object".into())),
            }
        }
        if let Some(v) = metadata.get("ss_dataset_dirs") {
            match serde_json::from_str::<serde_json::Value>(v) {
                Ok(serde_json::Value::Object(dirs)) => {
                    for (folder, d) in dirs {
                        info.datasets.push(Dataset {
                            folder,
                            images: d.get("img_count").and_then(as_count),
                            repeats: d.get("n_repeats").and_then(as_count),
                        });
                    }
                }
                _ => info
                    .unreadable
                    .push(("ss_dataset_dirs".into(), "not a JSON object".into())),
            }
        }
        // Newer sd-scripts: a list of datasets, each with subsets and its own tag counts.
        if let Some(v) = metadata.get("ss_datasets") {
            match serde_json::from_str::<serde_json::Value>(v) {
                Ok(serde_json::Value::Array(sets)) => {
                    for set in &sets {
                        if let Some(freq) = set.get("tag_frequency") {
                            if metadata.get("ss_tag_frequency").is_none() {
                                if let Some(obj) = freq.as_object() {
                                    obj.values().for_each(|s| add_tags(s, &mut tags));
                                }
                            }
                        }
                        let subsets = set.get("subsets").and_then(|s| s.as_array());
                        for sub in subsets.into_iter().flatten() {
                            let folder = sub
                                .get("image_dir")
                                .and_then(|d| d.as_str())
                                .unwrap_or("?")
                                .to_string();
                            if info.datasets.iter().any(|d| d.folder == folder) {
                                continue;
                            }
                            info.datasets.push(Dataset {
                                folder,
                                images: sub.get("img_count").and_then(as_count),
                                repeats: sub.get("num_repeats").and_then(as_count),
                            });
                        }
                    }
                }
                _ => info
                    .unreadable
                    .push(("ss_datasets".into(), "not a JSON list".into())),
            }
        }
        let mut tags: Vec<(String, u64)> = tags.into_iter().collect();
        tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        info.tags = tags;
        let images: u64 = info.datasets.iter().filter_map(|d| d.images).sum();
        info.tagged_images = (images > 0).then_some(images);
        info.trigger = metadata
            .get("modelspec.trigger_phrase")
            .or_else(|| metadata.get("ss_trigger_words"))
            .filter(|s| !s.trim().is_empty())
            .cloned();
        info
    }

    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
            && self.other.is_empty()
            && self.datasets.is_empty()
            && self.tags.is_empty()
            && self.modelspec.is_empty()
    }

    /// A setting's value by kohya key.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
    }
}

fn add_tags(set: &serde_json::Value, into: &mut HashMap<String, u64>) {
    let Some(obj) = set.as_object() else { return };
    for (tag, n) in obj {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        if let Some(n) = as_count(n) {
            let e = into.entry(tag.to_string()).or_default();
            *e = e.saturating_add(n);
        }
    }
}

fn as_count(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// kohya writes times as Unix seconds (`"1700000000.123"`); show them as UTC.
fn unix_time(v: &str) -> String {
    let Some(secs) = v
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
    else {
        return v.to_string();
    };
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the metadata claims against what the tensors hold: `(what, claimed, held)` for
/// each disagreement.
pub fn claims_vs_tensors(
    info: &TrainingInfo,
    typical_rank: Option<u64>,
    typical_alpha: Option<f64>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    if let (Some(claim), Some(rank)) = (info.setting("ss_network_dim"), typical_rank) {
        if claim.trim().parse::<u64>().ok() != Some(rank) {
            out.push(("dim".into(), claim.to_string(), rank.to_string()));
        }
    }
    if let (Some(claim), Some(alpha)) = (info.setting("ss_network_alpha"), typical_alpha) {
        let same = claim
            .trim()
            .parse::<f64>()
            .is_ok_and(|c| (c - alpha).abs() <= 1e-3 * alpha.abs().max(1.0));
        if !same {
            out.push((
                "alpha".into(),
                claim.to_string(),
                crate::value::python_float_repr(alpha),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kohya_metadata_reads_as_a_table_and_ranked_tags() {
        let mut m = BTreeMap::new();
        m.insert("ss_network_dim".into(), "32".into());
        m.insert("ss_network_alpha".into(), "16.0".into());
        m.insert("ss_training_started_at".into(), "1700000000.5".into());
        m.insert(
            "ss_tag_frequency".into(),
            r#"{"10_a": {"mychar": 20, " solo": 5}, "5_b": {"solo": 30, "x": "2"}}"#.into(),
        );
        m.insert(
            "ss_dataset_dirs".into(),
            r#"{"10_a": {"n_repeats": 10, "img_count": 20}}"#.into(),
        );
        m.insert("modelspec.trigger_phrase".into(), "mychar".into());
        let info = TrainingInfo::read(&m);
        assert_eq!(info.tags[0], ("solo".into(), 35));
        assert_eq!(info.tags[1], ("mychar".into(), 20));
        assert_eq!(info.tags[2], ("x".into(), 2));
        assert_eq!(
            info.setting("ss_training_started_at"),
            Some("2023-11-14 22:13:20 UTC")
        );
        assert_eq!(info.datasets[0].images, Some(20));
        assert_eq!(info.trigger.as_deref(), Some("mychar"));
        assert!(claims_vs_tensors(&info, Some(32), Some(16.0)).is_empty());
        assert_eq!(claims_vs_tensors(&info, Some(16), Some(8.0)).len(), 2);
        m.insert("ss_tag_frequency".into(), "{oops".into());
        assert_eq!(TrainingInfo::read(&m).unreadable.len(), 1);
    }
}
