"""Student -> teacher adapters for feature losses: FitNets' channel regressor and DeFeat's
near-zero 3x3 conv, selectable by name in :data:`ADAPTERS`."""

from typing import Callable, Dict

from torch import nn


class ChannelAdapter(nn.Module):
    """1x1 conv ``c_in -> c_out`` (with bias) when the widths differ, identity when equal.

    Input (N, c_in, H, W) -> output (N, c_out, H, W). When ``c_in == c_out`` the module has no
    parameters and returns its input unchanged (``self.conv`` is ``nn.Identity``).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c_in, self.c_out = int(c_in), int(c_out)
        if self.c_in == self.c_out:
            self.conv = nn.Identity()
        else:
            self.conv = nn.Conv2d(self.c_in, self.c_out, kernel_size=1)

    @property
    def is_identity(self) -> bool:
        return isinstance(self.conv, nn.Identity)

    def forward(self, x):
        return self.conv(x)


def build_adapter(c_in: int, c_out: int) -> nn.Module:
    """``nn.Identity()`` when ``c_in == c_out``, else a :class:`ChannelAdapter` (1x1 conv)."""
    if int(c_in) == int(c_out):
        return nn.Identity()
    return ChannelAdapter(c_in, c_out)


def defeat_adapter(c_in: int, c_out: int) -> nn.Conv2d:
    """DeFeat's ``neck_adapt`` (ggjy/DeFeat.pytorch ``mmdet/models/detectors/two_stage_kd.py``):
    3x3 conv ``c_in -> c_out`` (padding 1, bias) even when the widths match. Its ``init_weights``:
    weight ``normal_().fmod_(2).mul_(1e-4)`` (so the output starts near its bias); the bias keeps
    PyTorch's default init. (N, c_in, H, W) -> (N, c_out, H, W)."""
    conv = nn.Conv2d(int(c_in), int(c_out), kernel_size=3, padding=1)
    conv.weight.data.normal_().fmod_(2).mul_(1e-4)
    return conv


# Adapter builders by name, each (c_in, c_out) -> module: "channel" = :func:`build_adapter`
# (identity when widths match, else 1x1 conv), "conv3x3" = :func:`defeat_adapter`.
ADAPTERS: Dict[str, Callable[[int, int], nn.Module]] = {"channel": build_adapter, "conv3x3": defeat_adapter}
