"""pytorch-grad-cam's cost on the same MobileNetV2, for `cargo xtask bench`.

Prints one JSON object per row (same fields as Ember's rows). Same model weights
(models/mobilenet_v2.onnx comes from them), same batch sizes, same thread count, same protocol:
3 warm-up pairs, then forward and explanation timed alternately, medians of `--runs`. Weights are loaded the same way as in export_mobilenet.py.
"""

import argparse
import json
import pathlib
import statistics
import tempfile
import time

import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    KPCA_CAM,
    LayerCAM,
    RandomCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from export_mobilenet import fetch_weights, load_model


# Ember's method names → pytorch-grad-cam's classes (the methods both have).
METHODS = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "xgradcam": XGradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "kpcacam": KPCA_CAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "randomcam": RandomCAM,
}


def paired_medians_ms(warmups, runs, forward, explain):
    """Medians of forward and explain timed alternately after warm-up pairs (as Ember's rows)."""
    def timed(call):
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e3

    for _ in range(warmups):
        forward()
        explain()
    pairs = [(timed(forward), timed(explain)) for _ in range(runs)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmups", type=int, default=3)
    parser.add_argument("--layers", default="18", help="MobileNetV2 block indices (features[i])")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="gradcam", help="comma list of " + ", ".join(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fetch_weights(pathlib.Path(tmp)))
    for block in [int(b) for b in args.layers.split(",")]:
        layer = model.features[block]
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, 224, 224)

            def forward():
                with torch.no_grad():
                    model(x)

            for method in [m for m in args.methods.split(",") if m in METHODS]:
                def explain():
                    with METHODS[method](model=model, target_layers=[layer]) as cam:
                        cam(input_tensor=x, targets=None)

                forward_ms, explain_ms = paired_medians_ms(args.warmups, args.runs, forward, explain)
                print(json.dumps({
                    "model": "mobilenet_v2", "layer": f"features[{block}]", "batch": batch,
                    "backend": f"pytorch-cpu ({args.threads} threads)", "method": f"{method} (pytorch-grad-cam)",
                    "forward_ms": round(forward_ms, 2), "explain_ms": round(explain_ms, 2),
                    "ratio": round(explain_ms / forward_ms, 3),
                }), flush=True)


if __name__ == "__main__":
    main()
