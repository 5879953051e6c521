//! Generates the bundled MobileNetV2 with a tap after every spatial layer (the `mobilenet`
//! feature).

fn main() {
    #[cfg(feature = "mobilenet")]
    ember_onnx::TappedModelGen::new("models/mobilenet_v2.onnx")
        .out_dir("model/")
        // The generated code is compiled inside this crate, which re-exports Ember's API.
        .runtime_crate("crate")
        .run_from_script()
        .unwrap_or_else(|e| panic!("importing models/mobilenet_v2.onnx: {e}"));
}
