//! kohya's image folder: `name.png` beside `name.txt` (or `name.caption`), in any subfolder
//! (kohya's `10_subject` repeat folders included; repeats are a training-time matter).

use super::{is_image, key_of, read_caption, walk, ImageBytes, Item, Listing};
use std::path::Path;

pub fn list(root: &Path, into: &mut Listing) -> Result<(), String> {
    for file in walk(root)? {
        if !is_image(&file) {
            continue;
        }
        let caption = ["txt", "caption"]
            .iter()
            .map(|ext| file.with_extension(ext))
            .find(|p| p.is_file());
        let caption = match caption {
            Some(p) => match read_caption(&p) {
                Ok(c) => c,
                Err(e) => {
                    into.skipped.push((file.display().to_string(), e));
                    continue;
                }
            },
            None => {
                into.uncaptioned += 1;
                String::new()
            }
        };
        into.items.push(Item {
            key: key_of(root, &file),
            label: file.display().to_string(),
            image: ImageBytes::File(file),
            caption,
        });
    }
    Ok(())
}
