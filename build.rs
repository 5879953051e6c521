//! Generates the bundled MobileNetV2 with a tap after every spatial layer.

fn main() {
    ember_onnx::TappedModelGen::new("models/mobilenet_v2.onnx")
        .out_dir("model/")
        .run_from_script()
        .unwrap_or_else(|e| panic!("importing models/mobilenet_v2.onnx: {e}"));
}
