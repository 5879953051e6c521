//! The build script a user writes to import an ONNX classifier with taps. The model is
//! `EMBER_USER_MODEL` (default: the zoo's softmax-ended PaddlePaddle-style classifier).

use std::path::PathBuf;

fn main() {
    let model = std::env::var("EMBER_USER_MODEL").unwrap_or_else(|_| "../fixtures/zoo/paddle_style.onnx".into());
    println!("cargo:rerun-if-env-changed=EMBER_USER_MODEL");
    let generated = ember_onnx::TappedModelGen::new(&model)
        .out_dir("model/")
        .run_from_script()
        .unwrap_or_else(|e| panic!("importing {model}: {e}"));
    // One name for `main.rs` to include, whatever the model file is called.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("a build script")).join("imported.rs");
    std::fs::write(out, format!("include!({:?});\n", generated.display().to_string())).expect("OUT_DIR is writable");
}
