"""Feature losses ignore batch padding: on one image, a loss of padded features with the image's
``valid`` cells equals the loss of the image's cells alone, whatever the padding holds, and the
padding gets no gradient. ``valid_cells`` against hand values."""
import pytest
import torch

from dla_kd.distill.losses import (
    FGDLoss,
    MGDLoss,
    box_masks,
    cwd_loss,
    defeat_feature_loss,
    fitnet_loss,
    hcl_loss,
    pkd_loss,
    valid_cells,
)

H, W, STRIDE = 7, 9, 4  # padded level
IMAGE = (20, 23)  # image pixels: ceil(20 / 4) x ceil(23 / 4) = 5 x 6 valid cells
h, w = 5, 6


def test_valid_cells_hand_values():
    valid = valid_cells([IMAGE, (28, 36)], (H, W), STRIDE)
    assert valid.shape == (2, H, W) and valid.dtype == torch.bool
    assert valid[0, :h, :w].all() and valid[0].sum() == h * w and valid[1].all()
    assert valid_cells([(28, 36), (25, 33)], (H, W), STRIDE) is None  # every cell holds image
    assert valid_cells([IMAGE], (4, 5), 8)[0].sum() == 3 * 3


def _pair(c=4, seed=0):
    """(student crop, teacher crop, padded student with grad, padded teacher): garbage padding."""
    g = torch.Generator().manual_seed(seed)
    s_pad = (torch.randn(1, c, H, W, generator=g) * 5).requires_grad_(True)
    t_pad = torch.randn(1, c, H, W, generator=g) * 5
    return s_pad[..., :h, :w], t_pad[..., :h, :w], s_pad, t_pad


def _fgd_terms(loss, s, t, image_hw, valid):
    boxes = [torch.tensor([[2.0, 3.0, 13.0, 9.0], [10.0, 12.0, 22.0, 19.0]])]
    maps = box_masks(boxes, image_hw, tuple(s.shape[-2:]), STRIDE, valid=valid)
    return loss(s, t, maps.fg_weight, maps.bg_weight, valid=valid)


def _cases():
    torch.manual_seed(0)
    fgd, mgd = FGDLoss(4, 4, temperature=0.5, alpha=1.0, beta=1.0, gamma=1.0, lambda_=1.0), MGDLoss(4, 4)
    fg_pad = torch.rand(1, H, W) > 0.5
    keep_pad = (torch.rand(1, 1, H, W) > 0.45).float()
    return {
        "fitnet": lambda s, t, v: fitnet_loss(s, t, v),
        "pkd": lambda s, t, v: pkd_loss(s, t, v),
        "cwd": lambda s, t, v: cwd_loss(s, t, tau=2.0, valid=v),
        "defeat": lambda s, t, v: defeat_feature_loss(s, t, fg_pad[:, : s.shape[2], : s.shape[3]], valid=v),
        "fgd": lambda s, t, v: sum(_fgd_terms(fgd, s, t, (s.shape[2] * 4, s.shape[3] * 4), v).values()),
        "mgd": lambda s, t, v: mgd(s, t, mask=keep_pad[..., : s.shape[2], : s.shape[3]], valid=v),
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_a_padded_image_gives_the_loss_of_the_image_alone(name):
    fn = _cases()[name]
    s, t, s_pad, t_pad = _pair()
    valid = valid_cells([IMAGE], (H, W), STRIDE)
    alone = fn(s, t, None)
    padded = fn(s_pad, t_pad, valid)
    assert float(padded) == pytest.approx(float(alone), rel=1e-5), name
    padded.backward()
    assert s_pad.grad[..., ~valid[0]].abs().max() == 0, "the padding got a gradient"
    assert s_pad.grad[..., valid[0]].abs().max() > 0


def test_hcl_pools_each_image_inside_its_cells():
    s1, t1, s1_pad, t1_pad = _pair(seed=1)
    g = torch.Generator().manual_seed(2)
    s2_pad = torch.randn(1, 4, 4, 5, generator=g).requires_grad_(True)  # stride 8: 3 x 3 valid
    t2_pad = torch.randn(1, 4, 4, 5, generator=g)
    valid = [valid_cells([IMAGE], (H, W), STRIDE), valid_cells([IMAGE], (4, 5), 8)]
    alone = hcl_loss([s1, s2_pad[..., :3, :3]], [t1, t2_pad[..., :3, :3]])
    padded = hcl_loss([s1_pad, s2_pad], [t1_pad, t2_pad], valid=valid)
    assert float(padded) == pytest.approx(float(alone), rel=1e-5)
    padded.backward()
    assert s1_pad.grad[..., ~valid[0][0]].abs().max() == 0 and s2_pad.grad[..., ~valid[1][0]].abs().max() == 0
