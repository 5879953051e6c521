//! Reading tensors back to the host: the only place the pipeline's results leave the device.

use burn::tensor::{Int, Tensor};

use crate::error::{CamError, Result};
use crate::explainer::Explanation;

/// The values of any float tensor in row-major order, as `f32` (autodiff tensors included).
pub fn to_host<const D: usize>(tensor: &Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .clone()
        .inner()
        .try_into_vec_as::<f32>()
        .map_err(|e| CamError::Read(format!("{e:?}")))
}

/// Reads class indices `[N]` back to the host.
pub(crate) fn classes_to_host(classes: &Tensor<1, Int>) -> Result<Vec<usize>> {
    Ok(classes
        .clone()
        .try_into_vec_as::<i64>()
        .map_err(|e| CamError::Read(format!("{e:?}")))?
        .into_iter()
        .map(|c| usize::try_from(c).unwrap_or(usize::MAX))
        .collect())
}

/// Reads maps `[N, H, W]` back to the host, image after image in row-major order.
pub fn maps_to_host(maps: &Tensor<3>) -> Result<Vec<f32>> {
    to_host(maps)
}

/// One image of an [`Explanation`], on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageExplanation {
    /// The final map, `[H][W]`.
    pub map: Vec<Vec<f32>>,
    /// The explained class, for class targets.
    pub class: Option<usize>,
    /// The explained score.
    pub score: f32,
    /// Where the map is largest (the first such pixel in row-major order).
    pub peak: Peak,
}

/// A map's largest value and its pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Column.
    pub x: usize,
    /// Row.
    pub y: usize,
    /// The value there.
    pub value: f32,
}

impl<O> Explanation<O> {
    /// Every image's map, class, score and peak, read back to the host (one read per tensor):
    /// no slicing of flat vectors.
    ///
    /// ```no_run
    /// # fn show(explanation: ember_core::Explanation<burn::tensor::Tensor<2>>) -> ember_core::Result<()> {
    /// for (i, image) in explanation.images()?.iter().enumerate() {
    ///     println!("image {i}: class {:?}, peak at ({}, {})", image.class, image.peak.x, image.peak.y);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn images(&self) -> Result<Vec<ImageExplanation>> {
        let [batch, height, width] = self.maps.dims();
        let maps = maps_to_host(&self.maps)?;
        let scores = to_host(&self.scores)?;
        let classes = self.classes.as_ref().map(classes_to_host).transpose()?;
        Ok((0..batch)
            .map(|i| {
                let values = &maps[i * height * width..(i + 1) * height * width];
                let peak = values.iter().copied().enumerate().fold(
                    Peak {
                        x: 0,
                        y: 0,
                        value: f32::NEG_INFINITY,
                    },
                    |best, (k, v)| {
                        if v > best.value {
                            Peak {
                                x: k % width,
                                y: k / width,
                                value: v,
                            }
                        } else {
                            best
                        }
                    },
                );
                ImageExplanation {
                    map: values.chunks(width.max(1)).map(<[f32]>::to_vec).collect(),
                    class: classes.as_ref().and_then(|c| c.get(i).copied()),
                    score: scores.get(i).copied().unwrap_or(f32::NAN),
                    peak,
                }
            })
            .collect())
    }
}
