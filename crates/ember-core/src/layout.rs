//! Where a layer's channels are. Taps turn every layout into `[N, K, h, w]`, so methods, the
//! pipeline and every map see one layout; only the tap knows another.

use std::fmt;

use burn::tensor::Tensor;

use crate::vocabulary::{Vocabulary, write_name};

/// How an activation is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[N, C, H, W]`: PyTorch, ONNX's own convolutions, Burn.
    ChannelsFirst,
    /// `[N, H, W, C]`: Keras/TensorFlow exports (tf2onnx), Swin and ConvNeXt stages.
    ChannelsLast,
    /// `[N, T, C]`: transformer tokens, the last `height × width` of which form the patch grid
    /// in row-major order, after `skip` leading tokens (class, distillation, register tokens).
    Tokens(TokenGrid),
}

/// The patch grid of a token layer (see [`Layout::Tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenGrid {
    /// Leading tokens that are not patches.
    pub skip: usize,
    /// Patch rows.
    pub height: usize,
    /// Patch columns.
    pub width: usize,
}

/// The most leading non-patch tokens [`TokenGrid::infer`] considers: a class token, a
/// distillation token and up to 16 registers (DINOv2 uses 4).
pub const MAX_SKIPPED_TOKENS: usize = 18;

/// The largest patch side [`TokenGrid::infer`] considers, in input pixels (ViTs use 14 to 32;
/// merged stages 64).
pub const MAX_PATCH: usize = 64;

impl TokenGrid {
    /// The grid of `tokens` tokens for an input of `height × width` pixels: the fewest leading
    /// tokens to skip (up to [`MAX_SKIPPED_TOKENS`]) such that the rest is the input cut into
    /// square patches of one size (up to [`MAX_PATCH`] pixels) that divides both sides. `None`
    /// when nothing fits.
    pub fn infer(tokens: usize, [height, width]: [usize; 2]) -> Option<TokenGrid> {
        (0..=MAX_SKIPPED_TOKENS.min(tokens)).find_map(|skip| {
            let patches = tokens - skip;
            // Leading tokens are a few next to many patches: [N, 32, 16] is 32 channels of a
            // flattened 4×4 map, not 16 patches after 16 leading tokens.
            if skip * 2 > patches {
                return None;
            }
            (1..=height.min(width).min(MAX_PATCH))
                .filter(|p| height % p == 0 && width % p == 0)
                .map(|p| (height / p, width / p))
                .find(|(h, w)| h * w == patches && patches > 1)
                .map(|(h, w)| TokenGrid {
                    skip,
                    height: h,
                    width: w,
                })
        })
    }
}

impl Layout {
    /// The rank of activations in this layout.
    pub fn rank(self) -> usize {
        match self {
            Layout::ChannelsFirst | Layout::ChannelsLast => 4,
            Layout::Tokens(_) => 3,
        }
    }

    /// `[N, K, h, w]` of an activation of shape `dims` in this layout, or `None` when it does
    /// not fit (another rank, a token count that is not the grid's).
    pub fn spatial_dims(self, dims: &[usize]) -> Option<[usize; 4]> {
        match (self, dims) {
            (Layout::ChannelsFirst, &[n, c, h, w]) => Some([n, c, h, w]),
            (Layout::ChannelsLast, &[n, h, w, c]) => Some([n, c, h, w]),
            (Layout::Tokens(grid), &[n, t, c]) => (grid.skip.checked_add(grid.height.checked_mul(grid.width)?)? == t)
                .then_some([n, c, grid.height, grid.width]),
            _ => None,
        }
    }

    /// The activation as `[N, K, h, w]`; `None` when it does not fit (see [`Layout::spatial_dims`]).
    pub(crate) fn to_spatial<const D: usize>(self, x: Tensor<D>) -> Option<Tensor<4>> {
        let dims = x.dims();
        let [n, c, h, w] = self.spatial_dims(&dims)?;
        Some(match self {
            Layout::ChannelsFirst => x.reshape([n, c, h, w]),
            Layout::ChannelsLast => x.reshape([n, h, w, c]).permute([0, 3, 1, 2]),
            Layout::Tokens(grid) => {
                let tokens: Tensor<3> = x.reshape([n, dims[1], c]);
                tokens
                    .narrow(1, grid.skip, h * w)
                    .reshape([n, h, w, c])
                    .permute([0, 3, 1, 2])
            }
        })
    }

