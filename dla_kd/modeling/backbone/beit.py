"""BEiT/DiT ViT encoder for detection, built from timm's BEiT blocks.

Follows unilm's DiT detection backbone (``dit/object_detection/ditod/beit.py``): patch-16 ViT,
cls token, absolute position embedding and/or BEiT relative position bias (both stored at the
pre-training grid and interpolated bicubically to the actual input grid), layer scale
(``gamma_1``/``gamma_2``), q/v biases. Parameter names match the published checkpoints
(``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``) apart from the relative
position tables, which live in ``rel_pos_bias.N`` (see ``dla_kd/checkpoint/converters.py``).
"""

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, calculate_drop_path_rates, resample_abs_pos_embed, trunc_normal_
from timm.models.beit import Block, gen_relative_position_index
from torch import nn
from torch.utils.checkpoint import checkpoint

from detectron2.config import configurable
from detectron2.layers import ShapeSpec


@dataclass(frozen=True)
class ViTSize:
    embed_dim: int
    depth: int
    num_heads: int


# MODEL.VIT.SIZE -> architecture (DiT-B/L from unilm dit_{base,large}_patch16; T/S as DeiT/timm).
VIT_SIZES = {
    "tiny": ViTSize(192, 12, 3),
    "small": ViTSize(384, 12, 6),
    "base": ViTSize(768, 12, 12),
    "large": ViTSize(1024, 24, 16),
}


