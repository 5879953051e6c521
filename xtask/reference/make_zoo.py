"""An architecture zoo for the run-time ONNX executor: small seeded models, their ONNX export, and
the logits PyTorch and onnxruntime give for a fixed input.

Run through `cargo xtask zoo` (virtual environment with xtask/reference/requirements.txt).
Writes `tests/fixtures/zoo/<name>.onnx` and `tests/fixtures/zoo/<name>.npz` (input, torch logits,
onnxruntime logits, and pytorch-grad-cam's Grad-CAM of the explained layer); rerunning gives
byte-identical files.

Each model is a torchvision architecture built from torchvision's own blocks, made small (few
channels, few blocks, 10 classes, 64×64 inputs) so that the whole zoo stays under a few MB in git:
the operators, their attributes and the graph structure are those of the full-size networks.
"caffe_style" is written to ONNX by hand so that it carries the `LRN` operator of Caffe-era
models (torch.onnx would decompose it).
Weights are random (seed 0); batch-norm statistics are randomised too, so that normalisation is
not the identity. "paddle_style" mimics PaddlePaddle exports (HardSigmoid, HardSwish, Mul, Div,
Pad, ReduceMean, Transpose, MatMul, a Softmax output) and has a dynamic input size.
"""

import ast
import functools
import importlib
import json
import pathlib

import numpy as np
import onnxruntime
import torch
import torchvision
from pytorch_grad_cam import GradCAM

