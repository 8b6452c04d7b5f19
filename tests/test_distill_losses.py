"""Distillation losses (dla_kd.distill.losses) against independent hand / numpy / loop references,
their zeros when student == teacher, their gradients (student and module parameters yes, teacher
never) and their empty-input behaviour (a zero still connected to the student's graph)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dla_kd.distill.losses import (
    ABF,
    ChannelAdapter,
    FGDLoss,
    MGDLoss,
    ReviewKDFusion,
    SimKDProjector,
    box_cell_ranges,
    box_delta_l2_loss,
    box_giou_loss,
    box_l1_loss,
    box_masks,
    crosskd_box_loss,
    build_adapter,
    cwd_loss,
    decoupled_mean,
    defeat_adapter,
    defeat_box_levels,
    defeat_feature_loss,
    defeat_fg_masks,
    fitnet_loss,
    hcl_loss,
    kd_loss,
    kd_quality_focal_loss,
    logit_mse_loss,
    mask_logit_kd_loss,
    mgd_random_mask,
    pkd_loss,
)

torch.set_default_dtype(torch.float32)


def _pair(shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g) * scale).requires_grad_(True)
    t = (torch.randn(shape, generator=g) * scale).requires_grad_(True)
    return s, t


def _np(x):
    return x.detach().double().numpy()


def _assert_student_only(loss, s, t, params=()):
    """Backward: the student (and the given module parameters) get a nonzero gradient, the teacher
    (requires_grad=True on purpose) gets none."""
    loss.backward()
    assert t.grad is None, "gradient reached the teacher"
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    for name, p in params:
        assert p.grad is not None, f"no gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"


# --------------------------------------------------------------------------------------------
# adapters / FitNets
# --------------------------------------------------------------------------------------------
def test_adapter_identity_and_conv_shapes():
    assert isinstance(build_adapter(8, 8), nn.Identity)
    same = ChannelAdapter(8, 8)
    assert same.is_identity and len(list(same.parameters())) == 0
    x = torch.randn(2, 8, 5, 7)
    assert same(x) is x
    ad = build_adapter(4, 8)
    assert isinstance(ad, ChannelAdapter) and not ad.is_identity
    assert ad(torch.randn(2, 4, 5, 7)).shape == (2, 8, 5, 7)


def test_fitnet_matches_numpy_and_gradients():
    s, t = _pair((2, 3, 4, 5))
    loss = fitnet_loss(s, t)
    ref = np.mean((_np(s) - _np(t)) ** 2)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    assert fitnet_loss(t.detach().clone(), t).item() == 0.0
    _assert_student_only(loss, s, t)


def test_fitnet_with_adapter_trains_adapter_only_on_student_side():
    ad = build_adapter(3, 5)
    s, _ = _pair((2, 3, 4, 4), seed=1)
    _, t = _pair((2, 5, 4, 4), seed=2)
    loss = fitnet_loss(ad(s), t)
    _assert_student_only(loss, s, t, params=list(ad.named_parameters()))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        fitnet_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))


# --------------------------------------------------------------------------------------------
# PKD
# --------------------------------------------------------------------------------------------
def _pkd_reference(s, t):
    def norm(x):
        n, c, h, w = x.shape
        out = np.empty_like(x)
        for ch in range(c):
            v = x[:, ch]
            mean = v.mean()
            std = v.std(ddof=1)  # torch.std default: unbiased
            out[:, ch] = (v - mean) / (std + 1e-6)
        return out

    return np.mean((norm(s) - norm(t)) ** 2) / 2


def test_pkd_matches_reference():
    s, t = _pair((2, 3, 4, 5), seed=3, scale=3.0)
    loss = pkd_loss(s, t)
    assert loss.item() == pytest.approx(_pkd_reference(_np(s), _np(t)), rel=1e-5)
    _assert_student_only(loss, s, t)


def test_pkd_is_invariant_to_per_channel_affine_maps():
    _, t = _pair((2, 3, 4, 5), seed=4)
    scale = torch.tensor([2.0, 0.5, 7.0]).view(1, 3, 1, 1)
    shift = torch.tensor([-1.0, 3.0, 10.0]).view(1, 3, 1, 1)
    s = t.detach() * scale + shift
    assert pkd_loss(s, t).item() == pytest.approx(0.0, abs=1e-8)
    assert pkd_loss(t.detach().clone(), t).item() == pytest.approx(0.0, abs=1e-10)
    # ...but not to a sign flip (anti-correlation: loss = (1 - (-1)) = 2 up to the ddof factor).
    n = 2 * 4 * 5
    assert pkd_loss(-t.detach(), t).item() == pytest.approx(2 * (n - 1) / n, rel=1e-4)


# --------------------------------------------------------------------------------------------
# CWD
# --------------------------------------------------------------------------------------------
def test_cwd_matches_explicit_loops():
    s, t = _pair((2, 3, 2, 3), seed=5)
    tau = 2.0
    S, T = _np(s), _np(t)
    n, c, h, w = S.shape
    total = 0.0
    for i in range(n):
        for j in range(c):
            xs = [S[i, j].flat[k] / tau for k in range(h * w)]
            xt = [T[i, j].flat[k] / tau for k in range(h * w)]
            zs = sum(math.exp(v) for v in xs)
            zt = sum(math.exp(v) for v in xt)
            for k in range(h * w):
                pt = math.exp(xt[k]) / zt
                ps = math.exp(xs[k]) / zs
                total += pt * math.log(pt / ps)
    ref = total * tau**2 / (n * c)
    loss = cwd_loss(s, t, tau=tau)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert cwd_loss(t.detach().clone(), t, tau=tau).item() == pytest.approx(0.0, abs=1e-6)
    _assert_student_only(loss, s, t)


# --------------------------------------------------------------------------------------------
# box masks
# --------------------------------------------------------------------------------------------
def _cells_reference(box, feature_hw, stride, image_hw):
    h, w = feature_hw
    x1, y1, x2, y2 = [float(v) for v in box]
    x1, x2 = min(max(x1, 0.0), image_hw[1]), min(max(x2, 0.0), image_hw[1])
    y1, y2 = min(max(y1, 0.0), image_hw[0]), min(max(y2, 0.0), image_hw[0])
    xl = math.floor(x1 / stride)
    yl = math.floor(y1 / stride)
    xh = max(math.ceil(x2 / stride) - 1, xl)
    yh = max(math.ceil(y2 / stride) - 1, yl)
    clamp = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return clamp(xl, w - 1), clamp(xh, w - 1), clamp(yl, h - 1), clamp(yh, h - 1)


def _box_masks_reference(boxes_per_image, image_hw, feature_hw, stride):
    h, w = feature_hw
    n = len(boxes_per_image)
    fg = np.zeros((n, h, w))
    for i, boxes in enumerate(boxes_per_image):
        for box in boxes.tolist():
            xl, xh, yl, yh = _cells_reference(box, feature_hw, stride, image_hw)
            area = (xh - xl + 1) * (yh - yl + 1)
            for y in range(yl, yh + 1):
                for x in range(xl, xh + 1):
                    fg[i, y, x] = max(fg[i, y, x], 1.0 / area)
    bg = np.zeros((n, h, w))
    for i in range(n):
        num_bg = int((fg[i] == 0).sum())
        if num_bg:
            bg[i][fg[i] == 0] = 1.0 / num_bg
    return fg > 0, fg, bg


def test_box_masks_hand_example():
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 40.0, 30.0]]), torch.zeros(0, 4)]
    m = box_masks(boxes, (64, 64), (16, 16), stride=4)
    assert m.fg_mask.shape == m.fg_weight.shape == m.bg_weight.shape == (2, 16, 16)
    assert m.fg_mask.dtype == torch.bool
    # box 1: x, y cells 0..ceil(10/4)-1 = 0..2 -> 9 cells; box 2: x 1..9, y 1..7 -> 63 cells
    assert m.fg_weight[0, 0, 0].item() == pytest.approx(1 / 9)
    assert m.fg_weight[0, 2, 2].item() == pytest.approx(1 / 9)  # overlap: max(1/9, 1/63)
    assert m.fg_weight[0, 7, 9].item() == pytest.approx(1 / 63)
    assert m.fg_weight[0, 8, 9].item() == 0.0 and m.fg_weight[0, 7, 10].item() == 0.0
    assert int(m.fg_mask[0].sum()) == 9 + 63 - 4
    assert m.bg_weight[0, 15, 15].item() == pytest.approx(1 / (256 - 68))
    # an image without boxes is all background
    assert not m.fg_mask[1].any()
    assert torch.allclose(m.bg_weight[1], torch.full((16, 16), 1 / 256))


def test_box_cell_ranges_match_loop_reference():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(200, 4, generator=g) * 300 - 20
    boxes = torch.cat(
        [torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1
    )
    boxes = torch.cat([boxes, torch.tensor([[8.0, 8.0, 8.0, 8.0], [0.0, 0.0, 256.0, 200.0]])])
    ranges = box_cell_ranges(boxes, (25, 32), 8, image_hw=(200, 256))
    for k, box in enumerate(boxes.tolist()):
        assert tuple(int(r[k]) for r in ranges) == _cells_reference(box, (25, 32), 8, (200, 256))
    # a degenerate box still covers one cell; the full-image box covers every cell
    assert tuple(int(r[-2]) for r in ranges) == (1, 1, 1, 1)
    assert tuple(int(r[-1]) for r in ranges) == (0, 31, 0, 24)


@pytest.mark.parametrize(
    "stride,feature_hw", [(4, (50, 40)), (8, (25, 20)), (64, (4, 3)), (16, (13, 10))]
)
def test_box_masks_match_loop_reference_on_random_boxes(stride, feature_hw):
    image_hw = (200, 160)  # padded image; (13, 10) at stride 16 mimics a ceil-rounded level
    g = torch.Generator().manual_seed(stride)
    boxes_per_image = []
    for count in (30, 0, 7):
        xy = torch.rand(count, 2, generator=g) * torch.tensor([160.0, 200.0])
        wh = torch.rand(count, 2, generator=g) * torch.tensor([80.0, 60.0])
        b = torch.cat([xy, xy + wh], dim=1)  # some extend past the image border
        boxes_per_image.append(b)
    # boxes touching every border, overlapping, tiny and exactly grid-aligned
    boxes_per_image[2] = torch.cat(
        [
            boxes_per_image[2],
            torch.tensor(
                [
                    [0.0, 0.0, 160.0, 3.0],
                    [157.0, 0.0, 160.0, 200.0],
                    [0.0, 190.0, 40.0, 200.0],
                    [16.0, 16.0, 32.0, 32.0],
                    [17.0, 17.0, 18.0, 18.0],
                    [-10.0, -10.0, 500.0, 500.0],
                ]
            ),
        ]
    )
    m = box_masks(boxes_per_image, image_hw, feature_hw, stride)
    fg_ref, fgw_ref, bgw_ref = _box_masks_reference(boxes_per_image, image_hw, feature_hw, stride)
    assert np.array_equal(m.fg_mask.numpy(), fg_ref)
    assert np.allclose(m.fg_weight.double().numpy(), fgw_ref, rtol=1e-6, atol=0)
    assert np.allclose(m.bg_weight.double().numpy(), bgw_ref, rtol=1e-6, atol=0)


def test_box_masks_chunking_and_boxes_objects(monkeypatch):
    from detectron2.structures import Boxes

    import dla_kd.distill.losses.gt_masks as bm

    g = torch.Generator().manual_seed(3)
    xy = torch.rand(40, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 1 + torch.rand(40, 2, generator=g) * 30], dim=1)
    full = box_masks([boxes[:25], boxes[25:]], (128, 128), (32, 32), 4)
    monkeypatch.setattr(bm, "_CHUNK_ELEMS", 32 * 32 * 3)  # 3 boxes per chunk
    chunked = box_masks([Boxes(boxes[:25]), Boxes(boxes[25:])], (128, 128), (32, 32), 4)
    for a, b in zip(full, chunked):
        assert torch.equal(a, b)


def test_box_masks_no_background():
    m = box_masks([torch.tensor([[0.0, 0.0, 32.0, 32.0]])], (32, 32), (4, 4), 8)
    assert m.fg_mask.all() and (m.bg_weight == 0).all()
    assert torch.allclose(m.fg_weight, torch.full((1, 4, 4), 1 / 16))


# --------------------------------------------------------------------------------------------
# DeFeat
# --------------------------------------------------------------------------------------------
def test_defeat_matches_loop_reference():
    s, t = _pair((2, 3, 4, 5), seed=6)
    g = torch.Generator().manual_seed(1)
    fg = torch.rand(2, 4, 5, generator=g) > 0.6
    loss = defeat_feature_loss(s, t, fg, fg_weight=3.0, bg_weight=12.0)
    S, T, M = _np(s), _np(t), fg.numpy()
    fg_sum = bg_sum = 0.0
    n_fg = n_bg = 0
    for i in range(2):
        for y in range(4):
            for x in range(5):
                sq = sum((S[i, c, y, x] - T[i, c, y, x]) ** 2 for c in range(3))
                if M[i, y, x]:
                    fg_sum, n_fg = fg_sum + sq, n_fg + 1
                else:
                    bg_sum, n_bg = bg_sum + sq, n_bg + 1
    # DeFeat's norms: 2 x (mask cells repeated over the C channels)
    ref = 3.0 * fg_sum / (2 * 3 * n_fg) + 12.0 * bg_sum / (2 * 3 * n_bg)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    # float masks behave like bool masks
    assert defeat_feature_loss(s, t, fg.float(), 3.0, 12.0).item() == pytest.approx(ref, rel=1e-6)
    assert defeat_feature_loss(t.detach().clone(), t, fg, 3.0, 12.0).item() == 0.0
    _assert_student_only(loss, s, t)


def test_defeat_empty_foreground_is_background_term_only():
    s, t = _pair((1, 2, 3, 3), seed=7)
    none = torch.zeros(1, 3, 3, dtype=torch.bool)
    loss = defeat_feature_loss(s, t, none)  # defaults: the reference's 3 / 12
    assert loss.item() == pytest.approx(12.0 * np.mean((_np(s) - _np(t)) ** 2) / 2, rel=1e-6)
    allfg = torch.ones(1, 3, 3, dtype=torch.bool)
    loss2 = defeat_feature_loss(s, t, allfg)
    assert loss2.item() == pytest.approx(3.0 * np.mean((_np(s) - _np(t)) ** 2) / 2, rel=1e-6)
    _assert_student_only(loss + loss2, s, t)


def _defeat_reference(s_adapted, t_feats, gt_bboxes, strides, fg_w=3.0, bg_w=12.0):
    """ggjy/DeFeat.pytorch transcribed: ``_map_roi_levels`` + ``get_gt_mask``
    (mmdet/models/dense_heads/anchor_head.py) and the neck-decouple pixel-wise branch of
    ``batch_processor_kd`` (mmdet/apis/train.py). Returns (loss, per-level (N, H, W) masks)."""
    num_levels = len(s_adapted)
    featmap_sizes = [f.shape[-2:] for f in s_adapted]
    mask_batch = []
    for rois in gt_bboxes:
        scale = torch.sqrt((rois[:, 2] - rois[:, 0] + 1) * (rois[:, 3] - rois[:, 1] + 1))
        target_lvls = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=num_levels - 1).long()
        mask_level = []
        for level in range(num_levels):
            gt_level = rois[target_lvls == level]
            h, w = featmap_sizes[level]
            mask_per_img = torch.zeros([h, w], dtype=torch.double)
            for ins in range(gt_level.shape[0]):
                g = gt_level[ins] / strides[level]
                lx, rx = max(int(g[0]), 0), min(int(g[2]), w)
                ly, ry = max(int(g[1]), 0), min(int(g[3]), h)
                if (lx == rx) or (ly == ry):
                    mask_per_img[ly, lx] += 1
                else:
                    mask_per_img[ly:ry, lx:rx] += 1
            mask_level.append((mask_per_img > 0).double())
        mask_batch.append(mask_level)
    masks = [torch.stack([m[level] for m in mask_batch]) for level in range(num_levels)]
    fg = bg = 0.0
    for i, mask in enumerate(masks):
        s, t = s_adapted[i].detach().double(), t_feats[i].detach().double()
        mask_hint = mask.unsqueeze(1).repeat(1, s.size(1), 1, 1)
        norms = max(1.0, mask_hint.sum() * 2)
        norms_back = max(1.0, (1 - mask_hint).sum() * 2)
        bg = bg + (torch.pow(s - t, 2) * (1 - mask_hint)).sum() / norms_back
        fg = fg + (torch.pow(s - t, 2) * mask_hint).sum() / norms
    return float(fg / num_levels * fg_w + bg / num_levels * bg_w), masks


DEFEAT_NAMES = ["p2", "p3", "p4", "p5", "p6"]
DEFEAT_STRIDES = [4, 8, 16, 32, 64]


def _defeat_distiller(channels=4, adapter="conv3x3"):
    from dla_kd.distill.distillers.levels import FeatureLevels
    from dla_kd.distill.distillers.region import DeFeatDistiller

    levels = FeatureLevels(
        list(DEFEAT_NAMES), {n: channels for n in DEFEAT_NAMES}, {n: channels for n in DEFEAT_NAMES},
        dict(zip(DEFEAT_NAMES, DEFEAT_STRIDES)),
    )
    return DeFeatDistiller(levels=levels, fg_weight=3.0, bg_weight=12.0, adapter=adapter)


def _defeat_boxes(image_hw, seed):
    """Random boxes of every scale (every level gets some), plus border, tiny and degenerate ones."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = torch.exp(torch.rand(14, 2, generator=g) * math.log(1000.0 / 6)) * 6  # 6..1000 px
    size = torch.minimum(size, torch.tensor([w - 1.0, h - 1.0]))
    xy = torch.rand(14, 2, generator=g) * (torch.tensor([w, h]) - size)
    boxes = torch.cat([xy, xy + size], dim=1)
    hand = torch.tensor([
        [0.0, 0.0, 1100.0, 900.0],  # scale ~996: the coarsest level
        [200.0, 150.0, 800.0, 700.0],  # scale ~575: p5
        [100.0, 100.0, 100.0, 180.0],  # zero width: one cell
        [3.0, 3.0, 5.0, 5.0],
        [w - 30.0, h - 20.0, float(w), float(h)],  # touches the bottom-right corner
        [64.0, 64.0, 128.0, 128.0],  # grid-aligned
    ])
    return torch.cat([boxes, hand])


