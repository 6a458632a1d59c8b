//! kohya's image folder: `name.png` beside `name.txt` (or `name.caption`), in any subfolder
//! (kohya's `10_subject` repeat folders included; repeats are a training-time matter).

use super::{is_image, key_of, read_caption, walk, ImageBytes, Listing};
use std::path::Path;

pub fn list(root: &Path, into: &mut Listing) -> Result<(), String> {
    for file in walk(root)? {
        if !is_image(&file) {
            continue;
        }
        let caption_file = ["txt", "caption"]
            .iter()
            .map(|ext| file.with_extension(ext))
            .find(|p| p.is_file());
        let caption = match caption_file.map(|p| read_caption(&p)).transpose() {
            Ok(c) => c,
            Err(e) => {
                into.skipped.push((file.display().to_string(), e));
                continue;
            }
        };
        let (key, label) = (key_of(root, &file), file.display().to_string());
        into.push(key, label, ImageBytes::File(file), caption.as_deref());
    }
    Ok(())
}
