"""Reference Guided Backpropagation and Guided Grad-CAM of pytorch-grad-cam 1.5.7 for Ember's
parity tests.

Run through `cargo xtask guided` (virtual environment with xtask/reference/requirements.txt)
after `make_fixtures.py` and `make_zoo.py`. pytorch-grad-cam's `GuidedBackpropReLUModel` guides
the `torch.nn.ReLU` modules of a model, so the models here apply every ReLU as such a module: the
small CNNs (weights and inputs of `make_fixtures.py`; Ember builds them natively in Burn) and the
zoo's ResNet and VGG (rebuilt with `make_zoo.py`'s seeds; Ember loads their ONNX files). For
each, the top class and another class of its batch of two images, writes
`tests/fixtures/reference_guided.npz`:

    <model>/<target>/guided_backprop   ∂score/∂input with guided ReLUs, CHW       [N, 3, H, W]
    <model>/<target>/guided_grad_cam   that times pytorch-grad-cam's Grad-CAM map  [N, 3, H, W]

`GuidedBackpropReLUModel` explains the first image of a batch only, so each image runs alone.
Rerunning gives byte-identical files.
"""

import copy

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from make_zoo import ZOO, initialise, zoo
from reference_inputs import FIXTURES, small_cnn



def run(model, layer_of, x, other_class, prefix, out):
    with torch.no_grad():
        top = model(x).argmax(dim=1).tolist()
    for target_name, classes in [("top", top), ("other", [other_class] * x.shape[0])]:
        cam = GradCAM(model=model, target_layers=[layer_of(model)])
        grad_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
        cam.activations_and_grads.release()
        guided = []
        for image, category in enumerate(classes):
            # On a copy: GuidedBackpropReLUModel puts back one ReLU module shared by every place
            # it replaced, so hooks on one of them (Grad-CAM's) would fire at all of them.
            guided_model = GuidedBackpropReLUModel(model=copy.deepcopy(model), device="cpu")
            hwc = guided_model(x[image : image + 1], target_category=category)
            guided.append(hwc.transpose(2, 0, 1))
        guided = np.float32(np.stack(guided))
        assert np.abs(guided).max() > 0, f"{prefix}: guided backpropagation is zero"
        # A blank Grad-CAM map would make the Guided Grad-CAM comparison vacuous.
        assert grad_cam.reshape(len(x), -1).max(axis=1).min() > 0.5, f"{prefix}/{target_name}: blank Grad-CAM"
        out[f"{prefix}/{target_name}/guided_backprop"] = guided
        out[f"{prefix}/{target_name}/guided_grad_cam"] = np.float32(guided * grad_cam[:, None])
        print(f"{prefix}/{target_name}: classes {classes}, largest |guided| {np.abs(guided).max():.3e}")


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    for head in ["gap", "flatten"]:
        model, x = small_cnn(head)
        run(model, lambda m: m.relu2, x, 7, f"small_cnn_{head}", out)
    for name, model, layer_of, _ in zoo():
        if name not in ("resnet", "vgg"):
            continue
        x = initialise(model)
        # The same model as the zoo's ONNX file: the same logits as recorded there.
        with torch.no_grad():
            logits = model(x).numpy()
        recorded = np.load(ZOO / f"{name}.npz")
        assert np.array_equal(recorded["input"], x.numpy()), f"{name}: another input than the zoo's"
        assert np.array_equal(recorded["torch_logits"], logits), f"{name}: another model than the zoo's"
        run(model, layer_of, x, 7, f"zoo_{name}", out)
    np.savez_compressed(FIXTURES / "reference_guided.npz", **out)
    print(f"wrote reference_guided.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
