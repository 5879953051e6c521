"""Where PyTorch spends the time of a MobileNetV2 forward pass and of a backward pass to an early
layer: torch.profiler's per-operator table, next to Ember's perf profile in docs/benchmarks.md.

Same weights as bench_pytorch.py, 2 threads, batch 1 and 8. Prints the top operators by self CPU
time for a forward pass (no_grad) and for forward + backward from the top logit to features[1]
(the input gradient of the network after that layer, as Grad-CAM needs).
"""

import argparse
import pathlib
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from export_mobilenet import fetch_weights, load_model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(fetch_weights(pathlib.Path(tmp)))
    for p in model.parameters():
        p.requires_grad_(False)
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, 224, 224)

        def forward():
            with torch.no_grad():
                model(x)

        def to_early_layer():
            stem = model.features[:2](x).detach().requires_grad_(True)
            rest = model.features[2:](stem)
            logits = model.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(rest, 1), 1))
            logits.max(dim=1).values.sum().backward()

        for name, call in [("forward", forward), ("forward + backward to features[1]", to_early_layer)]:
            for _ in range(3):
                call()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    call()
            print(f"## batch {batch}: {name} (5 runs)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