# Module objects, not the same-named model constructors `torchvision.models` re-exports.
densenet, efficientnet, googlenet, mobilenetv3, regnet, resnet, shufflenetv2, squeezenet, vgg, convnext, vision_transformer, swin_transformer = (
    importlib.import_module(f"torchvision.models.{name}")
    for name in ["densenet", "efficientnet", "googlenet", "mobilenetv3", "regnet", "resnet", "shufflenetv2", "squeezenet", "vgg", "convnext", "vision_transformer", "swin_transformer"]
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ZOO = ROOT / "tests" / "fixtures" / "zoo"
# Opset 16 as burn-onnx's build-time import wants; one model keeps torch's default opset (20),
# where ConvNeXt exports LayerNormalization and Gelu as single operators; one ViT goes to opset 23,
# where attention is one `Attention` node (and one with RMSNorm, one `RMSNormalization` node).
OPSETS = {"convnext_opset20": 20, "vit_opset23": 23, "vit_rmsnorm": 23}
# Exported with torch.onnx.export's defaults (the dynamo exporter, opset 20, weights in a separate
# `.onnx.data` file, the batch size fixed by the example input). The ViTs too: the legacy
# exporter writes multi-head attention's shape arithmetic in a form onnx-ir 0.22 cannot type.
DYNAMO = {"resnet_dynamo", "vit", "vit_registers", "vit_saliency", "vit_opset23", "vit_rmsnorm"}
SIZE = 64
CLASSES = 10
# Exported, then rewritten with their weights in Constant nodes.
WEIGHTS_AS_CONSTANTS = {"resnet_constants"}


class TinyResNet(torch.nn.Module):
    """ResNet-18's stem, BasicBlocks with projection shortcuts, GAP and FC, with 8–32 channels."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(3, 2, 1),
        )

        def down(cin, cout):
            return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, 2, bias=False), torch.nn.BatchNorm2d(cout))

        self.layer1 = resnet.BasicBlock(8, 8)
        self.layer2 = resnet.BasicBlock(8, 16, 2, down(8, 16))
        self.layer3 = resnet.Bottleneck(16, 8, 2, down(16, 32))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(32, CLASSES)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyVgg(torch.nn.Module):
    """VGG-11-BN's feature layout (torchvision's `make_layers`), adaptive pooling, dropout head."""

    def __init__(self):
        super().__init__()
        self.features = vgg.make_layers([8, "M", 16, "M", 16, 16, "M", 32, "M"], batch_norm=True)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(32 * 16, 32), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(32, CLASSES)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TinySqueezeNet(torch.nn.Module):
    """SqueezeNet 1.1's layout with torchvision's Fire modules and its convolutional classifier."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, kernel_size=3, stride=2),
            torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            squeezenet.Fire(16, 4, 8, 8),
            squeezenet.Fire(16, 4, 8, 8),
            torch.nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            squeezenet.Fire(16, 8, 16, 16),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(p=0.5),
            torch.nn.Conv2d(32, CLASSES, kernel_size=1),
            torch.nn.ReLU(inplace=True),
            torch.nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class TinyGoogLeNet(torch.nn.Module):
    """GoogLeNet's stem (ceil-mode max pools) and torchvision's Inception blocks."""

    def __init__(self):
        super().__init__()
        self.conv1 = googlenet.BasicConv2d(3, 8, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = googlenet.Inception(8, 4, 4, 8, 2, 4, 4)
        self.inception3b = googlenet.Inception(20, 8, 4, 8, 2, 4, 4)
        self.maxpool3 = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = googlenet.Inception(24, 8, 8, 8, 4, 8, 8)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = torch.nn.Dropout(0.2)
        self.fc = torch.nn.Linear(32, CLASSES)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class PaddleStyle(torch.nn.Module):
    """The operators PaddlePaddle exports use, with a Softmax output and a dynamic input size."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, 2)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, 1, 1, groups=8)
        self.conv3 = torch.nn.Conv2d(16, 16, 1)
        self.se_reduce = torch.nn.Conv2d(16, 4, 1)
        self.se_expand = torch.nn.Conv2d(4, 16, 1)
        self.weight = torch.nn.Parameter(torch.randn(16, CLASSES) * 0.3)
        self.bias = torch.nn.Parameter(torch.randn(CLASSES) * 0.1)

    def forward(self, x):
        x = torch.nn.functional.pad(x, (0, 1, 0, 1))
        x = torch.nn.functional.hardswish(self.bn1(self.conv1(x)))
        x = self.conv3(torch.relu(self.conv2(x)) / 6.0)
        scale = torch.nn.functional.hardsigmoid(self.se_expand(torch.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = x * scale
        pooled = x.mean((2, 3))
        tokens = x.flatten(2).transpose(1, 2)  # [N, HW, C]
        attended = tokens.mean(1)
        logits = torch.matmul(pooled + attended, self.weight) + self.bias
        return torch.softmax(logits, dim=1)


class TfStyleNhwc(torch.nn.Module):
    """What tf2onnx makes of a Keras CNN: an NHWC input `[N, H, W, 3]`, a Transpose to NCHW
    before each convolution and one back after it, batch normalisation as a per-channel Mul and
    Add and the ReLUs in NHWC, global average pooling over axes 1 and 2, a Dense layer (MatMul
    and Add) and a Softmax. The explained layer, the last ReLU, is `[N, 8, 8, 8]`: only the graph,
    not its shape, tells where its channels are."""

    input_layout = "nhwc"
    layer_layout = "nhwc"

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(
            [torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.Conv2d(32, 8, 3, 2, 1)]
        )
        self.scales = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(c)) for c in (16, 32, 8)])
        self.shifts = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(c)) for c in (16, 32, 8)])
        self.acts = torch.nn.ModuleList([torch.nn.ReLU() for _ in range(3)])
        self.dense = torch.nn.Linear(8, CLASSES)

    def forward(self, x):
        for conv, scale, shift, act in zip(self.convs, self.scales, self.shifts, self.acts):
            x = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            x = act(x * scale + shift)
        return torch.softmax(self.dense(x.mean((1, 2))), dim=1)


def tiny_vit(norm_layer=None):
    """torchvision's VisionTransformer made small: 64×64 inputs in 16×16 patches (a 4×4 grid),
    a class token, two encoder blocks of width 32 (LayerNorm, or `norm_layer`)."""
    norm = {} if norm_layer is None else {"norm_layer": norm_layer}
    return vision_transformer.VisionTransformer(
        image_size=SIZE, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=CLASSES, **norm
    )


def tokens_to_grid(skip):
    """pytorch-grad-cam's `reshape_transform` for a ViT: drop the leading tokens, lay the
    patches out on their 4×4 grid, channels first."""
    return lambda t: t[:, skip:, :].reshape(t.size(0), 4, 4, t.size(2)).permute(0, 3, 1, 2)


class VitRegisters(torch.nn.Module):
    """A DINOv2-style ViT: torchvision's class token and position embeddings, then four register
    tokens after the class token (without position embeddings), the same encoder blocks."""

    layer_layout = "tokens 4x4 after 5"
    seed = 1

    def __init__(self):
        super().__init__()
        self.vit = tiny_vit()
        self.registers = torch.nn.Parameter(torch.zeros(1, 4, 32))

    def encode(self, x):
        """The tokens after the last block's norm: class token, registers, patches."""
        vit = self.vit
        x = vit._process_input(x)
        n = x.shape[0]
        x = torch.cat([vit.class_token.expand(n, -1, -1), x], dim=1) + vit.encoder.pos_embedding
        x = torch.cat([x[:, :1], self.registers.expand(n, -1, -1), x[:, 1:]], dim=1)
        return vit.encoder.ln(vit.encoder.layers(vit.encoder.dropout(x)))

    def forward(self, x):
        return self.vit.heads(self.encode(x)[:, 0])


class VitSaliency(VitRegisters):
    """A DINOv2-style ViT with a dense head, as saliency and segmentation ViTs end: the same class
    token, registers and blocks, then a linear layer on every patch token (two channels), laid out
    on the 4×4 grid and upsampled bilinearly (×16, the ONNX `Resize`) to the input's size. It is
    explained at a token layer for channel 1 summed over a box, with pytorch-grad-cam's
    `SemanticSegmentationTarget`."""

    target = {"channel": 1, "region": [8, 24, 40, 56]}
    seed = 2

    def __init__(self):
        super().__init__()
        self.dense_head = torch.nn.Linear(32, 2)

    def forward(self, x):
        patches = self.dense_head(self.encode(x)[:, 5:]).reshape(x.shape[0], 4, 4, 2).permute(0, 3, 1, 2)
        return torch.nn.functional.interpolate(patches, scale_factor=16, mode="bilinear", align_corners=False)


class TinySegmenter(torch.nn.Module):
    """An encoder–decoder segmenter: two strided convolutions, a ConvTranspose (×2) and a bilinear
    `F.interpolate` (×2, the ONNX `Resize`) back to the input size, three classes per pixel. It
    is explained for class 1 summed over a box, with pytorch-grad-cam's
    `SemanticSegmentationTarget`."""

    target = {"channel": 1, "region": [16, 8, 48, 40]}

    def __init__(self):
        super().__init__()
        self.enc1 = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.enc2 = torch.nn.Conv2d(8, 16, 3, 2, 1)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        x = torch.relu(self.enc2(torch.relu(self.enc1(x))))
        x = self.head(torch.relu(self.up(x)))
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class CaffeStyle(torch.nn.Module):
    """AlexNet/CaffeNet-era layers with local response normalisation (the ONNX `LRN` operator).

    torch.onnx decomposes `LocalResponseNorm` into a dozen operators, while Caffe-converted
    models (AlexNet, CaffeNet, GoogLeNet of the ONNX model zoo) carry `LRN` itself, so this one is
    written to ONNX by hand, node for node, from the module's weights."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.relu1 = torch.nn.ReLU()
        self.norm1 = torch.nn.LocalResponseNorm(5, alpha=0.2, beta=0.75, k=2.0)
        self.pool1 = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.norm2 = torch.nn.LocalResponseNorm(3, alpha=0.3, beta=0.6, k=1.5)
        self.fc = torch.nn.Linear(16, CLASSES)

    def forward(self, x):
        x = self.pool1(self.norm1(self.relu1(self.conv1(x))))
        x = self.norm2(self.relu2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))

    def to_onnx(self, path):
        from onnx import TensorProto, helper, numpy_helper

        weights = [numpy_helper.from_array(v.detach().numpy(), k) for k, v in self.state_dict().items()]

        def lrn(norm, name, x, y):
            return helper.make_node(
                "LRN", [x], [y], name=name, size=norm.size, alpha=norm.alpha, beta=norm.beta, bias=norm.k
            )

        nodes = [
            helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv",
                             kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2]),
            helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
            lrn(self.norm1, "/norm1/LRN", "r1", "n1"),
            helper.make_node("MaxPool", ["n1"], ["p1"], name="/pool1/MaxPool", kernel_shape=[3, 3], strides=[2, 2],
                             ceil_mode=1),
            helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="/conv2/Conv",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
            lrn(self.norm2, "/norm2/LRN", "r2", "n2"),
            helper.make_node("GlobalAveragePool", ["n2"], ["g"], name="/GlobalAveragePool"),
            helper.make_node("Flatten", ["g"], ["f"], name="/Flatten"),
            helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1),
        ]
        graph = helper.make_graph(
            nodes,
            "caffe_style",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
            weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], producer_name="make_zoo.py")
        model.ir_version = 8
        import onnx

        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def zoo():
    """(name, model, explained layer, dynamic size) for every architecture."""
    regnet_params = regnet.BlockParams.from_init_params(
        depth=3, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25
    )
    effnet_setting, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    mnv3_setting, _ = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    models = [
        ("resnet", TinyResNet(), lambda m: m.layer3, False),
        # The same network with every weight in a Constant node instead of an initializer, as
        # some converters write them.
        ("resnet_constants", TinyResNet(), lambda m: m.layer3, False),
        ("vgg", TinyVgg(), lambda m: m.features[-2], False),
        (
            "mobilenet_v3",
            mobilenetv3.MobileNetV3(mnv3_setting, 64, num_classes=CLASSES),
            # At 64×64 the last stage is 2×2 and its map is flat for this seed: a 4×4 block instead.
            lambda m: m.features[8],
            False,
        ),
        (
            "efficientnet",
            efficientnet.EfficientNet(effnet_setting, 0.2, num_classes=CLASSES, last_channel=64),
            lambda m: m.features[-1],
            False,
        ),
        ("squeezenet", TinySqueezeNet(), lambda m: m.features[-1], False),
        (
            "densenet",
            densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, bn_size=2, num_classes=CLASSES),
            # Not `features[-1]` (norm5): DenseNet applies an in-place ReLU to its output, which
            # rewrites the activation pytorch-grad-cam captured there.
            lambda m: m.features.denseblock3,
            False,
        ),
        ("regnet", regnet.RegNet(regnet_params, num_classes=CLASSES), lambda m: m.trunk_output, False),
        (
            "shufflenet",
            shufflenetv2.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 64], num_classes=CLASSES),
            lambda m: m.conv5,
            False,
        ),
        ("googlenet", TinyGoogLeNet(), lambda m: m.inception4a, False),
        ("paddle_style", PaddleStyle(), lambda m: m.conv3, True),
        (
            "convnext",
            convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)], num_classes=CLASSES),
            lambda m: m.features[-1],
            False,
        ),
        (
            "convnext_opset20",
            convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)], num_classes=CLASSES),
            lambda m: m.features[-1],
            False,
        ),
        ("caffe_style", CaffeStyle(), lambda m: m.norm2, False),
        ("segmenter", TinySegmenter(), lambda m: m.up, False),
        ("tf_style_nhwc", TfStyleNhwc(), lambda m: m.acts[2], False),
        # pytorch-grad-cam's advice for ViTs: the last block's first LayerNorm.
        ("vit", token_layout(tiny_vit(), "tokens 4x4 after 1", seed=1), lambda m: m.encoder.layers[-1].ln_1, False),
        ("vit_registers", VitRegisters(), lambda m: m.vit.encoder.layers[-1].ln_1, False),
        ("vit_saliency", VitSaliency(), lambda m: m.vit.encoder.layers[-1].ln_1, False),
        # The ViT at opset 23, where the exporter writes attention as ONNX's own `Attention`
        # node (no Softmax left in the graph).
        ("vit_opset23", token_layout(tiny_vit(), "tokens 4x4 after 1", seed=1), lambda m: m.encoder.layers[-1].ln_1, False),
        # The ViT with RMSNorm (recent transformers' norm) at opset 23: one `RMSNormalization`
        # node per norm, which onnx-ir 0.22 does not know (Ember runs it as a legalized node).
        (
            "vit_rmsnorm",
            token_layout(tiny_vit(functools.partial(torch.nn.RMSNorm, eps=1e-6)), "tokens 4x4 after 1", seed=1),
            lambda m: m.encoder.layers[-1].ln_1,
            False,
        ),
        # The same ViT through torch's legacy exporter (`dynamo=False`): its attention reshapes
        # take shapes assembled at run time (Shape → Gather → Unsqueeze → Concat), whose lengths
        # onnx-ir cannot tell; Ember declares their ranks before it parses (ember_onnx::legalize).
        ("vit_legacy", token_layout(tiny_vit(), "tokens 4x4 after 1", seed=1), lambda m: m.encoder.layers[-1].ln_1, False),
        (
            # ConvNeXt's blocks run in NHWC between two Transposes: the second pointwise Linear's
            # output `[N, 4, 4, 32]` is channels-last.
            "convnext_channels_last",
            channels_last(
                convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)], num_classes=CLASSES)
            ),
            lambda m: m.features[3][0].block[5],
            False,
        ),
        ("resnet_dynamo", TinyResNet(), lambda m: m.layer3, False),
        (
            # Swin's stages run channels-last ([N, H, W, C]) with shifted windows: the legacy
            # exporter builds their attention masks with ScatterND and Mod. Explained at the last
            # stage's output `[N, 16, 16, 16]`.
            "swin",
            channels_last(
                swin_transformer.SwinTransformer(
                    patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4], num_classes=CLASSES
                )
            ),
            lambda m: m.features[-1],
            False,
        ),
    ]
    return models


def weights_as_constants(path):
    """Moves every initializer of the model at `path` into a Constant node at the graph's start."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    constants = [
        helper.make_node("Constant", [], [tensor.name], name=f"/constants/{tensor.name}", value=tensor)
        for tensor in graph.initializer
    ]
    names = {tensor.name for tensor in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name not in names]
    del graph.initializer[:]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def token_layout(model, layout, seed):
    """Marks `model`'s explained layer as transformer tokens of that layout, seeded with `seed`."""
    model.layer_layout = layout
    model.seed = seed
    return model


