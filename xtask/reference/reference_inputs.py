"""The models and inputs the method and metric fixture scripts share: the small CNNs of
`make_fixtures.py` with their stored weights and inputs, and the bundled MobileNetV2's weights
with the two photos every MobileNetV2 fixture explains."""

import pathlib
import tempfile

import numpy as np
import torch

from export_mobilenet import ROOT, fetch_weights, imagenet_preprocess, load_model
from make_fixtures import SmallCnn

FIXTURES = ROOT / "tests" / "fixtures"


def small_cnn(head):
    """`make_fixtures.py`'s small CNN with the `head` ("gap" or "flatten"), in eval mode, and its
    input batch."""
    model = SmallCnn(head).eval()
    weights = np.load(FIXTURES / f"small_cnn_{head}_weights.npz")
    model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files})
    x = torch.from_numpy(np.load(FIXTURES / f"reference_small_cnn_{head}.npz")["input"])
    return model, x


def mobilenet_and_photos():
    """The bundled MobileNetV2 (torchvision, the weights `models/mobilenet_v2.onnx` comes from)
    and the ImageNet-pre-processed batch of chelsea.png and coffee.png."""
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fetch_weights(pathlib.Path(tmp)))
    photos = ROOT / "examples" / "images"
    batch = torch.cat([imagenet_preprocess(photos / "chelsea.png"), imagenet_preprocess(photos / "coffee.png")])
    return model, batch
