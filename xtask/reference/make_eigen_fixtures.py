"""Reference projections of pytorch-grad-cam 1.5.7's factorisation methods (EigenCAM,
EigenGradCAM, KPCA-CAM) for Ember's parity tests.

Run through `cargo xtask eigen` (pinned numpy, scikit-learn and grad-cam, installed without
torch). Reads the activations and gradients that `make_fixtures.py` stored from pytorch-grad-cam's
own runs (`tests/fixtures/reference_*.npz`) and writes `tests/fixtures/reference_eigen.npz`:

    <fixture>/<method>/<target>/raw<layer>   the projection on the first principal component

computed by pytorch-grad-cam's `get_2d_projection_with_sign_correction` (Seg-Eigen-CAM's sign
rule: the map is flipped when |min| > |max|), the deterministic sign Ember uses; EigenCAM projects
the activations, EigenGradCAM the gradients times the activations. KPCA-CAM (`kpcacam`, the
sigmoid kernel pytorch-grad-cam uses by default, and `kpcacam-rbf`) is pytorch-grad-cam's
`get_2d_projection_kernel`, whose sign scikit-learn's `svd_flip` fixes (the same rule); scikit-learn
solves layers over 200 positions with ARPACK from a random start, seeded here. The module is loaded
from the installed package's file, so torch is not needed. Rerunning gives byte-identical files.
"""

import importlib.util
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SOURCES = ["reference_mobilenet_7x7", "reference_mobilenet_14x14", "reference_small_cnn_gap", "reference_small_cnn_flatten"]


def svd_module():
    package = importlib.util.find_spec("pytorch_grad_cam")
    path = pathlib.Path(package.submodule_search_locations[0]) / "utils" / "svd_on_activations.py"
    spec = importlib.util.spec_from_file_location("svd_on_activations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    svd = svd_module()
    out = {}
    for source in SOURCES:
        arrays = np.load(FIXTURES / f"{source}.npz")
        for target in ["top", "other"]:
            layer = 0
            while f"{target}/activations{layer}" in arrays:
                activations = arrays[f"{target}/activations{layer}"]
                gradients = arrays[f"{target}/gradients{layer}"]
                out[f"{source}/eigencam/{target}/raw{layer}"] = svd.get_2d_projection_with_sign_correction(activations)
                out[f"{source}/eigengradcam/{target}/raw{layer}"] = svd.get_2d_projection_with_sign_correction(
                    gradients * activations
                )
                np.random.seed(0)
                out[f"{source}/kpcacam/{target}/raw{layer}"] = svd.get_2d_projection_kernel(activations)
                out[f"{source}/kpcacam-rbf/{target}/raw{layer}"] = svd.get_2d_projection_kernel(activations, "rbf")
                layer += 1
    path = FIXTURES / "reference_eigen.npz"
    # A fixed archive layout: np.savez writes entries in insertion order with fixed timestamps.
    np.savez(path, **out)
    print(f"{len(out)} projections in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
