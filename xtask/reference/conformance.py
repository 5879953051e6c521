"""ONNX's own backend node tests through `ember run`: the conformance of Ember's executor.

Run through `cargo xtask conformance` (needs only the pinned `onnx`, `numpy` and their
dependencies), which builds `ember` and passes its path:

    python conformance.py EMBER [--write-subset]

The test cases come from the pinned PyPI `onnx` (`onnx.backend.test.case.node.collect_testcases`,
which generates each model with its inputs and expected outputs). Every case whose inputs and
outputs are float32, int64, int32 or bool is written to `target/conformance/<case>/`, run with
`ember run --device flex`, and compared with the expected outputs at rtol 1e-4 / atol 1e-5 (shapes
must be equal; NaN must match NaN). Cases are counted per operator (the operator a case is named
after: its model's last node), for the operators `ember ops` lists and for the rest.

Writes `docs/conformance.md` (pass rate over the operators Ember lists, every failure with its
reason) and `docs/conformance.json`. With `--write-subset`, also `tests/fixtures/conformance/`:
up to three passing cases per listed operator, models and data as ONNX generated them, for the
fast test `crates/ember-runtime/tests/conformance.rs`.
"""

import collections
import json
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx

# Why the failing cases of listed operators fail (checked by hand; a failure no prefix covers is
# reported as not explained).
WHY = [
    (("test_averagepool_3d", "test_maxpool_3d", "test_convtranspose_3d"),
     "3-D pooling and transposed convolution (onnx-ir's `AveragePool3d`, `MaxPool3d`, `ConvTranspose3d`): the "
     "executor runs the 1-D and 2-D forms only"),
    (("test_averagepool_2d_dilations",), "dilated average pooling: Burn 0.22's `avg_pool2d` has no dilation"),
    (("test_averagepool_2d_ceil_last_window_starts_on_pad",),
     "ONNX's expected values are rounded to four decimals (0.1511 for 1.3595 / 9 = 0.151056); Ember's are the "
     "exact means, 4.4e-5 away, beyond atol + rtol"),
    (("test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode"),
     "BatchNormalization in training mode (batch statistics, running-mean outputs): onnx-ir 0.22 refuses it, and "
     "it is not inference"),
    (("test_maxpool_with_argmax",), "MaxPool's second output (the argmax indices, for MaxUnpool) is not computed"),
    (("test_reduce_max_empty_set_bool", "test_reshape_allowzero_reordered"),
     "empty tensors: the maximum over zero booleans, and a reshape of a 0-element tensor"),
    (("test_wrap_pad",), "Pad's `wrap` mode (opset 19): onnx-ir 0.22 refuses it"),
]

# Cases the subset always keeps when they pass, beyond the first ones of each operator: they go
# through Ember's rewrites of what onnx-ir refuses (`ember_onnx::legalize`: Resize's axes,
# antialias, tf_crop_and_resize, half_pixel_symmetric, keep_aspect_ratio_policy; Upsample;
# variadic Max/Min) and through fixed edge cases (empty tensors, negative slice steps, Dropout's
# mask).
ALWAYS = {
    "test_resize_downsample_scales_linear_antialias",
    "test_resize_downsample_sizes_cubic_antialias",
    "test_resize_downsample_scales_linear_half_pixel_symmetric",
    "test_resize_tf_crop_and_resize_axes_3_2",
    "test_resize_tf_crop_and_resize_extrapolation_value",
    "test_resize_upsample_sizes_nearest_not_larger",
    "test_resize_upsample_scales_nearest_axes_2_3",
    "test_upsample_nearest",
    "test_max_example",
    "test_min_one_input",
    "test_slice_neg_steps",
    "test_tril_zero",
    "test_split_zero_size_splits_opset18",
    "test_dropout_default_mask",
    "test_constant",
    # Attention: omitted cache outputs, the opset-25 window, fully masked rows, a cache with a
    # causal frontier, grouped query heads, a boolean mask.
    "test_attention_4d_with_qk_matmul",
    "test_attention_local_window_ext_cache_rank3_head_mask",
    "test_attention_23_fullymasked_qk_matmul_output_mode3_zero",
    "test_attention_4d_causal_with_past_and_present",
    "test_attention_3d_gqa_softcap",
    "test_attention_4d_attn_mask_bool",
    "test_spacetodepth_crd_mode_example",
    # 1-D windows run as 2-D ones of height 1.
    "test_averagepool_1d_default",
    "test_maxpool_1d_default",
    "test_convtranspose_1d",
}
from onnx.backend.test.case import node

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "conformance"
SUBSET = ROOT / "tests" / "fixtures" / "conformance"
RTOL, ATOL = 1e-4, 1e-5
DTYPES = {np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.bool_)}
PER_OPERATOR = 3


