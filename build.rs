//! Generates the bundled MobileNetV2 with a tap after every spatial layer (the `mobilenet`
//! feature), and — in a checkout with the test fixtures — the zoo's softmax-ended
//! PaddlePaddle-style model twice, for `tests/build_time_import.rs`: once explaining its logits
//! (the default) and once its output; and the zoo's channels-last (tf2onnx-style) model.

fn main() {
    #[cfg(feature = "mobilenet")]
    {
        ember_onnx::TappedModelGen::new("models/mobilenet_v2.onnx")
            .out_dir("model/")
            // The generated code is compiled inside this crate, which re-exports Ember's API.
            .runtime_crate("crate")
            .run_from_script()
            .unwrap_or_else(|e| panic!("importing models/mobilenet_v2.onnx: {e}"));

        // Test models, compiled only by the test that includes them (as a user crate would,
        // through `ember_cam`).
        let paddle = std::path::Path::new("tests/fixtures/zoo/paddle_style.onnx");
        if paddle.exists() {
            ember_onnx::TappedModelGen::new(paddle)
                .out_dir("test-models/logits/")
                .run_from_script()
                .unwrap_or_else(|e| panic!("importing {}: {e}", paddle.display()));
            ember_onnx::TappedModelGen::new(paddle)
                .out_dir("test-models/output/")
                .scores(ember_onnx::ScoreSource::Output)
                .run_from_script()
                .unwrap_or_else(|e| panic!("importing {}: {e}", paddle.display()));
        }
        let nhwc = std::path::Path::new("tests/fixtures/zoo/tf_style_nhwc.onnx");
        if nhwc.exists() {
            ember_onnx::TappedModelGen::new(nhwc)
                .out_dir("test-models/nhwc/")
                .run_from_script()
                .unwrap_or_else(|e| panic!("importing {}: {e}", nhwc.display()));
        }
    }
}
