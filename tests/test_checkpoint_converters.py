"""Published checkpoint formats -> dla-kd models: DiT/BEiT (converter + tool) and MSRA R-50.pkl.

Key lists follow the published files: DiT pre-training (``dit-base-224-p16-500k-62d53a.pth``) as
HF transformers' ``convert_dit_unilm_to_pytorch.py`` loads it strictly (every key below, nothing
else), DiT detection models as unilm ``ditod`` names them, R-50.pkl as Detectron's MSRA ImageNet
blobs. Values are random; shapes are the published ones (or a tiny DiT with the same structure).
"""

import pickle

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

import dla_kd  # noqa: F401
from detectron2.modeling import build_model
from dla_kd.checkpoint import DLACheckpointer
from dla_kd.checkpoint.converters import convert_beit_state_dict, convert_dit_checkpoint, map_beit_key
from dla_kd.engine import load_config

DIT_B = "configs/publaynet/mask_rcnn_DiT_B_FPN.yaml"
R_50 = "configs/publaynet/mask_rcnn_R_50_FPN_3x.yaml"
TINY = ["MODEL.VIT.SIZE", "tiny"]


def dit_pretraining_shapes(dim=768, depth=12, vocab=8192, grid=14):
    """Every key of unilm's DiT pre-training checkpoint (BEiT MIM model) with its shape."""
    shapes = {
        "cls_token": (1, 1, dim),
        "mask_token": (1, 1, dim),
        "pos_embed": (1, grid * grid + 1, dim),
        "patch_embed.proj.weight": (dim, 3, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
        "lm_head.weight": (vocab, dim),
        "lm_head.bias": (vocab,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update(
            {
                p + "norm1.weight": (dim,),
                p + "norm1.bias": (dim,),
                p + "attn.qkv.weight": (3 * dim, dim),
                p + "attn.q_bias": (dim,),
                p + "attn.v_bias": (dim,),
                p + "attn.proj.weight": (dim, dim),
                p + "attn.proj.bias": (dim,),
                p + "norm2.weight": (dim,),
                p + "norm2.bias": (dim,),
                p + "mlp.fc1.weight": (4 * dim, dim),
                p + "mlp.fc1.bias": (4 * dim,),
                p + "mlp.fc2.weight": (dim, 4 * dim),
                p + "mlp.fc2.bias": (dim,),
                p + "gamma_1": (dim,),
                p + "gamma_2": (dim,),
            }
        )
    return shapes


def dit_detection_backbone_shapes(dim=768, depth=12):
    """Backbone keys of unilm's DiT layout detectors (``backbone.bottom_up.backbone.*``): the
    encoder without pre-training heads, plus the adapter fpn1 (deconv, BN, GELU, deconv), fpn2."""
    shapes = {
        k: v
        for k, v in dit_pretraining_shapes(dim, depth).items()
        if not k.startswith(("mask_token", "norm.", "lm_head"))
    }
    shapes.update(
        {
            "fpn1.0.weight": (dim, dim, 2, 2),
            "fpn1.0.bias": (dim,),
            "fpn1.1.weight": (dim,),
            "fpn1.1.bias": (dim,),
            "fpn1.1.running_mean": (dim,),
            "fpn1.1.running_var": (dim,),
            "fpn1.1.num_batches_tracked": (),
            "fpn1.3.weight": (dim, dim, 2, 2),
            "fpn1.3.bias": (dim,),
            "fpn2.0.weight": (dim, dim, 2, 2),
            "fpn2.0.bias": (dim,),
        }
    )
    return {"backbone.bottom_up.backbone." + k: v for k, v in shapes.items()}


def _random_state(shapes):
    torch.manual_seed(0)
    return {k: (torch.randn(s) if s else torch.tensor(7)) for k, s in shapes.items()}


def _meta_state(shapes):
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _model(config=DIT_B, opts=()):
    return build_model(load_config(config, ["MODEL.DEVICE", "cpu", *opts]))


@pytest.fixture(scope="module")
def dit_b_state():
    return _model().state_dict()


def test_published_dit_base_pretraining_keys_land_on_dit_b(dit_b_state):
    published = dit_pretraining_shapes()
    state, report = convert_beit_state_dict({"model": _meta_state(published)}, dit_b_state)
    assert report.dropped == sorted(["mask_token", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"])
    assert not report.unmapped and not report.reshaped
    assert report.converted["blocks.3.attn.q_bias"] == "backbone.bottom_up.encoder.blocks.3.attn.q_bias"
    assert report.converted["blocks.11.gamma_2"] == "backbone.bottom_up.encoder.blocks.11.gamma_2"
    assert report.converted["pos_embed"] == "backbone.bottom_up.encoder.pos_embed"
    assert report.converted["patch_embed.proj.weight"] == "backbone.bottom_up.encoder.patch_embed.proj.weight"
    assert len(state) == len(published) - 5
    for key, value in state.items():
        assert tuple(value.shape) == tuple(dit_b_state[key].shape), key
    # every encoder tensor of the model comes from the checkpoint; only the adapter is left at init
    encoder_keys = {k for k in dit_b_state if k.startswith("backbone.bottom_up.encoder.")}
    assert encoder_keys == set(state)
    assert report.missing and all(k.startswith("backbone.bottom_up.adapter.") for k in report.missing)


def test_published_dit_detection_keys_fill_the_whole_backbone(dit_b_state):
    published = dit_detection_backbone_shapes()
    heads = {k: tuple(v.shape) for k, v in dit_b_state.items() if not k.startswith("backbone.bottom_up.")}
    state, report = convert_beit_state_dict(_meta_state({**published, **heads}), dit_b_state)
    assert not report.missing and not report.unmapped and not report.dropped
    assert (
        report.converted["backbone.bottom_up.backbone.fpn1.3.weight"]
        == "backbone.bottom_up.adapter.branches.stride4.3.weight"
    )
    assert (
        report.converted["backbone.bottom_up.backbone.fpn2.0.bias"]
        == "backbone.bottom_up.adapter.branches.stride8.0.bias"
    )
    assert set(state) == set(dit_b_state)
    for key, value in state.items():
        assert tuple(value.shape) == tuple(dit_b_state[key].shape), key


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"model": s},
        lambda s: {"model": {"encoder." + k: v for k, v in s.items()}},
        lambda s: {"state_dict": {"beit." + k: v for k, v in s.items()}},
    ],
    ids=["model", "encoder-prefix", "beit-prefix-state_dict"],
)
def test_dit_pretraining_file_loads_through_checkpointer(tmp_path, wrap):
    published = _random_state(dit_pretraining_shapes(dim=192, depth=12, vocab=100))
    path = str(tmp_path / "dit-tiny.pth")
    torch.save(wrap(published), path)
    model = _model(opts=TINY)
    DLACheckpointer(model).load(path)
    state = model.state_dict()
    for key, value in published.items():
        known, name = map_beit_key(key)
        assert known
        if name is not None:
            torch.testing.assert_close(state["backbone.bottom_up." + name], value)


def test_shared_table_copied_per_block_and_shapes_resized():
    shapes = dit_pretraining_shapes(dim=192, depth=12, vocab=10)
    shapes["rel_pos_bias.relative_position_bias_table"] = (27 * 27 + 3, 3)  # BEiT: shared, 14x14 window
    ckpt = _random_state(shapes)
    opts = TINY + ["MODEL.VIT.USE_REL_POS_BIAS", "True", "MODEL.VIT.IMG_SIZE", "[128, 128]"]  # 8x8 grid
    model = _model(opts=opts)
    out = convert_dit_checkpoint(model.state_dict(), {"model": ckpt})
    table = "backbone.bottom_up.encoder.rel_pos_bias.{}.relative_position_bias_table"
    for i in range(12):
        assert out[table.format(i)].shape == (15 * 15 + 3, 3)
        torch.testing.assert_close(out[table.format(i)], out[table.format(0)])
        torch.testing.assert_close(out[table.format(i)][-3:], ckpt["rel_pos_bias.relative_position_bias_table"][-3:])
    expected_pos = resample_abs_pos_embed(ckpt["pos_embed"], new_size=[8, 8], num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(out["backbone.bottom_up.encoder.pos_embed"], expected_pos)
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not [k for k in missing if k.startswith("backbone.bottom_up.encoder.")]
    assert not unexpected


def test_dit_detection_checkpoint_loads_into_full_model(tmp_path):
    reference = _model(opts=TINY)
    torch.manual_seed(3)
    for p in reference.parameters():
        p.data.normal_()
    ours = reference.state_dict()
    backbone = _random_state(dit_detection_backbone_shapes(dim=192, depth=12))
    heads = {k: v for k, v in ours.items() if not k.startswith("backbone.bottom_up.")}
    path = str(tmp_path / "publaynet_dit-t_mrcnn.pth")
    torch.save({"model": {**backbone, **heads}}, path)
    model = _model(opts=TINY)
    DLACheckpointer(model).load(path)
    state = model.state_dict()
    for key, value in heads.items():
        torch.testing.assert_close(state[key], value)
    torch.testing.assert_close(
        state["backbone.bottom_up.adapter.branches.stride4.1.running_var"],
        backbone["backbone.bottom_up.backbone.fpn1.1.running_var"],
    )
    torch.testing.assert_close(
        state["backbone.bottom_up.encoder.blocks.7.attn.qkv.weight"],
        backbone["backbone.bottom_up.backbone.blocks.7.attn.qkv.weight"],
    )


def test_convert_tool_writes_detectron2_checkpoint(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_dit_to_d2", "tools/convert_dit_to_d2.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    published = _random_state(dit_pretraining_shapes(dim=192, depth=12, vocab=10))
    src, dst = str(tmp_path / "dit.pth"), str(tmp_path / "dit_d2.pth")
    torch.save({"model": published}, src)
    assert tool.main([src, dst, "--config-file", DIT_B, "--opts", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "Dropped" in printed and "lm_head.weight" in printed and "Missing backbone keys" in printed
    converted = torch.load(dst)["model"]
    assert converted["backbone.bottom_up.encoder.blocks.2.gamma_1"].equal(published["blocks.2.gamma_1"])
    model = _model(opts=TINY)
    assert convert_dit_checkpoint(model.state_dict(), converted) is None  # already dla-kd's names
    DLACheckpointer(model).load(dst)
    torch.testing.assert_close(model.backbone.bottom_up.encoder.cls_token, published["cls_token"])


def test_converter_only_takes_beit_checkpoints_for_vit_models(dit_b_state):
    r50_state = _model(R_50).state_dict()
    dit_ckpt = _meta_state(dit_pretraining_shapes())
    assert convert_dit_checkpoint(r50_state, dit_ckpt) is None  # no dla-kd ViT in the model
    assert (
        convert_dit_checkpoint(dit_b_state, {"model": {"backbone.bottom_up.res2.0.conv1.weight": torch.zeros(1)}})
        is None
    )
    with pytest.raises(ValueError, match="No key of the BEiT/DiT checkpoint fits the model"):
        convert_beit_state_dict(dit_ckpt, r50_state)
    with pytest.raises(ValueError, match="Not a BEiT/DiT checkpoint"):
        convert_beit_state_dict({"conv1.weight": torch.zeros(1)})


def test_converter_finds_the_detector_inside_a_distillation_model(dit_b_state):
    student = {"student." + k: v for k, v in dit_b_state.items()}
    out = convert_dit_checkpoint(student, _meta_state(dit_pretraining_shapes()))
    # keys stay relative to the detector: DLACheckpointer adds the student prefix
    assert "backbone.bottom_up.encoder.blocks.0.attn.qkv.weight" in out
    assert not any(k.startswith("student.") for k in out)


def msra_r50_blobs():
    """Detectron's ImageNet MSRA R-50.pkl blob names and shapes (conv weights, affine BN s/b)."""
    rng = np.random.default_rng(0)
    blobs = {
        "conv1_w": (64, 3, 7, 7),
        "conv1_b": (64,),
        "res_conv1_bn_s": (64,),
        "res_conv1_bn_b": (64,),
        "fc1000_w": (1000, 2048),
        "fc1000_b": (1000,),
    }
    in_ch, bottleneck = 64, 64
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        out_ch = bottleneck * 4
        for i in range(blocks):
            p = f"res{stage}_{i}_"
            if i == 0:
                blobs.update(
                    {
                        p + "branch1_w": (out_ch, in_ch, 1, 1),
                        p + "branch1_bn_s": (out_ch,),
                        p + "branch1_bn_b": (out_ch,),
                    }
                )
            for branch, shape in (
                ("2a", (bottleneck, in_ch if i == 0 else out_ch, 1, 1)),
                ("2b", (bottleneck, bottleneck, 3, 3)),
                ("2c", (out_ch, bottleneck, 1, 1)),
            ):
                blobs.update(
                    {
                        p + f"branch{branch}_w": shape,
                        p + f"branch{branch}_bn_s": shape[:1],
                        p + f"branch{branch}_bn_b": shape[:1],
                    }
                )
        in_ch, bottleneck = out_ch, bottleneck * 2
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in blobs.items()}


def _d2_resnet_name(c2: str) -> str:
    """The Detectron2 name a MSRA blob must land on (written out independently of Detectron2's heuristics)."""
    if c2 == "conv1_w":
        return "stem.conv1.weight"
    if c2.startswith("res_conv1_bn_"):
        return "stem.conv1.norm." + {"s": "weight", "b": "bias"}[c2[-1]]
    stage, block, branch = c2.split("_")[:3]
    conv = {"branch1": "shortcut", "branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}[branch]
    suffix = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias"}[c2.split(branch + "_")[1]]
    return f"{stage}.{block}.{conv}.{suffix}"


def test_msra_r50_pkl_fills_every_backbone_weight(tmp_path):
    blobs = msra_r50_blobs()
    path = str(tmp_path / "R-50.pkl")
    with open(path, "wb") as f:
        pickle.dump(blobs, f)
    model = _model(R_50)
    DLACheckpointer(model).load(path)
    bottom_up = model.backbone.bottom_up.state_dict()
    expected = {_d2_resnet_name(k): v for k, v in blobs.items() if not k.startswith(("fc1000", "conv1_b"))}
    # every learnable backbone tensor (conv weights, FrozenBN scale/shift) comes from the file
    learnable = {k for k in bottom_up if not k.endswith(("running_mean", "running_var"))}
    assert learnable == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(bottom_up[key].numpy(), value, err_msg=key)
