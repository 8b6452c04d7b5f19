"""Student -> teacher channel adapter (FitNets' regressor) for feature losses."""

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
