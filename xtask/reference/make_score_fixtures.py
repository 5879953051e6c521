"""Reference ScoreCAM runs of pytorch-grad-cam 1.5.7 for Ember's parity tests.

Run through `cargo xtask score` (virtual environment with xtask/reference/requirements.txt)
after `make_fixtures.py`. For the small CNNs (weights and inputs of `make_fixtures.py`) at their
last ReLU (8 channels) and the bundled MobileNetV2 at block 3 (`features[3]`, the residual Add,
24 channels at 56×56; every channel costs a forward pass of the whole network), for the top class
and another class of a batch of two images, writes `tests/fixtures/reference_score.npz`:

    <model>/<target>/weights   softmax over channels of the masked images' scores   [N, K]
    <model>/<target>/final     what pytorch-grad-cam returns                          [N, H, W]

with pytorch-grad-cam's defaults (batches of 16 masked images). Rerunning gives byte-identical
files.
"""


import numpy as np
import torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from reference_inputs import FIXTURES, mobilenet_and_photos, small_cnn



def run(model, layer, x, other_class, prefix, out):
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    for target_name, classes in [("top", top), ("other", [other_class] * x.shape[0])]:
        targets = [ClassifierOutputTarget(c) for c in classes]
        cam = ScoreCAM(model=model, target_layers=[layer])
        final = cam(input_tensor=x, targets=targets)
        activations = cam.activations_and_grads.activations[0].numpy()
        weights = cam.get_cam_weights(x, layer, targets, activations, None)
        cam.activations_and_grads.release()
        out[f"{prefix}/{target_name}/weights"] = np.float32(weights)
        out[f"{prefix}/{target_name}/final"] = np.float32(final)
        print(f"{prefix}/{target_name}: {weights.shape[1]} masked images per image")


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    for head in ["gap", "flatten"]:
        model, x = small_cnn(head)
        run(model, model.relu2, x, 7, f"small_cnn_{head}", out)
    mobilenet, batch = mobilenet_and_photos()
    run(mobilenet, mobilenet.features[3], batch, 281, "mobilenet_block3", out)
    np.savez_compressed(FIXTURES / "reference_score.npz", **out)
    print(f"wrote reference_score.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