def case_operators(cases):
    """The operator each case tests: its model's node when it has one; for a function expanded
    into its body (`…_expanded`), the operator of the unexpanded case; else the last node's."""
    by_name = {c.name: c for c in cases}

    def operator(case):
        nodes = case.model.graph.node
        if len(nodes) == 1:
            return nodes[0].op_type
        if "_expanded" in case.name:
            plain = by_name.get(case.name[: case.name.index("_expanded")])
            if plain is not None and len(plain.model.graph.node) == 1:
                return plain.model.graph.node[0].op_type
        return nodes[-1].op_type

    return {c.name: operator(c) for c in cases}


def arrays_ok(arrays):
    return all(isinstance(a, np.ndarray) and a.dtype in DTYPES for a in arrays)


def write_case(folder, case, inputs, outputs):
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(case.model, str(folder / "model.onnx"))
    names = [i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}]
    # C order: some expected outputs come out of ONNX's reference in Fortran order (GatherElements'
    # take_along_axis), which a reader that follows the .npy header's `fortran_order` must not
    # take as C order.
    for k, array in enumerate(inputs):
        np.save(folder / f"input_{k}.npy", np.asarray(array, order="C"))
    for k, array in enumerate(outputs):
        np.save(folder / f"expected_{k}.npy", np.asarray(array, order="C"))
    return names


def compare(expected, path):
    if not path.exists():
        return "no output written"
    got = np.load(path)
    if got.shape != expected.shape:
        return f"shape {list(got.shape)}, expected {list(expected.shape)}"
    if expected.dtype == np.bool_ or expected.dtype.kind in "iu":
        if not np.array_equal(got.astype(np.int64), expected.astype(np.int64)):
            wrong = int((got.astype(np.int64) != expected.astype(np.int64)).sum())
            return f"{wrong} of {expected.size} values differ"
        return None
    got = got.astype(np.float64)
    want = expected.astype(np.float64)
    nan_ok = np.array_equal(np.isnan(got), np.isnan(want))
    close = np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
    if not nan_ok or not close.all():
        worst = np.nanmax(np.abs(got - want)) if got.size else 0.0
        return f"{int((~close).sum())} of {expected.size} values differ (worst {worst:.3g})"
    return None