def test_defeat_distiller_matches_reference_transcription():
    from detectron2.structures import Boxes, Instances

    from dla_kd.distill.base import DistillContext

    image_hw = (960, 1152)
    torch.manual_seed(0)
    distiller = _defeat_distiller()
    boxes = [_defeat_boxes(image_hw, 1), _defeat_boxes(image_hw, 2)[:9]]
    assert set(defeat_box_levels(torch.cat(boxes), 5).tolist()) == {0, 1, 2, 3, 4}
    g = torch.Generator().manual_seed(3)
    shapes = [(2, 4, image_hw[0] // s, image_hw[1] // s) for s in DEFEAT_STRIDES]
    s_feats = {n: torch.randn(sh, generator=g).requires_grad_(True) for n, sh in zip(DEFEAT_NAMES, shapes)}
    t_feats = {n: torch.randn(sh, generator=g).requires_grad_(True) for n, sh in zip(DEFEAT_NAMES, shapes)}
    instances = []
    for b in boxes:
        inst = Instances(image_hw)
        inst.gt_boxes = Boxes(b)
        instances.append(inst)
    ctx = DistillContext(s_features=s_feats, t_features=t_feats, gt_instances=instances, image_shape=image_hw)
    loss = distiller(ctx)["loss_kd_defeat"]

    adapted = [distiller.adapters[n](s_feats[n]) for n in DEFEAT_NAMES]
    ref, ref_masks = _defeat_reference(adapted, [t_feats[n] for n in DEFEAT_NAMES], boxes, DEFEAT_STRIDES)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    masks = defeat_fg_masks(boxes, image_hw, [sh[-2:] for sh in shapes], DEFEAT_STRIDES)
    for mask, ref_mask in zip(masks, ref_masks):
        assert torch.equal(mask, ref_mask.bool())
    loss.backward()
    assert all(t.grad is None for t in t_feats.values())
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in s_feats.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.parameters())


@pytest.mark.parametrize(
    "size,level",
    [(50, 0), (110, 0), (111, 1), (150, 1), (222, 1), (223, 2), (300, 2), (600, 3), (1000, 4)],
)
def test_defeat_boxes_go_only_to_their_assigned_level(size, level):
    """``_map_roi_levels``: scale sqrt((w + 1) (h + 1)); < 112 px -> p2, < 224 -> p3, ..."""
    image_hw = (1024, 1024)
    box = torch.tensor([[8.0, 8.0, 8.0 + size, 8.0 + size]])
    assert defeat_box_levels(box, 5).tolist() == [level]
    masks = defeat_fg_masks([box], image_hw, [(1024 // s, 1024 // s) for s in DEFEAT_STRIDES], DEFEAT_STRIDES)
    assert [bool(m.any()) for m in masks] == [k == level for k in range(5)]
    stride = DEFEAT_STRIDES[level]
    side = int((8.0 + size) / stride) - int(8.0 / stride)  # cells int(x1/s) .. int(x2/s) - 1
    assert int(masks[level].sum()) == side * side


def test_defeat_box_levels_clamp_to_the_distilled_levels():
    boxes = torch.tensor([[0.0, 0.0, 1000.0, 1000.0], [0.0, 0.0, 10.0, 10.0]])
    assert defeat_box_levels(boxes, 3).tolist() == [2, 0]
    assert defeat_box_levels(torch.zeros(0, 4), 5).shape == (0,)


def test_defeat_adapter_is_a_near_zero_3x3_conv_even_for_equal_widths():
    torch.manual_seed(0)
    for adapter in _defeat_distiller(channels=64).adapters.values():
        assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (3, 3) and adapter.padding == (1, 1)
        assert adapter.bias is not None
        w = adapter.weight.detach()
        assert w.abs().max() < 2e-4 and 0.5e-4 < float(w.std()) < 1.1e-4  # N(0,1).fmod(2) * 1e-4
    conv = defeat_adapter(8, 16)
    assert conv.weight.shape == (16, 8, 3, 3)
    x = torch.randn(2, 8, 5, 6)
    assert conv(x).shape == (2, 16, 5, 6)
    # our variant: identity when the widths match
    assert all(isinstance(a, nn.Identity) for a in _defeat_distiller(adapter="channel").adapters.values())


# --------------------------------------------------------------------------------------------
# FGD
# --------------------------------------------------------------------------------------------
def _conv1x1(weight, bias, x):
    """x (N, Cin, H, W), weight (Cout, Cin, 1, 1) -> (N, Cout, H, W) in numpy."""
    out = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    return out + bias[None, :, None, None]


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _fgd_reference(m, S, T, fgw, bgw):
    """Straight re-derivation of the official FGD FeatureLoss in float64 numpy."""
    p = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    if m.align is not None:
        S = _conv1x1(p["align.weight"], p["align.bias"], S)
    n, c, h, w = T.shape
    temp = m.temperature

    def attention(x):
        sp = np.zeros((n, h, w))
        ch = np.zeros((n, c))
        for i in range(n):
            a = np.abs(x[i])
            sp[i] = (h * w * _softmax((a.mean(axis=0) / temp).ravel())).reshape(h, w)
            ch[i] = c * _softmax(a.mean(axis=(1, 2)) / temp)
        return sp, ch

    sp_t, ch_t = attention(T)
    sp_s, ch_s = attention(S)
    fg = bg = 0.0
    for i in range(n):
        for k in range(c):
            for y in range(h):
                for x in range(w):
                    d2 = (S[i, k, y, x] - T[i, k, y, x]) ** 2 * sp_t[i, y, x] * ch_t[i, k]
                    fg += d2 * fgw[i, y, x]
                    bg += d2 * bgw[i, y, x]
    fg, bg = fg / n, bg / n
    mask = np.abs(ch_s - ch_t).sum() / n + np.abs(sp_s - sp_t).sum() / n

    def context(x, pre):
        out = np.empty_like(x)
        for i in range(n):
            logits = _conv1x1(p[pre + "conv_mask.weight"], p[pre + "conv_mask.bias"], x[i : i + 1])[
                0, 0
            ]
            att = _softmax(logits.ravel())
            ctx = x[i].reshape(c, -1) @ att  # (C,)
            y1 = p[pre + "channel_add.0.weight"][:, :, 0, 0] @ ctx + p[pre + "channel_add.0.bias"]
            y1 = (y1 - y1.mean()) / np.sqrt(y1.var() + 1e-5)
            y1 = (
                y1 * p[pre + "channel_add.1.weight"][:, 0, 0]
                + p[pre + "channel_add.1.bias"][:, 0, 0]
            )
            y1 = np.maximum(y1, 0)
            y2 = p[pre + "channel_add.3.weight"][:, :, 0, 0] @ y1 + p[pre + "channel_add.3.bias"]
            out[i] = x[i] + y2[:, None, None]
        return out

    rela = ((context(S, "context_s.") - context(T, "context_t.")) ** 2).sum() / n
    return {
        "fg": m.alpha * fg,
        "bg": m.beta * bg,
        "mask": m.gamma * mask,
        "global": m.lambda_ * rela,
    }


def _perturb_context(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("context"):
                p.copy_(
                    torch.randn(p.shape, generator=g) * 0.5
                    + (1.0 if name.endswith("1.weight") else 0.0)
                )


@pytest.mark.parametrize("c_s", [4, 3])
def test_fgd_matches_reference(c_s):
    torch.manual_seed(0)
    m = FGDLoss(c_s, 4, temperature=0.5, alpha=2.0, beta=3.0, gamma=5.0, lambda_=7.0)
    assert (m.align is None) == (c_s == 4)
    _perturb_context(m, seed=11)  # non-trivial global term (the official init zeroes it)
    s, _ = _pair((2, c_s, 3, 5), seed=8)
    _, t = _pair((2, 4, 3, 5), seed=9)
    boxes = [
        torch.tensor([[0.0, 0.0, 8.0, 4.0], [4.0, 4.0, 12.0, 12.0]]),
        torch.tensor([[8.0, 0.0, 20.0, 12.0]]),
    ]
    masks = box_masks(boxes, (12, 20), (3, 5), 4)
    out = m(s, t, masks.fg_weight, masks.bg_weight)
    assert set(out) == {"fg", "bg", "mask", "global"}
    ref = _fgd_reference(
        m, _np(s), _np(t), masks.fg_weight.double().numpy(), masks.bg_weight.double().numpy()
    )
    for k in ref:
        assert out[k].item() == pytest.approx(ref[k], rel=1e-4), k
        assert out[k].item() > 0, k
    params = [(n, p) for n, p in m.named_parameters()]
    _assert_student_only(sum(out.values()), s, t, params=params)


def test_fgd_official_init_and_zero_for_equal_features():
    m = FGDLoss(8, 8)
    assert (m.alpha, m.beta, m.gamma, m.lambda_, m.temperature) == (5e-5, 2.5e-5, 5e-5, 5e-7, 0.5)
    for ctx in (m.context_s, m.context_t):
        assert (ctx.channel_add[-1].weight == 0).all() and (ctx.channel_add[-1].bias == 0).all()
        assert (ctx.conv_mask.bias == 0).all()
    _, t = _pair((2, 8, 4, 4), seed=10)
    masks = box_masks([torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * 2, (16, 16), (4, 4), 4)
    out = m(t.detach().clone(), t, masks.fg_weight, masks.bg_weight)
    for k, v in out.items():
        assert v.item() == pytest.approx(0.0, abs=1e-12), k


# --------------------------------------------------------------------------------------------
# MGD
# --------------------------------------------------------------------------------------------
def test_mgd_random_mask_uses_generator_and_ratio():
    a = mgd_random_mask(4, 32, 32, 0.45, generator=torch.Generator().manual_seed(5))
    b = mgd_random_mask(4, 32, 32, 0.45, generator=torch.Generator().manual_seed(5))
    c = mgd_random_mask(4, 32, 32, 0.45, generator=torch.Generator().manual_seed(6))
    assert a.shape == (4, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs((a == 0).float().mean().item() - 0.45) < 0.05
    torch.manual_seed(1)
    d = mgd_random_mask(2, 8, 8, 0.5)
    torch.manual_seed(1)
    assert torch.equal(d, mgd_random_mask(2, 8, 8, 0.5))  # follows the global seed


@pytest.mark.parametrize("c_s", [4, 3])
def test_mgd_matches_reference_with_fixed_generator(c_s):
    torch.manual_seed(0)
    m = MGDLoss(c_s, 4, mask_ratio=0.5, alpha=0.25)
    s, _ = _pair((2, c_s, 5, 6), seed=12)
    _, t = _pair((2, 4, 5, 6), seed=13)
    loss = m(s, t, generator=torch.Generator().manual_seed(42))
    # reference: same uniform draw, official threshold, explicit generation block
    rand = torch.rand((2, 1, 5, 6), generator=torch.Generator().manual_seed(42)).numpy()
    keep = np.where(rand > 1 - 0.5, 0.0, 1.0)
    assert 0 < keep.mean() < 1
    x = s.detach()
    if m.align is not None:
        x = F.conv2d(x, m.align.weight, m.align.bias)
    x = x * torch.from_numpy(keep).float()
    g0, g2 = m.generation[0], m.generation[2]
    x = F.conv2d(F.relu(F.conv2d(x, g0.weight, g0.bias, padding=1)), g2.weight, g2.bias, padding=1)
    ref = 0.25 * np.sum((_np(x) - _np(t)) ** 2) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # an explicit mask gives the same value
    again = m(s, t, mask=torch.from_numpy(keep).float())
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)
    _assert_student_only(loss, s, t, params=list(m.named_parameters()))


def test_mgd_defaults_are_two_stage_settings():
    m = MGDLoss(8, 8)
    assert m.align is None and (m.alpha, m.mask_ratio) == (5e-7, 0.45)


# --------------------------------------------------------------------------------------------
# ReviewKD
# --------------------------------------------------------------------------------------------
def _block_mean(x, k):
    n, c, h, w = x.shape
    return x.reshape(n, c, k, h // k, k, w // k).mean(axis=(3, 5))


def test_hcl_matches_reference():
    levels_s, levels_t = [], []
    for seed, (h, w) in enumerate([(8, 8), (4, 8), (2, 4), (1, 2)]):
        s, t = _pair((2, 3, h, w), seed=20 + seed)
        levels_s.append(s)
        levels_t.append(t)
    loss = hcl_loss(levels_s, levels_t)
    ref = 0.0
    for s, t in zip(levels_s, levels_t):
        S, T = _np(s), _np(t)
        h = S.shape[2]
        num = np.mean((S - T) ** 2)
        wsum, weight = 1.0, 1.0
        for k in (4, 2, 1):
            if k >= h:
                continue
            weight /= 2
            num += weight * np.mean((_block_mean(S, k) - _block_mean(T, k)) ** 2)
            wsum += weight
        ref += num / wsum
    # explicit weights for the (8, 8) level: (mse + mse4/2 + mse2/4 + mse1/8) / 1.875
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert hcl_loss([t.detach() for t in levels_t], levels_t).item() == 0.0
    loss.backward()
    assert all(t.grad is None for t in levels_t) and all(s.grad is not None for s in levels_s)


def test_hcl_level_weights_by_hand():
    # one 4x4 level where only the 1x1 pool differs: s - t = constant d everywhere
    t = torch.zeros(1, 1, 4, 4)
    s = torch.full((1, 1, 4, 4), 2.0)
    # pool sizes used: 2 (w 1/2) and 1 (w 1/4); all mses equal 4 -> (4 + 2 + 1) / 1.75 = 4
    assert hcl_loss([s], [t]).item() == pytest.approx(4.0)
    # a zero-mean difference vanishes under pooling: only the full-resolution term remains
    s2 = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 4).view(1, 1, 4, 4)
    assert hcl_loss([s2], [t]).item() == pytest.approx(1.0 / 1.75)


@pytest.mark.parametrize("norm", ["BN", "GN", ""])
def test_abf_fusion_formula(norm):
    torch.manual_seed(0)
    abf = ABF(3, 8, 5, fuse=True, norm=norm).eval()
    x = torch.randn(2, 3, 4, 6)
    res = torch.randn(2, 8, 2, 3)
    out, new_res = abf(x, res)
    assert out.shape == (2, 5, 4, 6) and new_res.shape == (2, 8, 4, 6)
    # manual: conv1 -> nearest upsample of the residual -> 2 sigmoid maps -> conv2
    x1 = abf.conv1(x)
    up = res.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    att = torch.sigmoid(
        F.conv2d(torch.cat([x1, up], 1), abf.att_conv[0].weight, abf.att_conv[0].bias)
    )
    fused = x1 * att[:, :1] + up * att[:, 1:]
    assert torch.allclose(new_res, fused, atol=1e-6)
    assert torch.allclose(out, abf.conv2(fused), atol=1e-6)
    # conv bias only without a norm
    assert (abf.conv1[0].bias is None) == bool(norm)


def test_reviewkd_fusion_order_and_gradients():
    torch.manual_seed(0)
    chans_s, chans_t = [3, 3, 3], [5, 5, 5]
    fusion = ReviewKDFusion(chans_s, 8, chans_t, norm="GN")
    assert [a.fuse for a in fusion.abfs] == [True, True, False]  # coarsest level: no fusion
    shapes = [(8, 12), (4, 6), (2, 3)]
    feats = [torch.randn(2, 3, h, w, requires_grad=True) for h, w in shapes]
    outs = fusion(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 5, h, w) for h, w in shapes]
    # information flows coarse -> fine only
    changed = [feats[0], feats[1], feats[2] + 1.0]
    outs2 = fusion(changed)
    assert not torch.allclose(outs[0], outs2[0]) and not torch.allclose(outs[1], outs2[1])
    changed = [feats[0] + 1.0, feats[1], feats[2]]
    outs3 = fusion(changed)
    assert torch.equal(outs[1], outs3[1]) and torch.equal(outs[2], outs3[2])
    teachers = [torch.randn(2, 5, h, w, requires_grad=True) for h, w in shapes]
    loss = hcl_loss(outs, teachers)
    loss.backward()
    assert all(t.grad is None for t in teachers)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reviewkd_fusion_bn_trains_on_small_batch():
    fusion = ReviewKDFusion([4, 4], 4, [4, 4], norm="BN")
    outs = fusion([torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)])
    assert outs[0].shape == (1, 4, 4, 4) and outs[1].shape == (1, 4, 2, 2)


# --------------------------------------------------------------------------------------------
# SimKD
# --------------------------------------------------------------------------------------------
def test_simkd_projector_structure_and_identity():
    ident = SimKDProjector(8, 8, factor=0)
    assert ident.is_identity and len(list(ident.parameters())) == 0
    assert SimKDProjector(8, 8, identity=True).is_identity
    with pytest.raises(ValueError):
        SimKDProjector(4, 8, factor=0)
    p = SimKDProjector(4, 8, factor=2, norm="BN")
    convs = [m for m in p.transfer if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (4, 4, (1, 1)),
        (4, 4, (3, 3)),
        (4, 8, (1, 1)),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in p.transfer) == 2
    assert not isinstance(p.transfer[-1], nn.ReLU)  # signed FPN targets: no final ReLU
    assert isinstance(p.transfer[-1], nn.BatchNorm2d)
    assert isinstance(SimKDProjector(4, 8, norm="GN").transfer[1], nn.GroupNorm)
    assert isinstance(SimKDProjector(4, 8, final_norm=False).transfer[-1], nn.Identity)


def test_simkd_projector_output_is_signed_and_trains():
    torch.manual_seed(0)
    p = SimKDProjector(4, 8, factor=2, norm="GN")
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    t = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = p(s)
    assert out.shape == (2, 8, 6, 6) and (out < 0).any()
    _assert_student_only(fitnet_loss(out, t), s, t, params=list(p.named_parameters()))
    x = torch.randn(2, 8, 3, 3)
    assert fitnet_loss(SimKDProjector(8, 8, factor=0)(x), x).item() == 0.0


# --------------------------------------------------------------------------------------------
# RoI logits
# --------------------------------------------------------------------------------------------
def _kl_by_hand(s_row, t_row, T):
    zs = sum(math.exp(v / T) for v in s_row)
    zt = sum(math.exp(v / T) for v in t_row)
    total = 0.0
    for a, b in zip(s_row, t_row):
        pt, ps = math.exp(b / T) / zt, math.exp(a / T) / zs
        total += pt * math.log(pt / ps)
    return total * T * T


def test_kd_loss_by_hand():
    s_rows = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
    t_rows = [[2.0, 0.0, 1.0], [0.5, 0.5, -2.0]]
    s = torch.tensor(s_rows, requires_grad=True)
    t = torch.tensor(t_rows, requires_grad=True)
    kl = [_kl_by_hand(a, b, 2.0) for a, b in zip(s_rows, t_rows)]
    loss = kd_loss(s, t, temperature=2.0)
    assert loss.item() == pytest.approx((kl[0] + kl[1]) / 2, rel=1e-6)
    pos = torch.tensor([True, False])
    assert kd_loss(s, t, 2.0, pos, 3.0, 0.5).item() == pytest.approx(3 * kl[0] + 0.5 * kl[1], rel=1e-6)
    assert kd_loss(t.detach().clone(), t, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    _assert_student_only(loss, s, t)


def test_logit_mse_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]], requires_grad=True)
    t = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, -2.0]], requires_grad=True)
    x0 = (1 + 4 + 0.25) / 3
    x1 = (2.25 + 0.25 + 25) / 3
    assert logit_mse_loss(s, t).item() == pytest.approx((x0 + x1) / 2, rel=1e-6)
    loss = logit_mse_loss(s, t, torch.tensor([True, False]), 2.0, 0.0)
    assert loss.item() == pytest.approx(2 * x0, rel=1e-6)
    assert logit_mse_loss(t.detach().clone(), t).item() == 0.0
    _assert_student_only(loss, s, t)


