"""SimKD projector (Chen et al., CVPR 2022) adapted to FPN features."""

from torch import nn

from ._utils import get_norm


class SimKDProjector(nn.Module):
    """Student FPN level -> teacher feature space, for reusing the teacher's heads.

    Official SimKD ``transfer``: 1x1 conv (c_in -> c_out//factor) + BN + ReLU, 3x3 conv
    (-> c_out//factor) + BN + ReLU, 1x1 conv (-> c_out) + BN + ReLU, convs without bias.
    Deviation: NO final ReLU. The classification SimKD projects onto post-ReLU (non-negative)
    penultimate features; FPN outputs are signed (no activation after the FPN output conv), so a
    final ReLU would make the teacher's negative activations unreachable. ``final_norm`` keeps
    (default) or drops the last norm.

    Args: c_in, c_out widths; factor: bottleneck reduction (official 2); norm: "BN" (official),
    "GN", "" (none: convs get biases); identity: force ``nn.Identity`` (needs c_in == c_out).
    ``factor == 0`` with ``c_in == c_out`` also gives the identity (no parameters).

    forward: (N, c_in, H, W) -> (N, c_out, H, W). Loss: :func:`fitnet_loss` (MSE) against the
    teacher's level.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        factor: int = 2,
        norm: str = "BN",
        final_norm: bool = True,
        identity: bool = False,
    ):
        super().__init__()
        if identity or factor == 0:
            if c_in != c_out:
                raise ValueError(
                    f"identity SimKD projector needs c_in == c_out, got {c_in}, {c_out}"
                )
            self.transfer = nn.Identity()
            return
        if factor < 0:
            raise ValueError(f"factor must be positive (or 0 for identity), got {factor}")
        mid = c_out // factor
        if mid < 1:
            raise ValueError(f"c_out // factor = {c_out} // {factor} is 0")
        bias = not norm
        self.transfer = nn.Sequential(
            nn.Conv2d(c_in, mid, kernel_size=1, bias=bias),
            get_norm(norm, mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel_size=3, padding=1, bias=bias),
            get_norm(norm, mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, kernel_size=1, bias=bias or not final_norm),
            get_norm(norm, c_out) if final_norm else nn.Identity(),
        )

    @property
    def is_identity(self) -> bool:
        return isinstance(self.transfer, nn.Identity)

    def forward(self, x):
        return self.transfer(x)
