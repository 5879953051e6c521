"""A corpus of hostile inputs for `ember`: models, images, tensors, labels and arguments that
once aborted, hung, panicked or answered wrongly, and the classes of input around them.

Run through `cargo xtask hostile` (needs only `onnx` and `numpy` of
xtask/reference/requirements.txt). Writes `tests/fixtures/hostile/` — the files, and `cases.json`,
one case per entry:

    {"name": ..., "why": ..., "args": [...], "exit": 0 | 1 | 2, "message": "..."}

`args` are `ember`'s arguments with `{dir}` standing for the fixture folder and `{out}` for a
fresh scratch folder; `exit` is the expected exit status (0 done, 1 failed input, 2 usage
error) and `message` a fragment of the expected one-line error. The Rust side
(`crates/ember-cli/tests/hostile.rs`) runs every case under an address-space limit and a
timeout. Cases that need the file system at run time (FIFOs, symlinks, hard links, non-UTF-8
names, outputs written over inputs) are built there.

Files are small (the largest, 5005 nodes, is 110 KB): the hostility is in the numbers they claim.
Rerunning gives byte-identical files.
"""

import json
import pathlib
import struct
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "hostile"
OPSET = 17
HUGE = 1_000_000_000
CASES = []


def case(name, why, args, exit, message=""):
    CASES.append({"name": name, "why": why, "args": args, "exit": exit, "message": message})


def write(name, data):
    (OUT / name).write_bytes(data)
    return "{dir}/" + name


# ---------------------------------------------------------------------------------------------
# Models: a tiny classifier [N, 3, H, W] → Conv → Relu → (hostile part) → GAP → Flatten → Gemm,
# three classes.

rng = np.random.default_rng(0)
CONV_W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
CONV_B = np.zeros(4, np.float32)
GEMM_W = rng.standard_normal((3, 4)).astype(np.float32)
GEMM_B = np.array([0.1, -0.2, 0.3], np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def ints(name, values):
    return init(name, np.array(values, np.int64))


def classifier(name, middle=(), extra_inits=(), size=(16, 16), conv=None, gemm_b=GEMM_B, conv_w=CONV_W,
               head="relu_out", extra_outputs=(), edit=None):
    """Saves the tiny classifier with `middle` nodes between the Relu (`relu_out`) and the pooling
    (which reads `head`); returns the path placeholder."""
    h, w = size
    conv_attrs = conv or {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv_out"], name="conv", **conv_attrs),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        *middle,
        helper.make_node("GlobalAveragePool", [head], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]), *extra_outputs],
        [init("conv_w", conv_w), init("conv_b", CONV_B), init("gemm_w", GEMM_W), init("gemm_b", gemm_b),
         *extra_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="make_hostile")
    model.ir_version = 8
    if edit:
        edit(model)
    return write(name + ".onnx", model.SerializeToString())


def explain(model, *extra, image="{dir}/photo.png"):
    args = ["explain", "--device", "flex", "--model", model]
    if "--input-npy" not in extra and "--image" not in extra:
        args += ["--image", image]
    if "--out" not in extra:
        args += ["--out", "{out}/overlay.png"]
    # Batch runs (a folder, a tensor of several images) write there, never into the checkout.
    if "--out-dir" not in extra:
        args += ["--out-dir", "{out}/batch"]
    return args + list(extra)


# ---------------------------------------------------------------------------------------------
# Images, written by hand so that headers can claim what they like.

def png(width, height, rows=None, color_type=2, bit_depth=8, compress=True):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    if rows is not None:
        data += chunk(b"IDAT", zlib.compress(rows, 9) if compress else rows)
    return data + chunk(b"IEND", b"")


