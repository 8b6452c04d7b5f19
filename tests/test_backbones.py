"""dla-kd's backbones: DiT/BEiT ViT and timm models through Detectron2's BACKBONE_REGISTRY."""

import math

import pytest
import timm
import torch
from timm.layers import FrozenBatchNormAct2d
from timm.models.beit import RelativePositionBias as TimmRelativePositionBias
from torch import nn

import dla_kd  # noqa: F401  (registers the backbones)
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from dla_kd.config import get_dla_kd_cfg
from dla_kd.modeling.backbone import (
    BeitEncoder,
    MultiScaleAdapter,
    RelativePositionBias,
    convert_batchnorm,
    create_timm_features,
    load_timm_checkpoint,
)

STRIDES = {"stride4": 4, "stride8": 8, "stride16": 16, "stride32": 32}
P_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}


def _cfg(backbone: str, **vit_or_timm):
    cfg = get_dla_kd_cfg()
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.FPN.IN_FEATURES = list(STRIDES)
    section = cfg.MODEL.VIT if backbone == "build_vit_fpn_backbone" else cfg.MODEL.TIMM
    for key, value in vit_or_timm.items():
        setattr(section, key, value)
    return cfg


def _check_maps(outputs, shapes, image_hw, expected_strides):
    """Every output named in expected_strides, shape (1, C, ceil(H/s), ceil(W/s)) with C and s as
    the backbone declares them."""
    assert set(outputs) == set(expected_strides) == set(shapes)
    for name, stride in expected_strides.items():
        assert shapes[name].stride == stride
        expected = (1, shapes[name].channels, math.ceil(image_hw[0] / stride), math.ceil(image_hw[1] / stride))
        assert tuple(outputs[name].shape) == expected, name


def test_registered():
    assert "build_vit_fpn_backbone" in BACKBONE_REGISTRY
    assert "build_timm_fpn_backbone" in BACKBONE_REGISTRY


@pytest.mark.parametrize("size,dim", [("tiny", 192), ("base", 768)])
def test_dit_shapes_per_stride(size, dim):
    backbone = build_backbone(_cfg("build_vit_fpn_backbone", SIZE=size)).eval()
    image_hw = (128, 160)
    with torch.no_grad():
        bottom = backbone.bottom_up(torch.randn(1, 3, *image_hw))
        pyramid = backbone(torch.randn(1, 3, *image_hw))
    _check_maps(bottom, backbone.bottom_up.output_shape(), image_hw, STRIDES)
    assert all(s.channels == dim for s in backbone.bottom_up.output_shape().values())
    _check_maps(pyramid, backbone.output_shape(), image_hw, P_STRIDES)
    assert backbone.size_divisibility == 32
    assert backbone.bottom_up.size_divisibility == 32
    assert backbone.bottom_up.padding_constraints == {"size_divisibility": 32}


def test_dit_sizes_and_dit_block_choice():
    base = build_backbone(_cfg("build_vit_fpn_backbone", SIZE="base")).bottom_up
    assert base.encoder.out_indices == [3, 5, 7, 11] and len(base.encoder.blocks) == 12
    assert base.encoder.blocks[0].attn.num_heads == 12
    small = BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="small"), ShapeSpec(channels=3))
    assert (small.embed_dim, small.blocks[0].attn.num_heads) == (384, 6)
    # large: DiT's blocks 7, 11, 15, 23; built with depth cut to the first 4 blocks for speed
    large_cfg = _cfg("build_vit_fpn_backbone", SIZE="large", OUT_INDICES=[0, 1, 2, 3])
    large = BeitEncoder(large_cfg, ShapeSpec(channels=3))
    assert (large.embed_dim, len(large.blocks), large.blocks[0].attn.num_heads) == (1024, 4, 16)
    from dla_kd.modeling.backbone import dit_out_indices

    assert dit_out_indices(24) == [7, 11, 15, 23]


def test_dit_adapter_matches_dit_layout():
    adapter = MultiScaleAdapter(768, 16, norm="BN")
    up4, up2 = adapter.branches["stride4"], adapter.branches["stride8"]
    assert [type(m) for m in up4] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.GELU, nn.ConvTranspose2d]
    assert [type(m) for m in up2] == [nn.ConvTranspose2d]
    assert isinstance(adapter.branches["stride16"], nn.Identity)
    assert isinstance(adapter.branches["stride32"], nn.MaxPool2d)
    only_coarse = MultiScaleAdapter(64, 16, out_features=["stride16", "stride32"])
    assert set(only_coarse.branches) == {"stride16", "stride32"}  # unused branches are not built
    with pytest.raises(ValueError, match="subset"):
        MultiScaleAdapter(64, 16, out_features=["p2"])