def _defeat_kl(s, t, mask, T):
    """DeFeat's ``KLDivergenceLoss`` with a mask (ggjy/DeFeat.pytorch, mmdet/apis/train.py)."""
    if mask.sum() == 0:
        return 0.0
    p = F.log_softmax(s / T, dim=1)[mask]
    q = F.softmax(t / T, dim=1)[mask]
    return (F.kl_div(p, q, reduction="none").sum() / mask.sum() * T**2).item()


def test_decoupled_mean_is_defeats_per_group_normalisation():
    """POS/NEG weights 1/1: the plain mean over all RoIs (vanilla KD, unchanged); any other
    pair: each group averaged over its own RoIs (DeFeat's KL-decouple; 2 fg + 5 bg RoIs here)."""
    s, t = _pair((7, 4), seed=40)
    pos = torch.tensor([True, False, False, True, False, False, False])
    plain = kd_loss(s, t, 2.0, pos, 1.0, 1.0)
    assert torch.equal(plain, kd_loss(s, t, 2.0))
    ref_plain = (F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="sum") * 4 / 7).item()
    assert plain.item() == pytest.approx(ref_plain, rel=1e-6)
    loss = kd_loss(s, t, 2.0, pos, 2.0, 0.5)
    ref = 2.0 * _defeat_kl(s, t, pos, 2.0) + 0.5 * _defeat_kl(s, t, ~pos, 2.0)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    # an empty group adds 0; the other keeps its own count
    no_pos = torch.zeros(7, dtype=torch.bool)
    assert kd_loss(s, t, 2.0, no_pos, 2.0, 2.0).item() == pytest.approx(2.0 * _defeat_kl(s, t, ~no_pos, 2.0), rel=1e-6)
    x = torch.tensor([1.0, 2.0, 3.0, 10.0])
    halves = torch.tensor([True, True, False, False])
    assert decoupled_mean(x, halves, 1.0, 2.0).item() == pytest.approx(1.5 + 2 * 6.5)
    assert decoupled_mean(x, halves).item() == pytest.approx(4.0)
    per_roi = (s - t).detach().pow(2).mean(1)
    assert logit_mse_loss(s, t, pos, 2.0, 0.5).item() == pytest.approx(
        (2.0 * per_roi[pos].mean() + 0.5 * per_roi[~pos].mean()).item(), rel=1e-6
    )
    _assert_student_only(loss, s, t)


