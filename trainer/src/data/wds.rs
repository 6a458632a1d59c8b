//! webdataset shards: tar files whose members group by key (`000123.jpg` + `000123.txt` or
//! `000123.json`), the format LAION and the CompVis training runs read.
//!
//! Only headers are read while listing (the archive is walked with seeks); image bytes are
//! read later from their recorded offsets, and caption members (small) at listing time.

use super::{key_of, ImageBytes, Listing, CAPTION_LIMIT, IMAGE_EXTENSIONS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub fn is_shard(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "tar")
}

pub fn has_shards(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().any(|e| is_shard(&e.path())))
        .unwrap_or(false)
}

pub fn list(path: &Path, into: &mut Listing) -> Result<(), String> {
    let shards: Vec<PathBuf> = if path.is_dir() {
        super::walk(path)?
            .into_iter()
            .filter(|p| is_shard(p))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    for shard in shards {
        // Keys name the shard by its path under the --data folder (or its file name).
        let name = if path.is_dir() {
            key_of(path, &shard)
        } else {
            shard
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        if let Err(e) = list_shard(&shard, &name, into) {
            into.skipped.push((shard.display().to_string(), e));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Sample {
    image: Option<(String, u64, u64)>,
    text: Option<String>,
    json: Option<String>,
}

fn list_shard(shard: &Path, name: &str, into: &mut Listing) -> Result<(), String> {
    let file = std::fs::File::open(shard).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file);
    let mut samples: BTreeMap<String, Sample> = BTreeMap::new();
    let entries = archive.entries_with_seek().map_err(|e| e.to_string())?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(|e| e.to_string())?.into_owned();
        let file_name = member
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // webdataset: the key is the path up to the first dot of the file name.
        let Some((stem, ext)) = file_name.split_once('.') else {
            continue;
        };
        let dir = member
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = if dir.is_empty() {
            stem.to_string()
        } else {
            format!("{dir}/{stem}")
        };
        let ext = ext.to_ascii_lowercase();
        let sample = samples.entry(key).or_default();
        let size = entry.size();
        // The whole extension decides (`000.mask.png` is not the sample's image).
        if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            sample.image = Some((file_name.clone(), entry.raw_file_position(), size));
        } else if ext == "txt" || ext == "json" {
            if size > CAPTION_LIMIT {
                continue;
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{file_name}: {e}"))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if ext == "txt" {
                sample.text = Some(text);
            } else {
                sample.json = Some(text);
            }
        }
    }
    for (key, s) in samples {
        let label = format!("{}:{key}", shard.display());
        let Some((member, offset, size)) = s.image else {
            into.skipped.push((label, "no image member".into()));
            continue;
        };
        let caption = s.text.or_else(|| {
            let v: Value = serde_json::from_str(s.json.as_deref()?).ok()?;
            ["caption", "text", "prompt"]
                .iter()
                .find_map(|c| v[*c].as_str().map(String::from))
        });
        into.push(
            format!("{name}/{key}"),
            format!("{}:{member}", shard.display()),
            ImageBytes::Member(shard.to_path_buf(), offset, size),
            caption.as_deref(),
        );
    }
    Ok(())
}