@pytest.mark.parametrize("rel_pos", ["none", "shared", "per_block"])
def test_dit_non_square_input_interpolates_positions(rel_pos):
    cfg = _cfg(
        "build_vit_fpn_backbone",
        SIZE="tiny",
        USE_REL_POS_BIAS=rel_pos != "none",
        SHARED_REL_POS_BIAS=rel_pos == "shared",
    )
    backbone = build_backbone(cfg).eval()
    image_hw = (224, 320)  # 14 x 20 tokens vs. the 14 x 14 pre-training grid
    with torch.no_grad():
        bottom = backbone.bottom_up(torch.randn(1, 3, *image_hw))
        pyramid = backbone(torch.randn(1, 3, *image_hw))
    _check_maps(bottom, backbone.bottom_up.output_shape(), image_hw, STRIDES)
    _check_maps(pyramid, backbone.output_shape(), image_hw, P_STRIDES)


def test_position_embedding_is_resampled_bicubically():
    encoder = BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="tiny", OUT_INDICES=[0, 1, 2, 3]), ShapeSpec(channels=3))
    x = torch.randn(1, 3, 224, 320)
    tokens, grid = encoder._embed(x)
    assert grid == (14, 20) and tokens.shape == (1, 1 + 14 * 20, 192)
    patches = encoder.patch_embed(x).flatten(1, 2)
    pos = encoder.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    pos = torch.nn.functional.interpolate(pos, size=(14, 20), mode="bicubic", align_corners=False)
    expected = patches + pos.flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens[:, 1:], expected)
    torch.testing.assert_close(tokens[:, 0], encoder.cls_token[:, 0] + encoder.pos_embed[:, 0])


def test_relative_position_bias_matches_beit_and_resizes():
    window, heads = (4, 5), 3
    ours = RelativePositionBias(window, heads)
    reference = TimmRelativePositionBias(window, heads)
    with torch.no_grad():
        ours.relative_position_bias_table.normal_()
        reference.relative_position_bias_table.copy_(ours.relative_position_bias_table)
    from dla_kd.modeling.backbone.beit import _relative_position_index

    torch.testing.assert_close(ours(window, _relative_position_index(window))[0], reference())
    grid = (6, 3)
    bias = ours(grid, _relative_position_index(grid))
    assert bias.shape == (1, heads, 6 * 3 + 1, 6 * 3 + 1)
    table = ours.relative_position_bias_table
    # cls rows/columns use the 3 extra entries unchanged
    torch.testing.assert_close(bias[0, :, 0, 0], table[-1])
    torch.testing.assert_close(bias[0, :, 0, 1:], table[-3][:, None].expand(heads, 18))
    torch.testing.assert_close(bias[0, :, 1:, 0], table[-2][:, None].expand(heads, 18))
    # zero offset (diagonal) is the interpolated table's centre for every token
    diagonal = bias[0, :, 1:, 1:].diagonal(dim1=-2, dim2=-1)
    assert torch.allclose(diagonal, diagonal[:, :1].expand_as(diagonal))


def test_layer_scale_switch():
    with_scale = BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="tiny", LAYER_SCALE_INIT=0.1), ShapeSpec(channels=3))
    torch.testing.assert_close(with_scale.blocks[0].gamma_1, torch.full((192,), 0.1))
    without = BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="tiny", LAYER_SCALE_INIT=0.0), ShapeSpec(channels=3))
    assert without.blocks[0].gamma_1 is None
    assert "blocks.0.gamma_1" not in without.state_dict()


def test_drop_path_rate_from_config():
    encoder = BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="tiny", DROP_PATH_RATE=0.2), ShapeSpec(channels=3))
    assert encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert isinstance(encoder.blocks[0].drop_path1, nn.Identity)  # linear from 0


