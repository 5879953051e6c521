//! What to do with the sign of a map.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use crate::vocabulary::{UnknownName, Vocabulary, write_name};

/// How a signed map becomes the map that is shown.
///
/// Grad-CAM's ReLU keeps only evidence *for* the class; a channel with positive activation and
/// negative gradient vanishes. The other rectifiers keep that evidence visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Rectifier {
    /// `max(map, 0)`, then min–max to [0, 1]: the paper and pytorch-grad-cam.
    #[default]
    Relu,
    /// `|map|`, then min–max to [0, 1]: evidence for and against, by strength.
    Abs,
    /// The signed map divided by its largest magnitude: [-1, 1], 0 meaning no evidence.
    Signed,
    /// Gradients negated before the method, then ReLU: the regions whose removal would raise the
    /// class score (the counterfactual explanation of Selvaraju et al., ICCV 2017, §3).
    Counterfactual,
}

/// Added to the denominator of every normalisation, as pytorch-grad-cam does.
pub(crate) const NORMALISE_EPSILON: f32 = 1e-7;

impl Vocabulary for Rectifier {
    const KIND: &'static str = "rectifier";
    const ALL: &'static [Self] = &[
        Rectifier::Relu,
        Rectifier::Abs,
        Rectifier::Signed,
        Rectifier::Counterfactual,
    ];

    fn name(self) -> &'static str {
        match self {
            Rectifier::Relu => "relu",
            Rectifier::Abs => "abs",
            Rectifier::Signed => "signed",
            Rectifier::Counterfactual => "counterfactual",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Rectifier::Relu => "evidence for the class only, in [0, 1] (the paper, pytorch-grad-cam)",
            Rectifier::Abs => "evidence for and against, by strength, in [0, 1]",
            Rectifier::Signed => "the signed map in [-1, 1]: positive for the class, negative against it",
            Rectifier::Counterfactual => "regions whose removal would raise the class score, in [0, 1]",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            // The name this rectifier had before it was called what it is.
            Rectifier::Signed => &["none"],
            _ => &[],
        }
    }
}

impl Rectifier {
    /// Whether maps keep their sign (and are scaled to [-1, 1] instead of [0, 1]).
    pub fn is_signed(self) -> bool {
        self == Rectifier::Signed
    }

    /// Map values as a colour map takes them, in [0, 1]: signed maps ([-1, 1]) are shifted so
    /// that 0.5 means no evidence; other maps are already in [0, 1].
    pub fn display_values(self, map: &[f32]) -> Vec<f32> {
        if self.is_signed() {
            map.iter().map(|v| 0.5 * (v + 1.0)).collect()
        } else {
            map.to_vec()
        }
    }

    /// Gradients as the method must see them.
    pub(crate) fn prepare_gradients(self, gradients: Tensor<4>) -> Tensor<4> {
        match self {
            Rectifier::Counterfactual => gradients.neg(),
            _ => gradients,
        }
    }

    /// The rectified map, same shape.
    pub(crate) fn rectify<const D: usize>(self, map: Tensor<D>) -> Tensor<D> {
        match self {
            Rectifier::Relu | Rectifier::Counterfactual => map.clamp_min(0.0),
            Rectifier::Abs => map.abs(),
            Rectifier::Signed => map,
        }
    }

    /// Per-image normalisation of `[N, h, w]` maps: min–max to [0, 1] (`(x − min) / (max' + ε)`
    /// with `max'` taken after subtracting the minimum, as pytorch-grad-cam), or division by the
    /// largest magnitude for signed maps.
    pub(crate) fn normalise(self, maps: Tensor<3>) -> Tensor<3> {
        let [batch, height, width] = maps.dims();
        let flat = maps.reshape([batch, height * width]);
        let normalised = if self.is_signed() {
            let scale = flat.clone().abs().max_dim(1).add_scalar(NORMALISE_EPSILON);
            flat / scale
        } else {
            let shifted = flat.clone() - flat.min_dim(1);
            let scale = shifted.clone().max_dim(1).add_scalar(NORMALISE_EPSILON);
            shifted / scale
        };
        normalised.reshape([batch, height, width])
    }
}

impl fmt::Display for Rectifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(*self, f)
    }
}

impl FromStr for Rectifier {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rectifier::parse_name(s)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;

    fn maps(values: &[f32], dims: [usize; 3]) -> Tensor<3> {
        Tensor::<1>::from_data(values, &Device::flex()).reshape(dims)
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn min_max_normalises_each_image_separately() {
        // Image 0: [1, 3, 5, 2] → (x−1)/(4+ε); image 1: constant → all zeros.
        let normalised = values(Rectifier::Relu.normalise(maps(&[1., 3., 5., 2., 7., 7., 7., 7.], [2, 2, 2])));
        let expected = [0.0, 2.0 / 4.0, 1.0, 1.0 / 4.0, 0.0, 0.0, 0.0, 0.0];
        for (got, want) in normalised.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{normalised:?}");
        }
    }

    #[test]
    fn signed_maps_are_divided_by_their_largest_magnitude() {
        let normalised = values(Rectifier::Signed.normalise(maps(&[-4., 2., 1., 0.], [1, 2, 2])));
        let expected = [-1.0, 0.5, 0.25, 0.0];
        for (got, want) in normalised.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{normalised:?}");
        }
    }

    #[test]
    fn rectifiers_treat_signs_as_documented() {
        let raw = maps(&[-2., 1.], [1, 1, 2]);
        assert_eq!(values(Rectifier::Relu.rectify(raw.clone())), [0.0, 1.0]);
        assert_eq!(values(Rectifier::Counterfactual.rectify(raw.clone())), [0.0, 1.0]);
        assert_eq!(values(Rectifier::Abs.rectify(raw.clone())), [2.0, 1.0]);
        assert_eq!(values(Rectifier::Signed.rectify(raw)), [-2.0, 1.0]);
    }
}
