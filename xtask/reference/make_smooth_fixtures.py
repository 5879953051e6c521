"""Reference runs of pytorch-grad-cam 1.5.7's `eigen_smooth` and `aug_smooth` for Ember's
parity tests.

Run through `cargo xtask smooth` (virtual environment with xtask/reference/requirements.txt)
after `make_fixtures.py`. For the small CNNs at their last ReLU and the bundled MobileNetV2 at
its last block, a batch of two images, the top class and another class, writes
`tests/fixtures/reference_smooth.npz`:

    <model>/eigen/<method>/<target>/raw      eigen_smooth's projection, Seg-Eigen-CAM's sign  [N, h, w]
    <model>/eigen/<method>/<target>/final    pytorch-grad-cam's final map with eigen_smooth  [N, H, W]
    <model>/eigen/<method>/<target>/agrees   1 where LAPACK's sign is that sign, else 0      [N]
    <model>/aug/<method>/<target>/final      pytorch-grad-cam's final map with aug_smooth    [N, H, W]

`eigen_smooth` projects with `get_2d_projection`, whose sign LAPACK picks; Ember fixes it with the
sign rule of `get_2d_projection_with_sign_correction`, so final maps are comparable where the two
agree. With aug_smooth the top class is pytorch-grad-cam's `targets=None` (each augmentation's
own top class). Rerunning gives byte-identical files.
"""


import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from reference_inputs import FIXTURES, mobilenet_and_photos, small_cnn

EIGEN_METHODS = {"gradcam": GradCAM, "hirescam": HiResCAM, "layercam": LayerCAM}
AUG_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def sign_corrected(projection):
    flip = np.abs(projection.min(axis=(1, 2))) > np.abs(projection.max(axis=(1, 2)))
    return np.where(flip[:, None, None], -projection, projection), ~flip


def run(model, layer, x, other_class, prefix, out):
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    for target_name, classes in [("top", top), ("other", [other_class] * x.shape[0])]:
        targets = [ClassifierOutputTarget(c) for c in classes]
        for name, method in EIGEN_METHODS.items():
            cam = method(model=model, target_layers=[layer])
            final = cam(input_tensor=x, targets=targets, eigen_smooth=True)
            activations = cam.activations_and_grads.activations[0].numpy()
            gradients = cam.activations_and_grads.gradients[0].numpy()
            raw = cam.get_cam_image(x, layer, targets, activations, gradients, eigen_smooth=True)
            cam.activations_and_grads.release()
            corrected, agrees = sign_corrected(raw)
            out[f"{prefix}/eigen/{name}/{target_name}/raw"] = np.float32(corrected)
            out[f"{prefix}/eigen/{name}/{target_name}/final"] = np.float32(final)
            out[f"{prefix}/eigen/{name}/{target_name}/agrees"] = np.float32(agrees)
        for name, method in AUG_METHODS.items():
            cam = method(model=model, target_layers=[layer])
            final = cam(input_tensor=x, targets=None if target_name == "top" else targets, aug_smooth=True)
            cam.activations_and_grads.release()
            out[f"{prefix}/aug/{name}/{target_name}/final"] = np.float32(final)
        print(f"{prefix}/{target_name}: classes {classes}")


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    for head in ["gap", "flatten"]:
        model, x = small_cnn(head)
        run(model, model.relu2, x, 7, f"small_cnn_{head}", out)
    mobilenet, batch = mobilenet_and_photos()
    run(mobilenet, mobilenet.features[18], batch, 281, "mobilenet_7x7", out)
    np.savez_compressed(FIXTURES / "reference_smooth.npz", **out)
    print(f"wrote reference_smooth.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