def main():
    ember = pathlib.Path(sys.argv[1]).resolve()
    write_subset = "--write-subset" in sys.argv[2:]
    listed = set(subprocess.run([str(ember), "ops"], capture_output=True, text=True, check=True).stdout.split())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in node.collect_testcases(None) if c.model is not None and c.data_sets]
    operators = case_operators(cases)
    case_operator = lambda case: operators[case.name]  # noqa: E731
    shutil.rmtree(WORK, ignore_errors=True)
    results = []
    skipped = collections.Counter()
    for case in sorted(cases, key=lambda c: c.name):
        inputs, outputs = case.data_sets[0]
        if not arrays_ok(inputs) or not arrays_ok(outputs):
            skipped[case_operator(case)] += 1
            continue
        folder = WORK / case.name
        names = write_case(folder, case, inputs, outputs)
        if len(names) != len(inputs):
            skipped[case_operator(case)] += 1
            continue
        out = folder / "outputs"
        args = [str(ember), "run", "--device", "flex", "--model", str(folder / "model.onnx"), "--save-outputs", str(out)]
        for name, k in zip(names, range(len(inputs))):
            args += ["--input", f"{name}={folder / f'input_{k}.npy'}"]
        try:
            run = subprocess.run(args, capture_output=True, text=True, timeout=120)
            failure = run.stderr.strip().splitlines()[-1] if run.returncode != 0 else None
        except subprocess.TimeoutExpired:
            failure = "timed out after 120 s"
        if failure is None:
            for k, (output, expected) in enumerate(zip(case.model.graph.output, outputs)):
                stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in output.name) or "_"
                problem = compare(expected, out / f"{stem}.npy")
                if problem:
                    failure = f"output {output.name}: {problem}"
                    break
        results.append({
            "case": case.name,
            "operator": case_operator(case),
            "listed": case_operator(case) in listed,
            "passed": failure is None,
            "failure": failure,
        })
        print(f"{'ok  ' if failure is None else 'FAIL'} {case.name}" + (f": {failure}" if failure else ""), flush=True)

    listed_results = [r for r in results if r["listed"]]
    passed = sum(r["passed"] for r in listed_results)
    total = len(listed_results)
    others = [r for r in results if not r["listed"]]
    by_operator = collections.defaultdict(lambda: [0, 0])
    for r in listed_results:
        by_operator[r["operator"]][0] += r["passed"]
        by_operator[r["operator"]][1] += 1
    (ROOT / "docs" / "conformance.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# ONNX conformance of the run-time executor",
        "",
        "Generated by `cargo xtask conformance` (`xtask/reference/conformance.py`): ONNX "
        f"{onnx.__version__}'s backend node test cases with float32/int64/int32/bool data, run with "
        f"`ember run --device flex`, compared at rtol {RTOL} / atol {ATOL}.",
        "",
        f"**Operators `ember ops` lists: {passed} of {total} cases pass ({100 * passed / max(total, 1):.1f} %)**, "
        f"over {len(by_operator)} operators. Cases of other operators (refused at load: unsupported operator): "
        f"{len(others)}, {sum(r['passed'] for r in others)} pass. Cases skipped for their data types (float16, "
        f"float64, strings, …): {sum(skipped.values())}.",
        "",
        "| operator | passed | cases |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {op} | {p} | {n} |" for op, (p, n) in sorted(by_operator.items())]
    lines += ["", "## Failures of listed operators", ""]
    lines += [f"- `{r['case']}` ({r['operator']}): {r['failure']}" for r in listed_results if not r["passed"]]
    lines += ["", "### Why", ""]
    failed = {r["case"] for r in listed_results if not r["passed"]}
    for prefixes, why in WHY:
        cases = sorted(c for c in failed if c.startswith(prefixes))
        if cases:
            lines.append(f"- {why} ({len(cases)}: {', '.join(f'`{c}`' for c in cases)})")
            failed -= set(cases)
    if failed:
        lines.append(f"- Not explained yet: {', '.join(f'`{c}`' for c in sorted(failed))}")
    lines += ["", "## Operators not listed (cases refused or failing)", ""]
    missing = collections.Counter(r["operator"] for r in others)
    lines += [", ".join(f"{op} ({n})" for op, n in sorted(missing.items()))]
    (ROOT / "docs" / "conformance.md").write_text("\n".join(lines) + "\n")
    print(f"listed operators: {passed} of {total} cases pass; report in docs/conformance.md")

    if write_subset:
        shutil.rmtree(SUBSET, ignore_errors=True)
        chosen = collections.defaultdict(list)
        for r in listed_results:
            if r["passed"] and (len(chosen[r["operator"]]) < PER_OPERATOR or r["case"] in ALWAYS):
                chosen[r["operator"]].append(r["case"])
        table = []
        for operator, names in sorted(chosen.items()):
            for name in names:
                source = WORK / name
                target = SUBSET / name
                target.mkdir(parents=True)
                for f in sorted(source.iterdir()):
                    if f.is_file():
                        shutil.copy(f, target / f.name)
                model = onnx.load(str(source / "model.onnx"))
                initializers = {t.name for t in model.graph.initializer}
                table.append({
                    "case": name,
                    "operator": operator,
                    "inputs": [i.name for i in model.graph.input if i.name not in initializers],
                    "outputs": [o.name for o in model.graph.output],
                })
        (SUBSET / "cases.json").write_text(json.dumps(table, indent=1) + "\n")
        print(f"{len(table)} cases in {SUBSET}")


if __name__ == "__main__":
    main()
