"""Config keys of dla-kd's backbones (``MODEL.VIT``, ``MODEL.TIMM``); see
``dla_kd/modeling/backbone``.

* ``MODEL.BACKBONE.NAME: build_vit_fpn_backbone`` builds a BEiT/DiT-style ViT (``MODEL.VIT``).
* ``MODEL.BACKBONE.NAME: build_timm_fpn_backbone`` builds any timm model (``MODEL.TIMM``); plain
  (single-stride) ViTs such as ``vit_tiny_patch16_224`` go through the same multi-scale adapter
  as DiT, whose settings are read from ``MODEL.VIT.ADAPTER_NORM``.

Both feed Detectron2's FPN (``MODEL.FPN.*``, with a max-pooled p6) and name their outputs by
stride: ``stride4, stride8, stride16, stride32`` (so ``MODEL.FPN.IN_FEATURES`` lists those).
"""

from detectron2.config import CfgNode as CN


def add_backbone_config(cfg) -> None:
    """Add dla-kd's backbone config keys to ``cfg`` in place."""
    _C = cfg

    # ---- BEiT / DiT ViT (dla_kd.modeling.backbone.beit) -----------------------------------
    _C.MODEL.VIT = CN()
    # Architecture size: "tiny" (192 dim, 12 blocks, 3 heads), "small" (384/12/6),
    # "base" (768/12/12) or "large" (1024/24/16). See VIT_SIZES in dla_kd/modeling/backbone/beit.py.
    _C.MODEL.VIT.SIZE = "base"
    # Patch size in pixels, a power of two (16 as DiT; the adapter's outputs are strides 4, 8, 16, 32).
    _C.MODEL.VIT.PATCH_SIZE = 16
    # Pre-training input size (H, W). Sets the size of the stored absolute position embedding
    # and relative-position tables; both are interpolated (bicubic) to the actual input at run time.
    _C.MODEL.VIT.IMG_SIZE = [224, 224]
    # 0-based indices of the four blocks tapped for strides 4, 8, 16, 32 (shallow to deep).
    # Empty: DiT's choice, [depth/3-1, depth/2-1, 2*depth/3-1, depth-1] = [3,5,7,11] for 12 blocks,
    # [7,11,15,23] for 24 blocks.
    _C.MODEL.VIT.OUT_INDICES = []
    # Which adapter outputs are returned (and built): subset of stride4, stride8, stride16, stride32.
    _C.MODEL.VIT.OUT_FEATURES = ["stride4", "stride8", "stride16", "stride32"]
    # Stochastic depth: drop-path rate of the last block (linearly increasing from 0). DiT: 0.1.
    _C.MODEL.VIT.DROP_PATH_RATE = 0.1
    # Learned absolute position embedding (BEiT/DiT "abs" position type; DiT's detection setting).
    _C.MODEL.VIT.USE_ABS_POS_EMB = True
    # BEiT relative position bias in every attention layer (interpolated to the input grid).
    _C.MODEL.VIT.USE_REL_POS_BIAS = False
    # With USE_REL_POS_BIAS: one table shared by all blocks (BEiT pre-training) instead of one per
    # block. A shared table in a checkpoint is copied to every block when this is False.
    _C.MODEL.VIT.SHARED_REL_POS_BIAS = False
    # Layer-scale init value (gamma_1/gamma_2 of every block); 0 disables layer scale.
    # DiT-B: 0.1, DiT-L: 1e-5 (unilm dit_base_patch16 / dit_large_patch16).
    _C.MODEL.VIT.LAYER_SCALE_INIT = 0.1
    # Trade compute for memory: recompute each block in the backward pass.
    _C.MODEL.VIT.GRAD_CKPT = False
    # Norm inside the 4x-upsampling adapter branch ("BN" as in DiT; "SyncBN", "GN", "LN",
    # "FrozenBN" also accepted, see detectron2.layers.get_norm). Also used by timm plain ViTs.
    _C.MODEL.VIT.ADAPTER_NORM = "BN"

    # ---- any timm model (dla_kd.modeling.backbone.timm_backbone) --------------------------
    _C.MODEL.TIMM = CN()
    # timm model name, e.g. "resnet18", "mobilenetv3_large_100", "convnext_tiny",
    # "vit_tiny_patch16_224". Built with features_only=True, never downloads weights.
    _C.MODEL.TIMM.NAME = "resnet18"
    # Feature levels taken (timm's out_indices). CNNs: feature-level indices (resnet: 1,2,3,4 are
    # strides 4..32); plain ViTs: four block indices for the adapter. Empty: the last four levels
    # (CNNs) or DiT's evenly spaced blocks (ViTs).
    _C.MODEL.TIMM.OUT_INDICES = []
    # Local timm checkpoint (.pth/.bin/.safetensors) loaded into the timm model at build time;
    # missing and unexpected keys are logged. Empty: random init (then use NORM BN/SyncBN/GN).
    _C.MODEL.TIMM.PRETRAINED_PATH = ""
    # What happens to the model's BatchNorm layers: "" or "BN" keep them (trainable, batch
    # statistics), "FrozenBN" freezes them (use with pretrained weights), "SyncBN" converts them to
    # SyncBatchNorm, "GN" replaces them by GroupNorm (from scratch, small batches).
    _C.MODEL.TIMM.NORM = "FrozenBN"
    # Drop-path rate passed to timm (models that support it).
    _C.MODEL.TIMM.DROP_PATH_RATE = 0.0
    # Recompute blocks in the backward pass (timm's set_grad_checkpointing, where supported).
    _C.MODEL.TIMM.GRAD_CKPT = False