# --------------------------------------------------------------------------------------------
# box / mask KD
# --------------------------------------------------------------------------------------------
def test_box_delta_l2_class_specific_and_agnostic():
    K = 3
    s = torch.arange(3 * 4 * K, dtype=torch.float32).view(3, 4 * K).requires_grad_(True)
    t = torch.zeros(3, 4 * K, requires_grad=True)
    classes = torch.tensor([2, 0, 3])  # RoI 2 is background (class K)
    fg = classes < K
    loss = box_delta_l2_loss(s, t, classes, K, fg)
    r0 = [8.0, 9.0, 10.0, 11.0]  # row 0 (offset 0), class 2 -> columns 8..11
    r1 = [12.0, 13.0, 14.0, 15.0]  # row 1 (offset 12), class 0 -> columns 0..3
    ref = (sum(v * v for v in r0) + sum(v * v for v in r1)) / 3  # sum over fg RoIs / all 3 RoIs
    assert loss.item() == pytest.approx(ref)
    _assert_student_only(loss, s, t)
    assert s.grad[2].abs().sum() == 0 and s.grad[0, :8].abs().sum() == 0  # only selected deltas
    sa = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]], requires_grad=True)
    ta = torch.tensor([[1.0, 2.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert box_delta_l2_loss(sa, ta, torch.tensor([0, 1]), K, None).item() == pytest.approx(
        (4 + 100) / 2
    )
    assert (
        box_delta_l2_loss(sa, ta, torch.tensor([0, 1]), K, torch.tensor([True, False])).item()
        == 2.0
    )  # (4-2)^2 / 2 RoIs


def test_box_l1_and_giou():
    s = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0], [0.0, 0.0, 1.0, 1.0]], requires_grad=True
    )
    t = torch.tensor(
        [[0.0, 0.0, 10.0, 20.0], [6.0, 4.0, 15.0, 20.0], [0.0, 0.0, 9.0, 9.0]], requires_grad=True
    )
    fg = torch.tensor([True, True, False])
    l1 = box_l1_loss(s, t, fg)
    assert l1.item() == pytest.approx((10 + (1 + 1 + 0 + 5)) / 3)  # sum over fg RoIs / all 3
    giou = box_giou_loss(s, t, fg)
    # box 0: IoU = 100/200, enclosure = union -> GIoU 0.5; box 1 by hand
    inter = 9 * 15
    union = 10 * 20 + 9 * 16 - inter
    enclose = 10 * 21
    g1 = inter / union - (enclose - union) / enclose
    assert giou.item() == pytest.approx(((1 - 0.5) + (1 - g1)) / 3, rel=1e-5)
    from fvcore.nn import giou_loss

    assert giou.item() == pytest.approx(
        giou_loss(s[:2].detach(), t[:2].detach(), reduction="sum").item() / 3, rel=1e-5
    )
    assert box_giou_loss(t.detach().clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert box_l1_loss(t.detach().clone(), t).item() == 0.0
    _assert_student_only(l1 + giou, s, t)


def test_crosskd_box_loss_by_hand():
    """CrossKD's regression KD (jbwang1997/CrossKD, faster-rcnn branch, crosskd_two_stage.py):
    every RoI, the teacher's top foreground class, L1 weighted by its probability, divided by
    4 * sum of the weights (mmdet L1Loss with avg_factor)."""
    K = 2
    logits = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.5], [-1.0, -1.0, 3.0]]  # background last
    c = torch.arange(24, dtype=torch.float32).view(3, 8).div(7).requires_grad_(True)
    t = torch.ones(3, 8, requires_grad=True)
    total, weight_sum = 0.0, 0.0
    for i, row in enumerate(logits):
        z = sum(math.exp(v) for v in row)
        probs = [math.exp(v) / z for v in row[:K]]
        k = max(range(K), key=lambda j: probs[j])
        total += probs[k] * sum(abs(c[i, 4 * k + j].item() - 1.0) for j in range(4))
        weight_sum += probs[k]
    loss = crosskd_box_loss(c, t, torch.tensor(logits))
    assert loss.item() == pytest.approx(total / (4 * weight_sum), rel=1e-6)
    _assert_student_only(loss, c, t)
    agnostic = crosskd_box_loss(c[:, :4].detach(), t[:, :4].detach(), torch.tensor(logits))
    ws = [max(math.exp(v) / sum(math.exp(u) for u in row) for v in row[:K]) for row in logits]
    ref = sum(w * sum(abs(c[i, j].item() - 1.0) for j in range(4)) for i, w in enumerate(ws)) / (4 * sum(ws))
    assert agnostic.item() == pytest.approx(ref, rel=1e-6)
    assert crosskd_box_loss(t.detach().clone(), t, torch.tensor(logits)).item() == 0.0