    /// The inverse of [`Layout::to_spatial`]: `spatial` (`[M, K, h, w]`, any batch size) in this
    /// layout, the skipped tokens taken from `original` (repeated when it holds one image).
    pub(crate) fn spatial_back<const D: usize>(self, spatial: Tensor<4>, original: &Tensor<D>) -> Tensor<D> {
        let [m, c, h, w] = spatial.dims();
        let mut dims = original.dims();
        dims[0] = m;
        match self {
            Layout::ChannelsFirst => spatial.reshape(dims),
            Layout::ChannelsLast => spatial.permute([0, 2, 3, 1]).reshape(dims),
            Layout::Tokens(grid) => {
                let patches: Tensor<3> = spatial.permute([0, 2, 3, 1]).reshape([m, h * w, c]);
                if grid.skip == 0 {
                    return patches.reshape(dims);
                }
                let [n, t, _] = [original.dims()[0], original.dims()[1], c];
                let skipped: Tensor<3> = original.clone().reshape([n, t, c]).narrow(1, 0, grid.skip);
                let skipped = if n == m {
                    skipped
                } else {
                    skipped.repeat_dim(0, m / n.max(1))
                };
                Tensor::cat(vec![skipped, patches], 1).reshape(dims)
            }
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::ChannelsFirst => f.write_str("NCHW"),
            Layout::ChannelsLast => f.write_str("NHWC"),
            Layout::Tokens(grid) if grid.skip == 0 => write!(f, "tokens {}x{}", grid.height, grid.width),
            Layout::Tokens(grid) => write!(f, "tokens {}x{} after {}", grid.height, grid.width, grid.skip),
        }
    }
}

/// The two layouts of spatial activations and image inputs, by name (`--layout`,
/// `--input-layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpatialLayout {
    /// `[N, C, H, W]`.
    Nchw,
    /// `[N, H, W, C]`.
    Nhwc,
}

impl Vocabulary for SpatialLayout {
    const KIND: &'static str = "layout";
    const ALL: &'static [Self] = &[SpatialLayout::Nchw, SpatialLayout::Nhwc];

    fn name(self) -> &'static str {
        match self {
            SpatialLayout::Nchw => "nchw",
            SpatialLayout::Nhwc => "nhwc",
        }
    }

    fn description(self) -> &'static str {
        match self {
            SpatialLayout::Nchw => "channels first, [N, C, H, W] (PyTorch, ONNX convolutions)",
            SpatialLayout::Nhwc => "channels last, [N, H, W, C] (Keras/TensorFlow, Swin stages)",
        }
    }
}

impl fmt::Display for SpatialLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(*self, f)
    }
}

impl From<SpatialLayout> for Layout {
    fn from(layout: SpatialLayout) -> Self {
        match layout {
            SpatialLayout::Nchw => Layout::ChannelsFirst,
            SpatialLayout::Nhwc => Layout::ChannelsLast,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_grids_are_found_from_the_token_count_and_the_input_size() {
        let grid = |skip, height, width| Some(TokenGrid { skip, height, width });
        // ViT-B/16 at 224: a class token and 14×14 patches.
        assert_eq!(TokenGrid::infer(197, [224, 224]), grid(1, 14, 14));
        // DeiT with a distillation token; DINOv2-S/14 with four registers.
        assert_eq!(TokenGrid::infer(198, [224, 224]), grid(2, 14, 14));
        assert_eq!(TokenGrid::infer(261, [224, 224]), grid(5, 16, 16));
        // No leading token, a rectangular input.
        assert_eq!(TokenGrid::infer(12 * 20, [192, 320]), grid(0, 12, 20));
        // Nothing fits; leading tokens are never more than half the patches.
        assert_eq!(TokenGrid::infer(7, [224, 224]), None);
        assert_eq!(TokenGrid::infer(32, [64, 64]), None);
    }

    #[test]
    fn every_layout_goes_to_nchw_and_back() {
        let device = burn::tensor::Device::flex();
        let values: Vec<f32> = (0..2 * 5 * 3).map(|v| v as f32).collect();
        let tokens = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([2, 5, 3]);
        let layout = Layout::Tokens(TokenGrid {
            skip: 1,
            height: 2,
            width: 2,
        });
        let spatial = layout.to_spatial(tokens.clone()).unwrap();
        assert_eq!(spatial.dims(), [2, 3, 2, 2]);
        // Channel 2 of the patch in row 1, column 0 of image 1: token 1 + 2 = 3.
        let value: f32 = spatial.clone().slice([1..2, 2..3, 1..2, 0..1]).into_scalar();
        assert_eq!(value, (5 * 3 + 3 * 3 + 2) as f32);
        let back = layout.spatial_back(spatial, &tokens);
        assert_eq!(back.to_data(), tokens.to_data());

        let nhwc = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([1, 2, 5, 3]);
        let spatial = Layout::ChannelsLast.to_spatial(nhwc.clone()).unwrap();
        assert_eq!(spatial.dims(), [1, 3, 2, 5]);
        assert_eq!(
            Layout::ChannelsLast.spatial_back(spatial, &nhwc).to_data(),
            nhwc.to_data()
        );
        assert!(Layout::ChannelsLast.to_spatial(tokens).is_none());
    }
}
