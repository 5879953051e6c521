//! The pointing game: is the map's peak on the object?
//!
//! Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016: a hit when the
//! map's maximum lies on an annotated object, with a tolerance (the peak may fall up to
//! `tolerance` pixels outside a box; TorchRay uses 15 at 224×224).

use crate::error::{CamError, Result};

/// The pointing game's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointingGame {
    /// How far outside a box the peak may lie, in pixels.
    pub tolerance: f32,
}

impl Default for PointingGame {
    fn default() -> Self {
        Self { tolerance: 15.0 }
    }
}

/// Per image, `1` when the peak of its map (`maps`: `[H][W]` row-major values of `height ×
/// width` each) lies in one of its boxes `[x0, y0, x1, y1]` (input pixels, end exclusive) grown by
/// `game.tolerance`, else `0`. The peak is the first maximum in row-major order, at the pixel's
/// centre.
pub fn pointing_game(
    game: PointingGame,
    maps: &[f32],
    [height, width]: [usize; 2],
    boxes: &[Vec<[f32; 4]>],
) -> Result<Vec<f32>> {
    let pixels = height * width;
    if pixels == 0 || maps.len() != boxes.len() * pixels {
        return Err(CamError::MetricInput(format!(
            "{} boxes lists for {} maps of {height}×{width}: one list per image",
            boxes.len(),
            maps.len().checked_div(pixels).unwrap_or(0)
        )));
    }
    maps.chunks(pixels)
        .zip(boxes)
        .enumerate()
        .map(|(image, (map, boxes))| {
            if boxes.is_empty() {
                return Err(CamError::MetricInput(format!("image {image} has no box to point at")));
            }
            let peak = map
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0;
            let (x, y) = ((peak % width) as f32 + 0.5, (peak / width) as f32 + 0.5);
            let t = game.tolerance;
            let hit = boxes
                .iter()
                .any(|&[x0, y0, x1, y1]| x >= x0 - t && x < x1 + t && y >= y0 - t && y < y1 + t);
            Ok(if hit { 1.0 } else { 0.0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_inside_or_near_a_box_is_a_hit() {
        // 4×4 maps; the first peaks at (x 3, y 0), the second at (x 0, y 3).
        let mut maps = vec![0.0f32; 32];
        maps[3] = 1.0;
        maps[16 + 12] = 1.0;
        let boxes = vec![vec![[2.0, 0.0, 4.0, 2.0]], vec![[2.0, 0.0, 4.0, 2.0]]];
        let exact = PointingGame { tolerance: 0.0 };
        assert_eq!(pointing_game(exact, &maps, [4, 4], &boxes).unwrap(), [1.0, 0.0]);
        let loose = PointingGame { tolerance: 2.0 };
        assert_eq!(pointing_game(loose, &maps, [4, 4], &boxes).unwrap(), [1.0, 1.0]);
        assert!(pointing_game(exact, &maps, [4, 4], &boxes[..1]).is_err());
    }
}
