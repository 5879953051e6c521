//! Models bundled with Ember.

/// The 1000 ImageNet-1k class names in index order (torchvision's spelling).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("../../models/imagenet_classes.txt").lines().collect()
}

/// torchvision's ImageNet MobileNetV2 (`mobilenet_v2-b0353104.pth`), imported from
/// `models/mobilenet_v2.onnx` at build time with a tap after every spatial layer; weights are
/// embedded in the binary. See `models/README.md` for provenance and licences.
#[allow(clippy::all, missing_docs, unused)]
pub mod mobilenet_v2 {
    include!(concat!(env!("OUT_DIR"), "/model/mobilenet_v2.rs"));
}
