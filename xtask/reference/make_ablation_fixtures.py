"""Reference AblationCAM runs of pytorch-grad-cam 1.5.7 for Ember's parity tests.

Run through `cargo xtask ablation` (virtual environment with xtask/reference/requirements.txt)
after `make_fixtures.py`. For the small CNNs (weights and inputs of `make_fixtures.py`) and the
bundled MobileNetV2 at its last block, for the top class and another class of a batch of two
images, writes `tests/fixtures/reference_ablation.npz`:

    <model>/<target>/weights   the channel weights (original − ablated) / original   [N, K]
    <model>/<target>/final     what pytorch-grad-cam returns                          [N, H, W]

with pytorch-grad-cam's defaults (batches of 32 ablated copies, every channel ablated). The
explained layers end in a ReLU (ReLU6 for MobileNetV2), where the ablation value is 0.
Rerunning gives byte-identical files.
"""


import numpy as np
import torch
from pytorch_grad_cam import AblationCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from reference_inputs import FIXTURES, mobilenet_and_photos, small_cnn



def run(model, layer, x, other_class, prefix, out, method=AblationCAM):
    """`method`'s final maps and channel weights for the top class and `other_class` (ScoreCAM's
    fixtures come from here too)."""
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    for target_name, classes in [("top", top), ("other", [other_class] * x.shape[0])]:
        targets = [ClassifierOutputTarget(c) for c in classes]
        cam = method(model=model, target_layers=[layer])
        final = cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        weights = cam.get_cam_weights(x, layer, targets, activations, None)
        cam.activations_and_grads.release()
        out[f"{prefix}/{target_name}/weights"] = np.float32(weights)
        out[f"{prefix}/{target_name}/final"] = np.float32(final)
        print(f"{prefix}/{target_name}: {method.__name__}, {weights.shape[1]} channels")


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    for head in ["gap", "flatten"]:
        model, x = small_cnn(head)
        run(model, model.relu2, x, 7, f"small_cnn_{head}", out)
    mobilenet, batch = mobilenet_and_photos()
    run(mobilenet, mobilenet.features[18], batch, 281, "mobilenet_7x7", out)
    np.savez_compressed(FIXTURES / "reference_ablation.npz", **out)
    print(f"wrote reference_ablation.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
