"""Reference faithfulness metrics for Ember's parity tests: pytorch-grad-cam 1.5.7's
DropInConfidence, IncreaseInConfidence and ROAD, torch-cam 0.5.0's deletion and insertion.

Run through `cargo xtask metrics` (virtual environment with xtask/reference/requirements.txt)
after `make_fixtures.py`. Every metric scores the same maps — pytorch-grad-cam's Grad-CAM of the
model for the top class, stored here as `<model>/maps` — so the tests check the metrics, not the
maps. Models: the small CNN (GAP head, weights and inputs of `make_fixtures.py`, 16×16) for every
metric, and the bundled MobileNetV2 at its last block on two photos (224×224) for the confidence
metrics and deletion/insertion. Writes `tests/fixtures/reference_metrics.npz`:

    <model>/maps                                  the scored maps                        [N, H, W]
    <model>/classes                               the explained (top) classes            [N]
    <model>/{logit,softmax}/drop_in_confidence    pytorch-grad-cam, per image            [N]
    <model>/{logit,softmax}/increase_in_confidence
    <model>/{logit,softmax}/deletion/{zeros,mean}  torch-cam's AUC, per image (20 steps)  [N]
    <model>/{logit,softmax}/insertion/{zeros,mean}
    small_cnn_gap/{logit,softmax}/road_{morf,lerf,combined}   noise 0, percentiles 10–90  [N]

ROAD runs without noise (pytorch-grad-cam's noise is unseeded; the imputation itself is
deterministic). torch-cam's deletion/insertion computes its own CAM: a stand-in extractor hands it
the stored maps. Rerunning gives byte-identical files.
"""

import contextlib

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torchcam.metrics import DeletionInsertionMetric

from reference_inputs import FIXTURES, mobilenet_and_photos, small_cnn

TARGETS = {"logit": ClassifierOutputTarget, "softmax": ClassifierOutputSoftmaxTarget}


class StoredMaps:
    """torch-cam's CAM-extractor protocol, answering with fixed maps."""

    def __init__(self, model, maps):
        self.model = model
        self.maps = torch.from_numpy(maps)

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def road(morf, x, maps, targets, model):
    remove = RemoveMostRelevantFirst if morf else RemoveLeastRelevantFirst

    def metric(percentile):
        return PerturbationConfidenceMetric(remove(percentile, NoisyLinearImputer(noise=0.0)))

    return AveragerAcrossThresholds(metric)(x, maps, targets, model)


def run(model, layer, x, prefix, out, with_road):
    with torch.no_grad():
        classes = model(x).argmax(dim=1).tolist()
    cam = GradCAM(model=model, target_layers=[layer])
    maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    cam.activations_and_grads.release()
    out[f"{prefix}/maps"] = np.float32(maps)
    out[f"{prefix}/classes"] = np.float32(classes)
    for score, target in TARGETS.items():
        targets = [target(c) for c in classes]
        out[f"{prefix}/{score}/drop_in_confidence"] = np.float32(DropInConfidence()(x, maps, targets, model))
        out[f"{prefix}/{score}/increase_in_confidence"] = np.float32(IncreaseInConfidence()(x, maps, targets, model))
        logits_fn = None if score == "logit" else (lambda logits: torch.softmax(logits, dim=-1))
        for baseline_name, baseline in [("zeros", None), ("mean", lambda t: t.mean(dim=(2, 3), keepdim=True))]:
            deletion, insertion = [], []
            for image in range(x.shape[0]):
                one = x[image : image + 1]
                metric = DeletionInsertionMetric(
                    StoredMaps(model, maps[image : image + 1]), logits_fn, steps=20, baseline=baseline
                )
                metric.update(one, class_idx=classes[image])
                summary = metric.summary()
                deletion.append(summary["deletion_auc"])
                insertion.append(summary["insertion_auc"])
            out[f"{prefix}/{score}/deletion/{baseline_name}"] = np.float32(deletion)
            out[f"{prefix}/{score}/insertion/{baseline_name}"] = np.float32(insertion)
        if with_road:
            morf = road(True, x, maps, targets, model)
            lerf = road(False, x, maps, targets, model)
            out[f"{prefix}/{score}/road_morf"] = np.float32(morf)
            out[f"{prefix}/{score}/road_lerf"] = np.float32(lerf)
            out[f"{prefix}/{score}/road_combined"] = np.float32((lerf - morf) / 2)
    print(f"{prefix}: classes {classes}")


def main():
    torch.use_deterministic_algorithms(True)
    out = {}
    model, x = small_cnn("gap")
    run(model, model.relu2, x, "small_cnn_gap", out, with_road=True)
    mobilenet, batch = mobilenet_and_photos()
    run(mobilenet, mobilenet.features[18], batch, "mobilenet_7x7", out, with_road=False)
    np.savez_compressed(FIXTURES / "reference_metrics.npz", **out)
    print(f"wrote reference_metrics.npz ({len(out)} arrays)")


if __name__ == "__main__":
    main()