@pytest.mark.parametrize("backbone_name", ["build_vit_fpn_backbone", "build_timm_fpn_backbone"])
def test_gradient_checkpointing_gives_same_output_and_gradients(backbone_name):
    if backbone_name == "build_vit_fpn_backbone":
        settings = dict(SIZE="tiny", DROP_PATH_RATE=0.0, USE_REL_POS_BIAS=True, ADAPTER_NORM="GN")
        key = "GRAD_CKPT"
    else:
        settings = dict(NAME="vit_tiny_patch16_224", OUT_INDICES=[2, 5, 8, 11], NORM="")
        key = "GRAD_CKPT"
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        cfg = _cfg(backbone_name, **settings, **{key: ckpt})
        if backbone_name == "build_timm_fpn_backbone":
            cfg.MODEL.VIT.ADAPTER_NORM = "GN"  # no batch statistics: train-mode outputs are comparable
        backbone = build_backbone(cfg).train()
        torch.manual_seed(1)
        x = torch.randn(2, 3, 64, 96)
        out = backbone(x)
        sum(v.sum() for v in out.values()).backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    (out_a, grad_a), (out_b, grad_b) = results
    for name in out_a:
        torch.testing.assert_close(out_a[name], out_b[name])
    assert set(grad_a) == set(grad_b) and len(grad_a) > 10
    for name in grad_a:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,channels",
    [
        ("resnet18", {"stride4": 64, "stride8": 128, "stride16": 256, "stride32": 512}),
        ("mobilenetv3_large_100", {"stride4": 24, "stride8": 40, "stride16": 112, "stride32": 960}),
        ("vit_tiny_patch16_224", {k: 192 for k in STRIDES}),
    ],
)
def test_timm_shapes_per_stride(name, channels):
    backbone = build_backbone(_cfg("build_timm_fpn_backbone", NAME=name, NORM="BN")).eval()
    image_hw = (224, 320)
    with torch.no_grad():
        bottom = backbone.bottom_up(torch.randn(1, 3, *image_hw))
        pyramid = backbone(torch.randn(1, 3, *image_hw))
    shapes = backbone.bottom_up.output_shape()
    _check_maps(bottom, shapes, image_hw, STRIDES)
    assert {k: v.channels for k, v in shapes.items()} == channels
    _check_maps(pyramid, backbone.output_shape(), image_hw, P_STRIDES)
    assert backbone.bottom_up.size_divisibility == 32


def test_timm_vit_uses_the_dit_adapter_and_dit_blocks():
    bottom = build_backbone(_cfg("build_timm_fpn_backbone", NAME="deit_small_patch16_224", NORM="")).bottom_up
    assert type(bottom).__name__ == "ViTAdapterBackbone"
    assert isinstance(bottom.adapter, MultiScaleAdapter)
    assert list(bottom.encoder.body.out_indices) == [3, 5, 7, 11]  # DiT's choice when OUT_INDICES is empty
    assert len(bottom.encoder.body.model.blocks) == 12


def test_timm_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown timm model 'resnet_does_not_exist'"):
        create_timm_features("resnet_does_not_exist")
    with pytest.raises(ValueError, match=r"out of range for timm model 'resnet18'.*feature levels \[0, 1, 2, 3, 4\]"):
        create_timm_features("resnet18", out_indices=[1, 2, 3, 9])
    with pytest.raises(ValueError, match=r"out of range for timm model 'vit_tiny_patch16_224', which has 12 blocks"):
        create_timm_features("vit_tiny_patch16_224", out_indices=[3, 5, 7, 12])
    with pytest.raises(ValueError, match="4 increasing block indices"):
        create_timm_features("vit_tiny_patch16_224", out_indices=[5, 3, 7, 11])
    with pytest.raises(ValueError, match="MODEL.TIMM.NORM 'IN'"):
        convert_batchnorm(nn.BatchNorm2d(4), "IN")
    with pytest.raises(ValueError, match="MODEL.VIT.OUT_INDICES"):
        BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="tiny", OUT_INDICES=[3, 5, 7, 12]), ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="MODEL.VIT.SIZE 'huge'"):
        BeitEncoder(_cfg("build_vit_fpn_backbone", SIZE="huge"), ShapeSpec(channels=3))
    cfg = _cfg("build_timm_fpn_backbone", NAME="resnet18")
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(ValueError, match="does not output"):
        build_backbone(cfg)
    bottom = build_backbone(_cfg("build_vit_fpn_backbone", SIZE="tiny")).bottom_up
    with pytest.raises(ValueError, match="divisible by 32"):
        bottom(torch.randn(1, 3, 64, 80))