def channels_last(model):
    """Marks `model`'s explained layer as channels-last: pytorch-grad-cam gets the permuting
    `reshape_transform` a careful user writes."""
    model.layer_layout = "nhwc"
    return model


class NchwInput(torch.nn.Module):
    """An NHWC model behind an NCHW input, as pytorch-grad-cam (and Ember) feed images."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.permute(0, 2, 3, 1))


def randomise_batch_norm(model, generator):
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


def initialise(model):
    """Seeds `model`'s weights and batch-norm statistics, puts it in eval mode, and returns its
    fixed input batch `[2, 3, SIZE, SIZE]` (NCHW whatever the model's own layout). The seed is
    0 unless the model names another (the ViTs: with seed 0 their Grad-CAM is negative
    everywhere at the advised layer, a blank map that would test nothing)."""
    seed = getattr(model, "seed", 0)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=generator) * (1.0 / max(1, p[0].numel()) ** 0.5))
    randomise_batch_norm(model, generator)
    model.eval()
    return torch.randn(2, 3, SIZE, SIZE, generator=generator)


def onnx_node_of(model, module, onnx_path):
    """The ONNX node that computes `module`'s output: the last node of its export scope."""
    import onnx

    qualified = next(n for n, m in model.named_modules() if m is module)
    parts = qualified.split(".")
    accumulated = [".".join(parts[: i + 1]) for i in range(len(parts))]
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    # The dynamo exporter records, for every node, the qualified names of the modules called
    # around it (modules never called as a whole, such as a container whose children a forward
    # calls directly, are left out).
    in_scope = [
        n.name
        for n in graph.node
        for p in n.metadata_props
        if p.key == "pkg.torch.onnx.name_scopes" and qualified in ast.literal_eval(p.value)
    ]
    if in_scope:
        return in_scope[-1]
    # The exporter names scopes after the attribute path; children of a Sequential carry their
    # accumulated name ("/features/features.12/"), other modules their own ("/features/norm5/").
    # In general: an indexed child is named after its container ("block.5", "acts.2"), and a
    # container that is never called (ModuleList) has no scope of its own.
    walked, module, name = [], model, ""
    for part in parts:
        child = module[int(part)] if part.isdigit() else getattr(module, part)
        name = f"{name}.{part}" if part.isdigit() else part
        if not isinstance(child, torch.nn.ModuleList):
            walked.append(name)
        module = child
    scopes = [
        "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/",
        "/" + "/".join(parts) + "/",
        "/" + "/".join(walked) + "/",
    ]
    names = [n.name for n in graph.node]
    nodes = next(matching for scope in scopes if (matching := [n for n in names if n.startswith(scope)]))
    return nodes[-1]


def main():
    ZOO.mkdir(parents=True, exist_ok=True)
    table = {}
    for name, model, layer_of, dynamic in zoo():
        x = initialise(model)
        nhwc_input = getattr(model, "input_layout", "nchw") == "nhwc"
        # What the ONNX graph takes: the model's own layout.
        graph_x = x.permute(0, 2, 3, 1).contiguous() if nhwc_input else x
        with torch.no_grad():
            torch_logits = model(graph_x).numpy()

        path = ZOO / f"{name}.onnx"
        spatial = {1: "height", 2: "width"} if nhwc_input else {2: "height", 3: "width"}
        axes = {"input": {0: "batch", **spatial}} if dynamic else {"input": {0: "batch"}}
        if hasattr(model, "to_onnx"):
            model.to_onnx(path)
        elif name in DYNAMO:
            data = path.with_name(path.name + ".data")
            data.unlink(missing_ok=True)
            opset = {"opset_version": OPSETS[name]} if name in OPSETS else {}
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], **opset)
        else:
            torch.onnx.export(
                model,
                (graph_x,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSETS.get(name, 16),
                dynamo=False,
            )
        if name in WEIGHTS_AS_CONSTANTS:
            weights_as_constants(path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_logits = session.run(None, {"input": graph_x.numpy()})[0]

        # Grad-CAM of the explained layer (top class; the score is the model's raw output), on
        # NCHW images; a channels-last layer gets the permuting reshape_transform.
        layer_layout = getattr(model, "layer_layout", "nchw")
        if layer_layout == "nhwc":
            reshape = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731
        elif layer_layout.startswith("tokens"):
            reshape = tokens_to_grid(int(layer_layout.split()[-1]))
        else:
            reshape = None
        cam = GradCAM(
            model=NchwInput(model) if nhwc_input else model,
            target_layers=[layer_of(model)],
            reshape_transform=reshape,
        )
        dense = getattr(model, "target", None)
        if dense is None:
            targets = None
        else:
            from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

            x0, y0, x1, y1 = dense["region"]
            mask = np.zeros((SIZE, SIZE), np.float32)
            mask[y0:y1, x0:x1] = 1.0
            targets = [SemanticSegmentationTarget(dense["channel"], mask) for _ in range(len(x))]
        grad_cam = cam(input_tensor=x, targets=targets).astype(np.float32)
        cam.activations_and_grads.release()
        # A map that is zero everywhere would make the comparison vacuous.
        assert grad_cam.reshape(len(x), -1).max(axis=1).min() > 0.5, f"{name}: degenerate Grad-CAM"

        np.savez(
            ZOO / f"{name}.npz",
            # In the graph's layout.
            input=graph_x.numpy(),
            torch_logits=torch_logits,
            ort_logits=ort_logits,
            grad_cam=grad_cam,
        )
        table[name] = {
            "layer": onnx_node_of(model, layer_of(model), path),
            "dynamic_size": dynamic,
            "softmax_output": name in ("paddle_style", "tf_style_nhwc"),
            "input_layout": "nhwc" if nhwc_input else "nchw",
            "layer_layout": {"nchw": "NCHW", "nhwc": "NHWC"}.get(layer_layout, layer_layout),
            "target": getattr(model, "target", None),
        }
        size = path.stat().st_size
        diff = np.abs(torch_logits - ort_logits).max()
        print(f"{name:14} {size / 1024:7.1f} KiB  torch vs onnxruntime {diff:.2e}  layer {table[name]['layer']}")
    (ZOO / "zoo.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
