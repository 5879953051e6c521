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

from make_ablation_fixtures import run
from reference_inputs import FIXTURES, mobilenet_and_photos, small_cnn


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    for head in ["gap", "flatten"]:
        model, x = small_cnn(head)
        run(model, model.relu2, x, 7, f"small_cnn_{head}", out, ScoreCAM)
    mobilenet, batch = mobilenet_and_photos()
    run(mobilenet, mobilenet.features[3], batch, 281, "mobilenet_block3", out, ScoreCAM)
    np.savez_compressed(FIXTURES / "reference_score.npz", **out)
    print(f"wrote reference_score.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