def test_kd_quality_focal_loss_by_hand():
    """CrossKD's mask KD (jbwang1997/CrossKD, faster-rcnn branch, kd_loss.py kd_quality_focal_loss,
    reduction mean with avg_factor): per element BCE(pred, sigmoid(t)) * |sigmoid(pred) - sigmoid(t)|,
    summed over every element (all class channels, all cells), / (avg_factor + eps)."""
    g = torch.Generator().manual_seed(3)
    c = torch.randn(2, 3, 2, 2, generator=g).requires_grad_(True)
    t = torch.randn(2, 3, 2, 2, generator=g).requires_grad_(True)
    total = 0.0
    for x, y in zip(c.flatten().tolist(), t.flatten().tolist()):
        p, q = 1 / (1 + math.exp(-x)), 1 / (1 + math.exp(-y))
        total += -(q * math.log(p) + (1 - q) * math.log(1 - p)) * abs(p - q)
    loss = kd_quality_focal_loss(c, t, avg_factor=7)
    assert loss.item() == pytest.approx(total / (7 + torch.finfo(torch.float32).eps), rel=1e-5)
    _assert_student_only(loss, c, t)
    beta2 = kd_quality_focal_loss(c.detach(), t.detach(), avg_factor=7, beta=2.0)
    assert beta2.item() < loss.item()  # |p - q| < 1: a larger beta down-weights every element
    assert kd_quality_focal_loss(t.detach().clone(), t, avg_factor=7).item() == 0.0  # focal weight 0
    empty = torch.zeros(0, 3, 2, 2, requires_grad=True)
    zero = kd_quality_focal_loss(empty, torch.zeros(0, 3, 2, 2), avg_factor=5)
    assert zero.item() == 0.0 and zero.requires_grad


