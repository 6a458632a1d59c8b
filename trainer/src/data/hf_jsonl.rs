//! Hugging Face's `imagefolder` layout: images beside a `metadata.jsonl` whose lines name a
//! `file_name` and carry the caption in a column (`text` by convention; `caption` and
//! `prompt` are common too, or name one with `--caption-column`).

use super::{key_of, ImageBytes, Listing};
use serde_json::Value;
use std::path::Path;

const CAPTION_COLUMNS: &[&str] = &["text", "caption", "prompt"];

pub fn list(root: &Path, column: Option<&str>, into: &mut Listing) -> Result<(), String> {
    let meta = root.join("metadata.jsonl");
    let text = std::fs::read_to_string(&meta).map_err(|e| format!("metadata.jsonl: {e}"))?;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", meta.display(), n + 1);
        let row: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                into.skipped.push((at, format!("not JSON: {e}")));
                continue;
            }
        };
        let Some(name) = row["file_name"].as_str() else {
            into.skipped.push((at, "no \"file_name\"".into()));
            continue;
        };
        let file = root.join(name);
        if name.contains("..") || !file.starts_with(root) {
            into.skipped
                .push((at, format!("file_name {name:?} leaves the folder")));
            continue;
        }
        let caption = match column {
            Some(c) => row[c].as_str(),
            None => CAPTION_COLUMNS.iter().find_map(|c| row[*c].as_str()),
        };
        let (key, label) = (key_of(root, &file), file.display().to_string());
        into.push(key, label, ImageBytes::File(file), caption);
    }
    Ok(())
}
