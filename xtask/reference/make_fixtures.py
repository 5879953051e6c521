"""Reference fixtures from pytorch-grad-cam 1.5.7 for Ember's parity tests.

Run through `cargo xtask reference` (virtual environment with xtask/reference/requirements.txt)
after `export_mobilenet.py`. Writes `tests/fixtures/reference_<model>.npz`, one archive per model
and layer set, holding for each case every stage of the computation:

    input, logits, activations, gradients (per layer), weights (channel weights, where the method
    has them), raw (the map before ReLU, per layer), final (what pytorch-grad-cam returns)

Cases: every method × {top class, class `OTHER_CLASS`} × a batch of two images (the Rust tests
also explain the first image alone against the same numbers), plus the multi-layer aggregation.
Inputs are already pre-processed tensors, so the fixtures test the CAM maths only.
"""

import pathlib

import numpy as np
import torch
import torchvision
from pytorch_grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from export_mobilenet import ROOT, imagenet_preprocess, fetch_weights, load_model

METHODS = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "xgradcam": XGradCAM,
    "gradcam++": GradCAMPlusPlus,
    "layercam": LayerCAM,
}
WEIGHTED = {"gradcam", "xgradcam", "gradcam++"}
FIXTURES = ROOT / "tests" / "fixtures"


class SmallCnn(torch.nn.Module):
    """conv → ReLU → conv → ReLU (the explained layer) → GAP → linear, or → flatten → linear."""

    def __init__(self, head: str):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.head_kind = head
        self.fc = torch.nn.Linear(8 if head == "gap" else 8 * 16 * 16, 10)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = x.mean(dim=(2, 3)) if self.head_kind == "gap" else x.flatten(1)
        return self.fc(x)


def run_case(model, layers, method_name, x, class_index):
    """One pytorch-grad-cam call, with every intermediate stage."""
    cam = METHODS[method_name](model=model, target_layers=layers)
    targets = None if class_index is None else [ClassifierOutputTarget(class_index)] * x.shape[0]
    final = cam(input_tensor=x, targets=targets)
    if targets is None:
        with torch.no_grad():
            classes = model(x).argmax(dim=1).tolist()
        targets = [ClassifierOutputTarget(c) for c in classes]
    activations = [a.numpy() for a in cam.activations_and_grads.activations]
    gradients = [g.numpy() for g in cam.activations_and_grads.gradients]
    out = {"final": final.astype(np.float32)}
    for i, (layer, a, g) in enumerate(zip(layers, activations, gradients)):
        out[f"activations{i}"] = a
        out[f"gradients{i}"] = g
        out[f"raw{i}"] = cam.get_cam_image(x, layer, targets, a, g, False).astype(np.float32)
        if method_name in WEIGHTED:
            out[f"weights{i}"] = cam.get_cam_weights(x, layer, targets, a, g).astype(np.float32)
    cam.activations_and_grads.release()
    return out


def write_fixture(name, model, layers, x, other_class, methods=METHODS):
    arrays = {"input": x.numpy()}
    with torch.no_grad():
        arrays["logits"] = model(x).numpy()
    for method in methods:
        for target_name, class_index in [("top", None), ("other", other_class)]:
            case = run_case(model, layers, method, x, class_index)
            for key, value in case.items():
                # Activations and gradients do not depend on the method: store them once.
                if key.startswith(("activations", "gradients")):
                    arrays.setdefault(f"{target_name}/{key}", value)
                else:
                    arrays[f"{method}/{target_name}/{key}"] = value
    np.savez_compressed(FIXTURES / f"reference_{name}.npz", **arrays)
    print(f"wrote reference_{name}.npz ({len(arrays)} arrays)")


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        mobilenet = load_model(fetch_weights(pathlib.Path(tmp)))
    photos = ROOT / "examples" / "images"
    batch = torch.cat([imagenet_preprocess(photos / "chelsea.png"), imagenet_preprocess(photos / "coffee.png")])
    # The last block (7×7) and a 14×14 block; Ember names them by ONNX node.
    write_fixture("mobilenet_7x7", mobilenet, [mobilenet.features[18]], batch, other_class=281)
    write_fixture("mobilenet_14x14", mobilenet, [mobilenet.features[13]], batch, other_class=281)
    write_fixture(
        "mobilenet_two_layers", mobilenet, [mobilenet.features[13], mobilenet.features[18]], batch,
        other_class=281, methods=["gradcam"],
    )

    for head in ["gap", "flatten"]:
        torch.manual_seed(1 if head == "gap" else 2)
        model = SmallCnn(head).eval()
        x = torch.randn(2, 3, 16, 16)
        arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        np.savez_compressed(FIXTURES / f"small_cnn_{head}_weights.npz", **arrays)
        write_fixture(f"small_cnn_{head}", model, [model.relu2], x, other_class=7)


if __name__ == "__main__":
    main()