def gradient_png(width, height):
    rows = b""
    for y in range(height):
        row = bytes((x * 7 + y * 3) % 256 for x in range(width) for _ in range(3))
        rows += b"\x00" + row
    return png(width, height, rows)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()

    write("photo.png", gradient_png(40, 30))
    tiny = classifier("tiny", size=("H", "W"))
    fixed = classifier("tiny_fixed", size=(16, 16))

    # Sanity: the corpus's own valid inputs work (exit 0), so failures below are the hostility.
    case("valid_model_and_image", "the baseline every case below departs from", explain(tiny, "--size", "16"), 0)
    case("valid_fixed_size", "a fixed-size model needs no --size", explain(fixed), 0)

    # --- Sizes computed from numbers in the model -----------------------------------------
    reshape_overflow = classifier("reshape_overflow", [
        helper.make_node("Reshape", ["relu_out", "huge_shape"], ["big"], name="reshape_huge"),
        helper.make_node("Reshape", ["big", "back"], ["restored"], name="reshape_back"),
    ], [ints("huge_shape", [2**62, 2**62, -1]), ints("back", [0, 4, 16, 16])], head="restored")
    case("reshape_target_overflows", "the product of a Reshape target overflows usize (was a stack overflow)",
         explain(reshape_overflow), 1, "reshape_huge")

    constant_of_shape = classifier("constant_of_shape_huge", [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros_huge",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Add", ["relu_out", "zeros"], ["sum"], name="add"),
    ], [ints("shape", [1, 4, 100000, 100000])], head="sum")
    case("constant_of_shape_asks_for_terabytes", "ConstantOfShape of 4·10^10 floats (was an abort)",
         explain(constant_of_shape), 1, "memory budget")

    constant_of_shape_overflow = classifier("constant_of_shape_overflow", [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros_overflow",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Add", ["relu_out", "zeros"], ["sum"], name="add"),
    ], [ints("shape", [2**40, 2**40, 2**40, 1])], head="sum")
    case("constant_of_shape_overflows", "ConstantOfShape whose element count overflows",
         explain(constant_of_shape_overflow), 1, "zeros_overflow")

    pad = classifier("pad_huge", [
        helper.make_node("Pad", ["relu_out", "pads"], ["padded"], name="pad_huge", mode="constant"),
    ], [ints("pads", [0, 0, HUGE, HUGE, 0, 0, HUGE, HUGE])], head="padded")
    case("pad_asks_for_terabytes", "Pad by 10^9 on each side (was an abort)", explain(pad), 1, "memory budget")

    conv_pads = classifier("conv_pads_huge", conv={"pads": [HUGE] * 4, "kernel_shape": [3, 3]})
    case("conv_pads_ask_for_terabytes", "Conv pads of 10^9 (was an abort)", explain(conv_pads), 1, "memory budget")

    pool_kernel = classifier("pool_kernel_huge", [
        helper.make_node("MaxPool", ["relu_out"], ["pooled_big"], name="pool_huge", kernel_shape=[HUGE, HUGE]),
    ], head="pooled_big")
    case("pool_kernel_larger_than_input", "a MaxPool window larger than its padded input",
         explain(pool_kernel), 1, "pool_huge")

    row = helper.make_node("ConstantOfShape", ["row_shape"], ["row"], name="row",
                           value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    col = helper.make_node("ConstantOfShape", ["col_shape"], ["col"], name="col",
                           value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    blowup_inits = [ints("row_shape", [1, 200000]), ints("col_shape", [200000, 1])]
    for op in ["Add", "MatMul"]:
        model = classifier(f"{op.lower()}_blowup", [
            row, col,
            helper.make_node(op, ["col", "row"], ["square"], name=f"{op.lower()}_square"),
            helper.make_node("ReduceMean", ["square"], ["scalar"], name="mean", keepdims=0),
            helper.make_node("Mul", ["relu_out", "scalar"], ["scaled"], name="scale"),
        ], blowup_inits, head="scaled")
        case(f"{op.lower()}_of_two_vectors_asks_for_terabytes",
             f"{op} of [200000, 1] and [1, 200000]: 4·10^10 floats from two 800 KB inputs",
             explain(model), 1, "memory budget")

    # Each tensor fits the budget alone, two do not: the budget bounds what the graph holds.
    first = helper.make_node("ConstantOfShape", ["big_shape"], ["big_a"], name="big_a",
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
    second = helper.make_node("ConstantOfShape", ["big_shape"], ["big_b"], name="big_b",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0]))
    held = classifier("held_together", [
        first, second,
        helper.make_node("Add", ["big_a", "big_b"], ["big_sum"], name="sum"),
        helper.make_node("ReduceMean", ["big_sum"], ["scalar"], name="mean", keepdims=0),
        helper.make_node("Mul", ["relu_out", "scalar"], ["scaled"], name="scale"),
    ], [ints("big_shape", [10, 1024, 1024])], head="scaled")
    case("tensors_that_fit_alone_but_not_together", "two 40 MiB tensors under a 64 MiB budget",
         explain(held, "--max-memory", "64MiB"), 1, "already holds")
    case("tensors_that_fit_together", "the same model under a 256 MiB budget: a correct result",
         explain(held, "--max-memory", "256MiB"), 0)

    unsqueeze = classifier("unsqueeze_rank", [
        helper.make_node("Unsqueeze", ["relu_out", "axes"], ["deep"], name="unsqueeze_deep"),
        helper.make_node("Reshape", ["deep", "back"], ["restored"], name="reshape_back"),
    ], [ints("axes", [0, 1, 2, 3, 4, 5, 6]), ints("back", [0, 4, 16, 16])], head="restored")
    case("unsqueeze_beyond_supported_rank", "rank 11 after Unsqueeze", explain(unsqueeze), 1, "rank")

    gather = classifier("gather_out_of_range", [
        helper.make_node("Gather", ["relu_out", "index"], ["picked"], name="gather_far", axis=1),
    ], [ints("index", [0, 1, 2, 1000000])], head="picked")
    case("gather_index_out_of_range", "Gather index 10^6 on an axis of 4", explain(gather), 1, "gather_far")

    slice_zero = classifier("slice_step_zero", [
        helper.make_node("Slice", ["relu_out", "starts", "ends", "axes", "steps"], ["sliced"], name="slice_zero"),
    ], [ints("starts", [0]), ints("ends", [2]), ints("axes", [2]), ints("steps", [0])], head="sliced")
    case("slice_step_zero", "a Slice step of 0", explain(slice_zero), 1, "slice")

    group = classifier("conv_group_mismatch", conv={"pads": [1, 1, 1, 1], "kernel_shape": [3, 3], "group": 3})
    case("conv_groups_do_not_divide", "group 3 with a [4, 3, 3, 3] weight", explain(group), 1, "conv")

    def lying_weight(model):
        model.graph.initializer[0].dims[:] = [100000, 100000, 3, 3]
    lying = classifier("weight_dims_lie", edit=lying_weight)
    case("initializer_claims_more_than_it_holds", "a weight claiming 9·10^10 floats holding 108",
         explain(lying), 1, "")

    def overflowing_weight(model):
        model.graph.initializer[0].dims[:] = [2**62, 2**62, 3, 3]
    overflowing = classifier("weight_dims_overflow", edit=overflowing_weight)
    case("initializer_dims_overflow", "a weight whose element count overflows", explain(overflowing), 1, "")

    def negative_dims(model):
        model.graph.initializer[0].dims[:] = [-4, 3, 3, 3]
    negative = classifier("weight_dims_negative", edit=negative_dims)
    case("initializer_dims_negative", "a weight with a negative dimension", explain(negative), 1, "")

    nan_bias = classifier("nan_bias", gemm_b=np.array([np.nan, 0.0, 0.0], np.float32))
    case("nan_bias_gives_nan_scores", "NaN class scores were printed as a top-5 of NaN% with exit 0",
         explain(nan_bias), 1, "not finite")
    inf_weight = classifier("inf_weight", conv_w=np.full((4, 3, 3, 3), np.inf, np.float32))
    case("inf_weight_gives_non_finite_scores", "infinite weights", explain(inf_weight), 1, "not finite")

    def cycle(model):
        model.graph.node[1].input[0] = "relu_out"
    cyclic = classifier("cycle", edit=cycle)
    case("graph_with_a_cycle", "a node reading its own output", explain(cyclic), 1, "")

    def duplicate(model):
        model.graph.node[1].output[0] = "conv_out"
    case("two_nodes_write_one_value", "SSA violated", explain(classifier("duplicate_output", edit=duplicate)), 1, "")

    def no_nodes(model):
        del model.graph.node[:]
        del model.graph.initializer[:]
        model.graph.output[0].name = "x"
    case("graph_without_nodes", "the input is the output", explain(classifier("no_nodes", edit=no_nodes)), 1, "")

    def huge_input(model):
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = 100000
        dims[3].dim_value = 100000
    huge_static = classifier("input_100000x100000", size=(16, 16), edit=huge_input)
    case("static_input_of_100000x100000", "the model fixes its input at 100000×100000 (was an abort)",
         explain(huge_static), 1, "memory budget")

    def external(location, offset="0", length="16"):
        def edit(model):
            tensor = model.graph.initializer[1]
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in [("location", location), ("offset", offset), ("length", length)]:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        return edit
    write("weights.bin", bytes(64))
    for name, edit, message in [
        ("external_absolute", external("/etc/passwd"), "inside the model's folder"),
        ("external_parent", external("../weights.bin"), "inside the model's folder"),
        ("external_offset_huge", external("weights.bin", offset=str(2**63)), "outside"),
        ("external_length_huge", external("weights.bin", length=str(2**64 - 1)), "outside"),
        ("external_not_a_number", external("weights.bin", offset="-1"), "not a number"),
    ]:
        case(name, "external data pointing where it must not", explain(classifier(name, edit=edit)), 1, message)

    chain = classifier("deep_chain", [
        helper.make_node("Relu", ["relu_out" if i == 0 else f"r{i - 1}"], [f"r{i}"], name=f"r{i}")
        for i in range(3000)
    ], head="r2999")
    case("three_thousand_nodes", "a long chain still runs (no recursion limits)", explain(chain), 0)

    many = classifier("too_many_nodes", [
        helper.make_node("Relu", ["relu_out" if i == 0 else f"r{i - 1}"], [f"r{i}"])
        for i in range(5000)
    ], head="r4999")
    case("five_thousand_and_five_nodes", "one node past the bound on graph size (type inference is quadratic)",
         explain(many), 1, "more than the 5000 Ember loads")

    lrn = classifier("lrn_size_huge", [
        helper.make_node("LRN", ["relu_out"], ["normalised"], name="lrn_huge", size=HUGE),
    ], head="normalised")
    case("lrn_window_of_a_billion_channels", "an LRN window of 10^9 over 4 channels: a correct result",
         explain(lrn), 0)

    def zero_batch(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    case("input_batch_of_zero", "a fixed batch size of 0 (a folder run would loop forever)",
         explain(classifier("zero_batch", edit=zero_batch)), 1, "empty dimension")

    def zero_class_head(model):
        for tensor in model.graph.initializer:
            if tensor.name == "gemm_w":
                tensor.CopyFrom(numpy_helper.from_array(np.zeros((0, 4), np.float32), "gemm_w"))
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 0
    no_classes = classifier("zero_classes", gemm_b=np.zeros(0, np.float32), edit=zero_class_head)
    case("zero_classes", "a classifier with no classes", explain(no_classes), 1, "no inputs or outputs")

    def sigmoid_head(model):
        graph = model.graph
        for tensor in graph.initializer:
            if tensor.name == "gemm_w":
                tensor.CopyFrom(numpy_helper.from_array(GEMM_W[:1], "gemm_w"))
            if tensor.name == "gemm_b":
                tensor.CopyFrom(numpy_helper.from_array(GEMM_B[:1], "gemm_b"))
        graph.node.append(helper.make_node("Sigmoid", ["logits"], ["probability"], name="sigmoid"))
        graph.output[0].CopyFrom(helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1]))
    binary = classifier("sigmoid_head", edit=sigmoid_head)
    case("one_logit_sigmoid_head", "a binary classifier (one logit, a sigmoid): a correct result, explained through its logit",
         explain(binary), 0)

    # --- Layouts that cannot be decided (never guessed) -------------------------------------
    # Weights from their own generator, so that the fixtures above stay as they were.
    layout_rng = np.random.default_rng(1)
    conv8 = layout_rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    gemm8 = layout_rng.standard_normal((3, 8)).astype(np.float32)

    def eight_channels(model):
        for tensor in model.graph.initializer:
            if tensor.name == "gemm_w":
                tensor.CopyFrom(numpy_helper.from_array(gemm8, "gemm_w"))
            if tensor.name == "conv_b":
                tensor.CopyFrom(numpy_helper.from_array(np.zeros(8, np.float32), "conv_b"))
    regrouped = classifier(
        "layout_undecided", size=(8, 8), conv_w=conv8, edit=eight_channels, head="restored",
        middle=[helper.make_node("Reshape", ["relu_out", "same_shape"], ["regrouped"], name="regroup"),
                helper.make_node("Reshape", ["regrouped", "same_shape"], ["restored"], name="restore")],
        extra_inits=[ints("same_shape", [0, 8, 8, 8])])
    case("layer_layout_undecided", "a layer [N, 8, 8, 8] behind a Reshape: neither the graph nor the shape tells "
         "where its channels are", explain(regrouped, "--layer", "regroup"), 1, "--layout nchw|nhwc")
    case("layer_layout_given", "the same layer with --layout: a correct result",
         explain(regrouped, "--layer", "regroup", "--layout", "nchw"), 0)

    def reshaped_input(model):
        graph = model.graph
        for dim, name in zip(graph.input[0].type.tensor_type.shape.dim[1:], ["C", "H", "W"]):
            dim.dim_param = name
        graph.initializer.append(ints("image_shape", [0, 3, 16, 16]))
        graph.node.insert(0, helper.make_node("Reshape", ["x", "image_shape"], ["image"], name="as_image"))
        graph.node[1].input[0] = "image"
    symbolic = classifier("input_layout_undecided", edit=reshaped_input)
    case("input_layout_undecided", "an input [N, C, H, W] of symbolic sizes read through a Reshape: channels "
         "first or last cannot be told", explain(symbolic, "--size", "16"), 1, "--input-layout nchw|nhwc")
    case("input_layout_given", "the same model with --input-layout: a correct result",
         explain(symbolic, "--size", "16", "--input-layout", "nchw"), 0)

    # --- Files that are not models --------------------------------------------------------
    write("empty.onnx", b"")
    case("empty_model_file", "0 bytes", explain("{dir}/empty.onnx"), 1, "")
    write("text.onnx", b"this is not a protobuf message\n" * 4)
    case("text_as_model", "text", explain("{dir}/text.onnx"), 1, "")
    truncated = (OUT / "tiny.onnx").read_bytes()
    write("truncated.onnx", truncated[: len(truncated) // 3])
    case("truncated_model", "a third of a model", explain("{dir}/truncated.onnx"), 1, "")
    case("image_as_model", "a PNG given as the model", explain("{dir}/photo.png"), 1, "")
    case("folder_as_model", "a folder given as the model", explain("{dir}"), 1, "not a regular file")

    # --- Images -----------------------------------------------------------------------------
    wide = write("wide_100000x1.png", png(100000, 1, b"\x00" + bytes(300000)))
    case("png_100000x1_at_224", "resizing the shorter side to 256 needs 19.7 GB (was an abort)",
         explain(tiny, "--size", "224", image=wide), 1, "memory budget")
    case("png_100000x1_at_16", "the same image where the resized copy fits: a correct result",
         explain(tiny, "--size", "16", image=wide), 0)
    tall = write("tall_1x100000.png", png(1, 100000, b"\x00\x00\x00\x00" * 100000))
    case("png_1x100000_at_224", "the other orientation", explain(tiny, "--size", "224", image=tall), 1,
         "memory budget")
    huge_header = write("claims_100000x100000.png", png(100000, 100000, b"\x00" * 64))
    case("png_claims_100000x100000", "a 30 GB image in 100 bytes", explain(tiny, "--size", "16", image=huge_header),
         1, "")
    max_header = write("claims_max.png", png(2**31 - 1, 2**31 - 1, b"\x00" * 64))
    case("png_claims_2^31", "the largest dimensions PNG allows", explain(tiny, "--size", "16", image=max_header), 1, "")
    zero = write("zero_width.png", png(0, 10, b""))
    case("png_zero_width", "a 0×10 image", explain(tiny, "--size", "16", image=zero), 1, "")
    write("empty.png", b"")
    case("empty_image_file", "0 bytes", explain(tiny, "--size", "16", image="{dir}/empty.png"), 1, "")
    write("text.png", b"hello\n")
    case("text_as_image", "text named .png", explain(tiny, "--size", "16", image="{dir}/text.png"), 1, "")
    jpeg = write("claims_65500x65500.jpg",
                 b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9")
    case("jpeg_claims_65500x65500", "a JPEG frame header with no data", explain(tiny, "--size", "16", image=jpeg),
         1, "")
    gray16 = np.arange(20 * 30 * 2, dtype=">u2").reshape(30, 20, 2) * 50
    g16 = write("gray16_alpha.png", png(20, 30, b"".join(b"\x00" + r.tobytes() for r in gray16), color_type=4,
                                        bit_depth=16))
    case("png_16_bit_gray_alpha", "a valid but unusual PNG: a correct result",
         explain(tiny, "--size", "16", image=g16), 0)
    one = write("one_pixel.png", png(1, 1, b"\x00\xff\x00\x00"))
    case("png_one_pixel", "a 1×1 image: a correct result", explain(tiny, "--size", "16", image=one), 0)

    # --- Tensors (.npy) ---------------------------------------------------------------------
    def npy(shape, data=b"", descr="<f4", fortran=False, header_len=None):
        header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, repr(tuple(shape)))
        header = header.ljust((len(header) + 11) // 64 * 64 + 63 - 10) + "\n"
        length = len(header) if header_len is None else header_len
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + header.encode() + data

    def tensor_case(name, why, data, exit, message, model=None):
        path = write(name + ".npy", data)
        case(name, why, explain(model or fixed, "--input-npy", path), exit, message)

    tensor_case("npy_shape_overflows", "a shape whose product overflows (was a panic)",
                npy((2**62, 2**62, 4, 4), bytes(16)), 1, "")
    tensor_case("npy_claims_more_than_it_holds", "[1, 3, 100000, 100000] in 16 bytes",
                npy((1, 3, 100000, 100000), bytes(16)), 1, "")
    tensor_case("npy_header_longer_than_file", "a header length past the end", npy((1, 3, 16, 16), header_len=65535),
                1, "")
    tensor_case("npy_int8", "integer values", npy((1, 3, 16, 16), bytes(768), descr="|i1"), 1, "float")
    tensor_case("npy_fortran", "Fortran order", npy((1, 3, 16, 16), bytes(3072), fortran=True), 1, "Fortran")
    tensor_case("npy_rank_5", "rank 5", npy((1, 1, 3, 16, 16), bytes(3072)), 1, "shape")
    tensor_case("npy_zero_sized", "an empty axis", npy((1, 3, 0, 16)), 1, "empty")
    tensor_case("npy_nan", "a NaN value", npy((1, 3, 16, 16), struct.pack("<f", float("nan")) * 768), 1,
                "non-finite")
    tensor_case("npy_wrong_channels", "one channel for a three-channel model", npy((1, 1, 16, 16), bytes(1024)), 1,
                "")
    tensor_case("npy_text", "not a .npy file", b"1 2 3\n", 1, "")
    tensor_case("npy_valid", "a valid tensor: a correct result", npy((2, 3, 16, 16), bytes(6144)), 0, "",
                model=tiny)

    # --- `ember run`: any graph on tensors ----------------------------------------------------
    def run(model, *extra):
        return ["run", "--device", "flex", "--model", model, *extra]
    valid = "{dir}/npy_valid.npy"
    case("run_valid", "a plain forward pass written to a new folder: a correct result",
         run(tiny, "--input", "x=" + valid, "--save-outputs", "{out}/outputs"), 0)
    case("run_unknown_input", "an input name the graph does not have", run(tiny, "--input", "image=" + valid), 2,
         "has no input `image`")
    case("run_missing_input", "no tensor for the graph's input", run(tiny), 2, "no --input for `x`")
    case("run_input_twice", "the same input given twice", run(tiny, "--input", "x=" + valid, "--input", "x=" + valid),
         2, "given twice")
    case("run_empty_name", "`=FILE` without a name", run(tiny, "--input", "=" + valid), 2, "NAME=FILE")
    case("run_integers_for_floats", "int8 values for a float input", run(tiny, "--input", "x={dir}/npy_int8.npy"), 1,
         "takes floats")
    case("run_wrong_shape", "one channel for an input fixed at [N, 3, 16, 16]",
         run(fixed, "--input", "x={dir}/npy_wrong_channels.npy"), 1, "the graph declares")
    case("run_claims_more_than_it_holds", "a tensor header claiming 30 GB",
         run(tiny, "--input", "x={dir}/npy_claims_more_than_it_holds.npy"), 1, "")

    # --- Labels -----------------------------------------------------------------------------
    write("labels_binary.txt", b"\xff\xfe\x00cat\n\x80dog\n")
    case("labels_not_utf8", "binary labels", explain(fixed, "--labels", "{dir}/labels_binary.txt"), 1, "labels")
    case("labels_folder", "a folder as labels", explain(fixed, "--labels", "{dir}"), 1, "not a regular file")

    # --- Arguments --------------------------------------------------------------------------
    for name, extra, exit, message in [
        ("size_zero", ["--size", "0"], 2, "--size"),
        ("size_wraps_u32", ["--size", "4294967312"], 2, "--size"),
        ("size_100000", ["--size", "100000"], 1, "memory budget"),
        ("size_garbage", ["--size", "16x"], 2, "--size"),
        ("mean_nan", ["--size", "16", "--mean", "nan,0,0"], 2, "--mean"),
        ("std_infinite", ["--size", "16", "--std", "inf,1,1"], 2, "--std"),
        ("std_zero", ["--size", "16", "--std", "0,1,1"], 2, "--std"),
        ("image_weight_nan", ["--size", "16", "--image-weight", "nan"], 2, "--image-weight"),
        ("batch_size_zero", ["--size", "16", "--batch-size", "0"], 2, "--batch-size"),
        ("perturbation_batch_zero", ["--size", "16", "--method", "ablationcam", "--perturbation-batch-size", "0"], 2,
         "--perturbation-batch-size"),
        ("class_beyond_u64", ["--size", "16", "--class", "18446744073709551616"], 1, ""),
        ("class_negative", ["--size", "16", "--class", "-1"], 1, ""),
        ("class_out_of_range", ["--size", "16", "--class", "3"], 1, "out of range"),
        ("layer_empty", ["--size", "16", "--layer", ""], 1, "layer"),
        ("max_memory_zero", ["--size", "16", "--max-memory", "0"], 2, "--max-memory"),
        ("max_memory_garbage", ["--size", "16", "--max-memory", "lots"], 2, "--max-memory"),
        ("max_memory_tiny", ["--size", "16", "--max-memory", "1KiB"], 1, "memory budget"),
        ("out_without_format", ["--size", "16", "--out", "{out}/overlay"], 2, "--out"),
        ("out_is_a_folder", ["--size", "16", "--out", "{out}"], 2, "--out"),
        ("npy_equals_out", ["--size", "16", "--out", "{out}/a.npy", "--save-npy"], 2, "--out"),
        ("summary_equals_out", ["--size", "16", "--summary", "{out}/overlay.png"], 2, "--summary"),
        ("save_npy_equals_out", ["--size", "16", "--out", "{out}/a.png", "--save-npy", "{out}/a.png"], 2,
         "--out and --save-npy are the same file"),
        ("summary_equals_save_npy", ["--size", "16", "--save-npy", "{out}/m.npy", "--summary", "{out}/m.npy"], 2,
         "--save-npy and --summary are the same file"),
        ("out_equals_model", ["--size", "16", "--out", "{dir}/tiny.onnx"], 2, "--out"),
    ]:
        case(name, "a bad argument", explain(tiny, *extra), exit, message)

    (OUT / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    print(f"{len(CASES)} cases in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