def dit_out_indices(depth: int) -> List[int]:
    """DiT's tapped blocks (0-based): [3, 5, 7, 11] for 12 blocks, [7, 11, 15, 23] for 24."""
    return [depth // 3 - 1, depth // 2 - 1, 2 * depth // 3 - 1, depth - 1]


def check_out_indices(out_indices: Sequence[int], depth: int, what: str) -> List[int]:
    """Four strictly increasing block indices in ``[0, depth)``; a ``ValueError`` naming ``what`` otherwise."""
    indices = [int(i) for i in out_indices]
    if len(indices) != 4 or any(i < 0 or i >= depth for i in indices) or sorted(set(indices)) != indices:
        raise ValueError(
            f"{what} must be 4 increasing block indices in [0, {depth - 1}] (one per stride 4, 8, 16, 32), "
            f"got {list(out_indices)}"
        )
    return indices


@lru_cache(maxsize=2)
def _relative_position_index(grid: Tuple[int, int]) -> torch.Tensor:
    # (L+1, L+1) indices into a table for `grid` (L = gh*gw, +1 for the cls token); large for big
    # grids (50x84 tokens: 140 MB), hence a small cache.
    return gen_relative_position_index(grid)


class RelativePositionBias(nn.Module):
    """BEiT relative position bias for one attention layer (or shared by all).

    Parameter ``relative_position_bias_table``: ``((2*Wh-1)*(2*Ww-1) + 3, num_heads)`` for the
    pre-training grid ``window`` (Wh, Ww); the last 3 rows are cls->token, token->cls, cls->cls.
    ``forward(grid, index)`` returns the bias ``(1, num_heads, L+1, L+1)`` for a ``grid`` of
    ``L = gh*gw`` tokens; for ``grid != window`` the spatial part of the table is resized
    bicubically to ``(2*gh-1, 2*gw-1)`` first (as DiT does at detection resolution).
    """

    def __init__(self, window: Tuple[int, int], num_heads: int):
        super().__init__()
        self.window = tuple(window)
        self.num_heads = num_heads
        num_entries = (2 * window[0] - 1) * (2 * window[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_entries, num_heads))

    def table_for_grid(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The table resized to ``grid``: ``((2*gh-1)*(2*gw-1) + 3, num_heads)``."""
        if tuple(grid) == self.window:
            return self.relative_position_bias_table
        spatial, extra = self.relative_position_bias_table[:-3], self.relative_position_bias_table[-3:]
        spatial = spatial.t().reshape(1, self.num_heads, 2 * self.window[0] - 1, 2 * self.window[1] - 1)
        spatial = F.interpolate(spatial, size=(2 * grid[0] - 1, 2 * grid[1] - 1), mode="bicubic", align_corners=False)
        return torch.cat([spatial.reshape(self.num_heads, -1).t(), extra], dim=0)

    def forward(self, grid: Tuple[int, int], index: torch.Tensor) -> torch.Tensor:
        num_tokens = grid[0] * grid[1] + 1
        bias = self.table_for_grid(grid)[index.reshape(-1)].reshape(num_tokens, num_tokens, self.num_heads)
        return bias.permute(2, 0, 1).unsqueeze(0).contiguous()


class BeitEncoder(nn.Module):
    """BEiT/DiT ViT returning the token maps of four blocks.

    Input: ``(N, in_chans, H, W)``, H and W multiples of ``patch_size``.
    Output: list of ``len(out_indices)`` tensors ``(N, embed_dim, H/patch_size, W/patch_size)``,
    the outputs of blocks ``out_indices`` (cls token dropped). Blocks after ``max(out_indices)``
    are not built.
    """

    @configurable
    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        out_indices: Sequence[int],
        patch_size: int = 16,
        in_chans: int = 3,
        img_size: Sequence[int] = (224, 224),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_abs_pos_emb: bool = True,
        use_rel_pos_bias: bool = False,
        shared_rel_pos_bias: bool = False,
        layer_scale_init: float = 0.1,
        grad_ckpt: bool = False,
    ):
        super().__init__()
        self.out_indices = check_out_indices(out_indices, depth, "MODEL.VIT.OUT_INDICES")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.grad_ckpt = grad_ckpt
        self.patch_embed = PatchEmbed(
            img_size=tuple(img_size),
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
        )
        self.pretrain_grid = tuple(self.patch_embed.grid_size)
        num_pretrain_tokens = self.pretrain_grid[0] * self.pretrain_grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pretrain_tokens + 1, embed_dim)) if use_abs_pos_emb else None

        num_blocks = self.out_indices[-1] + 1
        if use_rel_pos_bias:
            num_tables = 1 if shared_rel_pos_bias else num_blocks
            self.rel_pos_bias = nn.ModuleList(
                RelativePositionBias(self.pretrain_grid, num_heads) for _ in range(num_tables)
            )
        else:
            self.rel_pos_bias = None
        drop_path_rates = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                qkv_bias=True,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path_rates[i],
                init_values=layer_scale_init or None,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                window_size=None,  # relative position bias is passed in, resized to the input grid
            )
            for i in range(num_blocks)
        )
        self._init_weights()

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec = None):
        vit = cfg.MODEL.VIT
        if vit.SIZE not in VIT_SIZES:
            raise ValueError(f"MODEL.VIT.SIZE {vit.SIZE!r} is not one of {sorted(VIT_SIZES)}")
        size = VIT_SIZES[vit.SIZE]
        return {
            "embed_dim": size.embed_dim,
            "depth": size.depth,
            "num_heads": size.num_heads,
            "out_indices": list(vit.OUT_INDICES) or dit_out_indices(size.depth),
            "patch_size": vit.PATCH_SIZE,
            "in_chans": input_shape.channels if input_shape is not None and input_shape.channels else 3,
            "img_size": vit.IMG_SIZE,
            "drop_path_rate": vit.DROP_PATH_RATE,
            "use_abs_pos_emb": vit.USE_ABS_POS_EMB,
            "use_rel_pos_bias": vit.USE_REL_POS_BIAS,
            "shared_rel_pos_bias": vit.SHARED_REL_POS_BIAS,
            "layer_scale_init": vit.LAYER_SCALE_INIT,
            "grad_ckpt": vit.GRAD_CKPT,
        }

    def _init_weights(self) -> None:
        """BEiT's init: truncated normal (std 0.02) linears and embeddings, residual projections
        scaled by 1/sqrt(2 * layer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_((2.0 * layer) ** 0.5)
                block.mlp.fc2.weight.div_((2.0 * layer) ** 0.5)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Image -> tokens ``(N, 1 + gh*gw, C)`` with the cls token first, and the grid (gh, gw)."""
        x = self.patch_embed(x)  # (N, gh, gw, C)
        grid = (x.shape[1], x.shape[2])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(1, 2)], dim=1)
        if self.pos_embed is not None:
            x = x + resample_abs_pos_embed(
                self.pos_embed, new_size=grid, old_size=self.pretrain_grid, num_prefix_tokens=1, antialias=False
            )
        return x, grid

    def _attention_biases(self, grid: Tuple[int, int]) -> List[torch.Tensor]:
        """Relative position bias ``(1, heads, L+1, L+1)`` per block (``None`` without)."""
        if self.rel_pos_bias is None:
            return [None] * len(self.blocks)
        index = _relative_position_index(grid).to(self.cls_token.device)
        biases = [table(grid, index) for table in self.rel_pos_bias]
        return biases * len(self.blocks) if len(biases) == 1 else biases

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x, grid = self._embed(x)
        biases = self._attention_biases(grid)
        use_ckpt = self.grad_ckpt and torch.is_grad_enabled()
        maps = []
        for i, (block, bias) in enumerate(zip(self.blocks, biases)):
            x = checkpoint(block, x, bias, use_reentrant=False) if use_ckpt else block(x, bias)
            if i in self.out_indices:
                tokens = x[:, 1:]  # drop cls
                maps.append(tokens.transpose(1, 2).reshape(x.shape[0], self.embed_dim, *grid).contiguous())
        return maps