def test_frozen_batchnorm_keeps_activations_and_outputs():
    for name in ("resnet18", "mobilenetv3_large_100"):
        body = create_timm_features(name).eval()
        for m in body.modules():  # non-trivial statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            before = body(x)
            frozen = convert_batchnorm(body, "FrozenBN")
            after = frozen(x)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
        assert any(isinstance(m, (FrozenBatchNorm2d, FrozenBatchNormAct2d)) for m in frozen.modules())
        for a, b in zip(before, after):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in frozen.modules())  # mobilenet: BN+act kept


def test_frozen_batchnorm_act_folds_into_convs_on_export_and_keeps_gradients(tmp_path):
    import onnx

    body = convert_batchnorm(create_timm_features("mobilenetv3_small_100").eval(), "FrozenBN")
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNormAct2d)]
    for m in frozen:  # non-trivial statistics and affine terms
        m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    # where the input needs a gradient (a trainable stage), timm's arithmetic: same outputs, gradients flow
    grad_x = x.clone().requires_grad_()
    with torch.no_grad():
        expected = body(x)
    outputs = body(grad_x)
    for a, b in zip(outputs, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    sum(o.sum() for o in outputs).backward()
    assert grad_x.grad is not None and grad_x.grad.abs().sum() > 0
    assert all(m.weight.grad is None for m in frozen)  # buffers: frozen
    # exported: no BatchNormalization and no Mul reading a Conv's output (the norms are in the convs)
    path = str(tmp_path / "body.onnx")
    with torch.no_grad():  # as dla_kd.export traces
        torch.onnx.export(body, (x,), path, opset_version=17, do_constant_folding=True,
                          training=torch.onnx.TrainingMode.EVAL)
    graph = onnx.load(path).graph
    conv_outputs = {o for n in graph.node if n.op_type == "Conv" for o in n.output}
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "BatchNormalization"]
    # a conv output scaled or shifted by a constant is an unfolded norm (residual Adds read two tensors)
    assert not [n.name for n in graph.node
                if n.op_type in ("Mul", "Add") and set(n.input) & conv_outputs and set(n.input) & constants]
    assert len(frozen) > 20 and sum(n.op_type == "Conv" for n in graph.node) >= len(frozen)


def test_groupnorm_and_syncbn_conversion():
    gn = convert_batchnorm(create_timm_features("mobilenetv3_large_100"), "GN")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    norms = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert any(not isinstance(getattr(m, "act", nn.Identity()), nn.Identity) for m in norms)  # activation kept
    sync = convert_batchnorm(create_timm_features("resnet18"), "SyncBN")
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())


def test_timm_pretrained_file_loads_with_report(tmp_path):
    for name in ("resnet18", "vit_tiny_patch16_224"):
        full = timm.create_model(name, pretrained=False)
        path = str(tmp_path / f"{name}.pth")
        torch.save(full.state_dict(), path)
        body = create_timm_features(name)
        report = load_timm_checkpoint(body, path, name)
        assert not report.missing and not report.mismatched
        assert report.unexpected  # the classifier head, pruned from the features model
        loaded = body.state_dict()
        for key, value in full.state_dict().items():
            target = key if key in loaded else "model." + key
            if target in loaded:
                torch.testing.assert_close(loaded[target], value)
    torch.save({"something.else": torch.zeros(3)}, str(tmp_path / "wrong.pth"))
    with pytest.raises(ValueError, match="No key of checkpoint .*wrong.pth fits timm model 'resnet18'"):
        load_timm_checkpoint(create_timm_features("resnet18"), str(tmp_path / "wrong.pth"), "resnet18")


def test_pretrained_path_then_frozen_bn_through_config(tmp_path):
    full = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        full.bn1.running_mean.uniform_(-1, 1)
    path = str(tmp_path / "r18.pth")
    torch.save({"state_dict": full.state_dict()}, path)  # nested, as timm's train script saves
    bottom = build_backbone(
        _cfg("build_timm_fpn_backbone", NAME="resnet18", PRETRAINED_PATH=path, NORM="FrozenBN")
    ).bottom_up
    assert isinstance(bottom.body.bn1, FrozenBatchNorm2d)
    torch.testing.assert_close(bottom.body.bn1.running_mean, full.bn1.running_mean)
    torch.testing.assert_close(bottom.body.conv1.weight, full.conv1.weight)