def test_mask_logit_kd():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, 2, 2, generator=g).requires_grad_(True)
    t = torch.randn(3, 4, 2, 2, generator=g).requires_grad_(True)
    classes = torch.tensor([1, 3, 0])
    loss = mask_logit_kd_loss(s, t, classes)
    S, T = _np(s), _np(t)
    ref = np.mean([(S[i, c] - T[i, c]) ** 2 for i, c in enumerate(classes.tolist())])
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    _assert_student_only(loss, s, t)
    assert s.grad[0, 0].abs().sum() == 0  # unselected class gets no gradient
    sa, ta = s[:, :1].detach().clone(), t[:, :1].detach()
    assert mask_logit_kd_loss(sa, ta, classes).item() == pytest.approx(
        np.mean((S[:, 0] - T[:, 0]) ** 2), rel=1e-6
    )
    assert mask_logit_kd_loss(t.detach().clone(), t, classes).item() == 0.0


# --------------------------------------------------------------------------------------------
# empty inputs: a zero connected to the student
# --------------------------------------------------------------------------------------------
def _empty_cases():
    K = 3
    return {
        "kd": (lambda s, t: kd_loss(s, t, 2.0), (0, K + 1)),
        "kd_decoupled": (
            lambda s, t: kd_loss(s, t, 2.0, torch.zeros(0, dtype=torch.bool), 2.0, 0.5), (0, K + 1)
        ),
        "crosskd_box_no_rows": (lambda s, t: crosskd_box_loss(s, t, torch.zeros(0, K + 1)), (0, 4 * K)),
        "logit_mse": (lambda s, t: logit_mse_loss(s, t), (0, K + 1)),
        "delta_l2_no_rows": (
            lambda s, t: box_delta_l2_loss(s, t, torch.zeros(0, dtype=torch.long), K),
            (0, 4 * K),
        ),
        "delta_l2_no_fg": (
            lambda s, t: box_delta_l2_loss(
                s, t, torch.full((2,), K), K, torch.zeros(2, dtype=torch.bool)
            ),
            (2, 4 * K),
        ),
        "l1_no_fg": (lambda s, t: box_l1_loss(s, t, torch.zeros(2, dtype=torch.bool)), (2, 4)),
        "giou_no_rows": (lambda s, t: box_giou_loss(s, t), (0, 4)),
        "mask_no_rows": (
            lambda s, t: mask_logit_kd_loss(s, t, torch.zeros(0, dtype=torch.long)),
            (0, K, 4, 4),
        ),
    }


