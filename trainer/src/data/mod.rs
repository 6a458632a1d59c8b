//! Training data as users keep it, listed up front (so progress has a total and a re-run can
//! skip what is done) and read one image at a time.
//!
//! Three layouts, told apart by what a `--data` path holds:
//! - a `metadata.jsonl` folder (Hugging Face `imagefolder`): [`hf_jsonl`];
//! - webdataset `.tar` shards, or a folder of them: [`wds`];
//! - any other folder: images with same-stem `.txt` captions (kohya): [`kohya`].

pub mod buckets;
pub mod hf_jsonl;
pub mod image;
pub mod kohya;
pub mod wds;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Image extensions every layout accepts.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Where an image's bytes are.
#[derive(Clone, Debug)]
pub enum ImageBytes {
    File(PathBuf),
    /// A member of a tar archive: `(archive, data offset, size)`.
    Member(PathBuf, u64, u64),
}

impl ImageBytes {
    /// The bytes, refusing anything larger than `limit` (a hostile or mistaken input must
    /// not take all memory).
    pub fn read(&self, limit: u64) -> Result<Vec<u8>, String> {
        let (path, offset, size) = match self {
            ImageBytes::File(p) => {
                let size = std::fs::metadata(p).map_err(|e| e.to_string())?.len();
                (p, 0, size)
            }
            ImageBytes::Member(p, offset, size) => (p, *offset, *size),
        };
        if size > limit {
            return Err(format!(
                "{size} bytes is more than the {limit}-byte limit for an image"
            ));
        }
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(size as usize);
        f.take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if (bytes.len() as u64) < size {
            return Err("file ends early".into());
        }
        Ok(bytes)
    }
}

/// One training image and its caption.
#[derive(Clone, Debug)]
pub struct Item {
    /// Unique within the dataset and stable across runs (what resuming skips by).
    pub key: String,
    /// What to call it in messages: a path, or `archive.tar:member`.
    pub label: String,
    pub image: ImageBytes,
    pub caption: String,
}

/// A listed dataset, with what could not be listed.
#[derive(Default)]
pub struct Listing {
    pub items: Vec<Item>,
    /// `(what, why)` for entries that cannot become items (a bad metadata line, a tar
    /// member without an image, an unreadable archive).
    pub skipped: Vec<(String, String)>,
    /// Images without a caption file (they train with the empty caption).
    pub uncaptioned: usize,
    /// Each `--data` path and the layout it was read as.
    pub sources: Vec<(PathBuf, &'static str)>,
}

impl Listing {
    /// Add an image with its caption, if it has one (one without trains on the empty
    /// caption and is counted).
    pub fn push(&mut self, key: String, label: String, image: ImageBytes, caption: Option<&str>) {
        let caption = caption.map(|c| c.trim().to_string()).unwrap_or_else(|| {
            self.uncaptioned += 1;
            String::new()
        });
        self.items.push(Item {
            key,
            label,
            image,
            caption,
        });
    }
}

/// List every `--data` path. Errors (one line, naming the path) only for paths that are
/// not datasets at all.
pub fn list(paths: &[PathBuf], caption_column: Option<&str>) -> Result<Listing, String> {
    let mut all = Listing::default();
    for path in paths {
        let show = |e: String| format!("{}: {e}", path.display());
        let kind = if path.is_dir() && path.join("metadata.jsonl").is_file() {
            hf_jsonl::list(path, caption_column, &mut all).map_err(show)?;
            "metadata.jsonl"
        } else if wds::is_shard(path) || (path.is_dir() && wds::has_shards(path)) {
            wds::list(path, &mut all).map_err(show)?;
            "webdataset"
        } else if path.is_dir() {
            kohya::list(path, &mut all).map_err(show)?;
            "image folder"
        } else if !path.exists() {
            return Err(show("no such file or folder".into()));
        } else {
            return Err(show(
                "not a dataset: give a folder of images, a metadata.jsonl folder or .tar shards"
                    .into(),
            ));
        };
        all.sources.push((path.clone(), kind));
    }
    // A key listed twice (a metadata.jsonl row repeated, a dataset given twice) is encoded
    // once; the repeats are reported.
    let mut seen = std::collections::HashSet::new();
    let items = std::mem::take(&mut all.items);
    for item in items {
        if seen.insert(item.key.clone()) {
            all.items.push(item);
        } else {
            all.skipped
                .push((item.label, "listed twice; encoded once".into()));
        }
    }
    Ok(all)
}

/// A key for `file` relative to the dataset root, prefixed by the root's own name so two
/// datasets rarely collide.
pub fn key_of(root: &Path, file: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rel = file.strip_prefix(root).unwrap_or(file);
    format!("{name}/{}", rel.to_string_lossy().replace('\\', "/"))
}

const MAX_DEPTH: usize = 32;

fn depth(path: &Path, root: &Path) -> usize {
    path.strip_prefix(root)
        .map_or(0, |r| r.components().count())
}

/// Caption files larger than this are not captions.
pub const CAPTION_LIMIT: u64 = 1 << 20;

/// A caption file's text (lossy UTF-8, trimmed), refusing files over [`CAPTION_LIMIT`].
pub fn read_caption(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > CAPTION_LIMIT {
        return Err(format!(
            "{}: {size} bytes is too large for a caption",
            path.display()
        ));
    }
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Files under `root`, recursively, sorted (stable order across runs and machines).
pub fn walk(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Follows symbolic links (datasets are often assembled from links); a link
            // cycle ends at the depth limit.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() && depth(&path, root) < MAX_DEPTH => stack.push(path),
                Ok(m) if m.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}
