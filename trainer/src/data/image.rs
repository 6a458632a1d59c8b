//! One image to the VAE's input: decode (bounded memory; EXIF orientation applied), RGB,
//! resize to cover the target size and centre-crop, optionally mirror, scale to [-1, 1],
//! channels first.
//!
//! Resizing uses a triangle (bilinear) filter with the support widened when shrinking, which
//! is what torchvision's `Resize` (antialiased bilinear, diffusers' training scripts) does.
//! Images more elongated than 1:[`MAX_ASPECT`] are refused: no crop of them is a picture.

use super::buckets::Size;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Pixels an image may decode to (a 16k × 16k photo is allowed; a decompression bomb is not).
const MAX_PIXELS: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// The most elongated image accepted (a panorama at 1:8 is fine; a 1-pixel strip is not).
pub const MAX_ASPECT: u32 = 16;

/// Decode bytes to RGB, applying EXIF orientation.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_PIXELS);
    limits.max_image_height = Some(MAX_PIXELS);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    let (w, h) = (image.width().max(1), image.height().max(1));
    if w.max(h) / w.min(h) > MAX_ASPECT {
        return Err(format!("{w}x{h} is more elongated than 1:{MAX_ASPECT}"));
    }
    Ok(image.to_rgb8())
}

/// Crop the centre to `size`'s aspect ratio, then resize to `size` (the same pixels as
/// resizing to cover and cropping, without ever holding the enlarged image: a 1×16384 strip
/// would otherwise become gigabytes).
pub fn fit(image: &RgbImage, size: Size) -> RgbImage {
    let (w, h) = image.dimensions();
    if (w, h) == (size.width, size.height) {
        return image.clone();
    }
    let scale = (size.width as f64 / w as f64).max(size.height as f64 / h as f64);
    let cw = ((size.width as f64 / scale).round() as u32).clamp(1, w);
    let ch = ((size.height as f64 / scale).round() as u32).clamp(1, h);
    let cropped = image::imageops::crop_imm(image, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    image::imageops::resize(&cropped, size.width, size.height, FilterType::Triangle)
}

/// `[3, H, W]` floats in [-1, 1], row-major, optionally mirrored left to right.
pub fn to_chw(image: &RgbImage, mirror: bool) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let plane = w * h;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, p) in image.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        let x = if mirror { w - 1 - x } else { x };
        let at = y * w + x;
        for c in 0..3 {
            out[c * plane + at] = p[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_covers_and_crops_the_centre() {
        let mut img = RgbImage::new(200, 100);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if (50..150).contains(&x) { 255 } else { 0 }, 0, 0]);
        }
        let out = fit(
            &img,
            Size {
                width: 64,
                height: 64,
            },
        );
        assert_eq!(out.dimensions(), (64, 64));
        // The centre 100 columns (all red) fill the crop.
        assert!(out.pixels().all(|p| p[0] > 200), "centre crop");
        let chw = to_chw(&out, false);
        assert_eq!(chw.len(), 3 * 64 * 64);
        assert!(chw[..64 * 64].iter().all(|&v| v > 0.5));
        assert!(chw[64 * 64..].iter().all(|&v| v == -1.0));
    }

    #[test]
    fn mirror_reverses_rows() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
        assert_eq!(to_chw(&img, false)[..2], [1.0, -1.0]);
        assert_eq!(to_chw(&img, true)[..2], [-1.0, 1.0]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"\x89PNG\r\n\x1a\nnot really").is_err());
        assert!(decode(b"").is_err());
    }
}