@pytest.mark.parametrize("name", sorted(_empty_cases()))
def test_empty_input_returns_connected_zero(name):
    fn, shape = _empty_cases()[name]
    s = torch.randn(shape, requires_grad=True)
    t = torch.randn(shape, requires_grad=True)
    loss = fn(s, t)
    assert loss.shape == () and loss.item() == 0.0
    assert loss.grad_fn is not None, "zero is not connected to the student graph"
    loss.backward()
    assert s.grad is not None and (s.grad == 0).all()
    assert t.grad is None


def test_connected_zero_reaches_upstream_parameters():
    head = nn.Linear(5, 4)
    loss = kd_loss(head(torch.randn(0, 5)), torch.randn(0, 4))
    loss.backward()
    assert head.weight.grad is not None and (head.weight.grad == 0).all()


def test_low_precision_teacher_is_compared_in_student_dtype():
    s, t = _pair((2, 4, 3, 3), seed=30)
    t16 = t.detach().to(torch.bfloat16).requires_grad_(True)
    loss = fitnet_loss(s, t16)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        np.mean((_np(s) - t16.detach().double().numpy()) ** 2), rel=1e-6
    )
    masks = box_masks([torch.tensor([[0.0, 0.0, 4.0, 4.0]])] * 2, (12, 12), (3, 3), 4)
    out = FGDLoss(4, 4)(s, t16, masks.fg_weight, masks.bg_weight)
    _assert_student_only(loss + sum(out.values()), s, t16)
