"""pytorch-grad-cam's batch loop over a folder of photos, for `cargo xtask throughput`.

The same work `ember explain --image FOLDER` does: decode each photo, torchvision's ImageNet
pre-processing, Grad-CAM of the top class at MobileNetV2's last block in batches, the map placed
back through the crop onto the whole photo (the cropped-away border dimmed, as Ember's
overlays), a PNG per photo and a JSON summary with the top-5 classes. Prints one JSON object:
images, seconds (the loop, imports and model loading excluded) and images per second.
"""

import argparse
import json
import pathlib
import tempfile
import time

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torchvision import transforms

from export_mobilenet import fetch_weights, load_model


def placed_on_photo(photo: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The 224×224 map drawn over the window of the photo that Resize(256) + CenterCrop(224) kept."""
    height, width = photo.shape[:2]
    scaled_w, scaled_h = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
    left, top = round((scaled_w - 224) / 2), round((scaled_h - 224) / 2)
    x0, y0 = int(np.ceil(left * width / scaled_w - 0.5)), int(np.ceil(top * height / scaled_h - 0.5))
    x1 = int(np.ceil((left + 224) * width / scaled_w - 0.5))
    y1 = int(np.ceil((top + 224) * height / scaled_h - 0.5))
    rgb = np.float32(photo) / 255
    drawn = np.uint8(np.round(rgb * 0.35 * 255))
    window = cv2.resize(cam, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    drawn[y0:y1, x0:x1] = show_cam_on_image(rgb[y0:y1, x0:x1], window, use_rgb=True)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fetch_weights(pathlib.Path(tmp)))
    cam = GradCAM(model=model, target_layers=[model.features[-1]])
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    for first in range(0, len(files), args.batch_size):
        batch = files[first : first + args.batch_size]
        photos = [Image.open(path).convert("RGB") for path in batch]
        inputs = torch.stack([preprocess(photo) for photo in photos])
        maps = cam(input_tensor=inputs, targets=None)
        probabilities = torch.softmax(cam.outputs.detach(), dim=1)
        top_p, top_i = probabilities.topk(5, dim=1)
        for path, photo, grayscale, p, i in zip(batch, photos, maps, top_p, top_i):
            drawn = placed_on_photo(np.asarray(photo), grayscale)
            overlay = args.out / (path.stem + ".png")
            cv2.imwrite(str(overlay), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            peak = np.unravel_index(np.argmax(grayscale), grayscale.shape)
            rows.append(
                {
                    "image": str(path),
                    "class": int(i[0]),
                    "top5": [{"class": int(c), "probability": float(q)} for c, q in zip(i, p)],
                    "peak": {"x": int(peak[1]), "y": int(peak[0])},
                    "overlay": str(overlay),
                }
            )
    (args.out / "summary.json").write_text(json.dumps({"images": rows}, indent=2))
    seconds = time.perf_counter() - start
    print(json.dumps({"images": len(files), "seconds": seconds, "images_per_second": len(files) / seconds}))


if __name__ == "__main__":
    main()
