//! Aspect-ratio buckets (NovelAI's scheme, as kohya's scripts build them): sides multiples
//! of 64, area at most resolution², every image to the bucket nearest its aspect ratio.

/// A training size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

const STEP: u32 = 64;

/// kohya's `make_bucket_resolutions(max_reso, min_size=256, max_size=1024, divisible=64)`,
/// with the size range scaled to the resolution: the square bucket, then every width from
/// `resolution / 2` to `2 × resolution` in steps of 64 with the largest height that keeps
/// the area within resolution² (and the transposed bucket).
pub fn buckets(resolution: u32) -> Vec<Size> {
    let area = resolution as u64 * resolution as u64;
    let side = (resolution / STEP * STEP).max(STEP);
    let (min, max) = ((resolution / 2 / STEP * STEP).max(STEP), resolution * 2);
    let mut out = vec![Size {
        width: side,
        height: side,
    }];
    let mut width = min;
    while width <= max {
        let height = ((area / width as u64) as u32).min(max) / STEP * STEP;
        if height >= min {
            out.push(Size { width, height });
            out.push(Size {
                width: height,
                height: width,
            });
        }
        width += STEP;
    }
    out.sort();
    out.dedup();
    out
}

/// The bucket whose aspect ratio is nearest the image's (ties to the larger area).
pub fn nearest(buckets: &[Size], width: u32, height: u32) -> Size {
    let ratio = (width as f64 / height.max(1) as f64).ln();
    *buckets
        .iter()
        .min_by(|a, b| {
            let da = ((a.width as f64 / a.height as f64).ln() - ratio).abs();
            let db = ((b.width as f64 / b.height as f64).ln() - ratio).abs();
            da.total_cmp(&db)
                .then((b.width * b.height).cmp(&(a.width * a.height)))
        })
        .expect("at least one bucket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_for_512_are_multiples_of_64_within_the_area() {
        let b = buckets(512);
        assert!(b.contains(&Size {
            width: 512,
            height: 512
        }));
        assert!(b.contains(&Size {
            width: 768,
            height: 320
        }));
        for s in &b {
            assert_eq!(s.width % 64, 0);
            assert_eq!(s.height % 64, 0);
            assert!(s.width as u64 * s.height as u64 <= 512 * 512, "{s:?}");
        }
        assert_eq!(
            nearest(&b, 1000, 1000),
            Size {
                width: 512,
                height: 512
            }
        );
        let wide = nearest(&b, 1920, 1080);
        assert!(wide.width > wide.height, "{wide:?}");
        let tall = nearest(&b, 1080, 1920);
        assert_eq!((tall.width, tall.height), (wide.height, wide.width));
    }
}
