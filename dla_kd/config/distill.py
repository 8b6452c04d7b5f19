"""The ``DISTILL`` config section: teacher, which distillation losses run, their weights and
schedules. Every key is documented here; README "Distillation config" summarises them.

A distillation config is the *student's* config (its ``MODEL.*`` builds the student) with
``MODEL.META_ARCHITECTURE: DistillGeneralizedRCNN`` and a ``DISTILL`` section naming the teacher.
"""
from detectron2.config import CfgNode as CN


def _schedule_node() -> CN:
    """Per-loss weight schedule (``dla_kd.distill.schedule.LossWeightSchedule``).

    factor(it) = warm-up (linear 0 -> 1 over WARMUP_ITERS) x decay (from the end of warm-up to
    DECAY_END_ITER, down to FINAL_FACTOR) and 0 from STOP_ITER on.
    """
    node = CN()
    node.WARMUP_ITERS = 0  # linear warm-up length in iterations (0: no warm-up)
    node.DECAY = "none"  # "none" (constant), "linear" or "cosine"
    node.DECAY_END_ITER = -1  # where the decay reaches FINAL_FACTOR (-1: SOLVER.MAX_ITER)
    node.FINAL_FACTOR = 0.0  # factor reached at DECAY_END_ITER
    node.STOP_ITER = -1  # from this iteration on the loss is switched off (-1: never)
    return node


def _loss_node(weight: float, **extra) -> CN:
    node = CN()
    node.WEIGHT = weight  # multiplies the loss (times the schedule factor)
    node.SCHEDULE = _schedule_node()
    for k, v in extra.items():
        setattr(node, k, v)
    return node


def add_distill_config(cfg: CN) -> None:
    """Add the ``DISTILL`` section (and its defaults) to ``cfg`` in place."""
    _C = cfg
    _C.DISTILL = CN()

    # ---- teacher ---------------------------------------------------------------------------
    _C.DISTILL.TEACHER = CN()
    _C.DISTILL.TEACHER.CONFIG = ""  # the teacher's own full config file (required)
    _C.DISTILL.TEACHER.WEIGHTS = ""  # teacher checkpoint (.pth/.pkl); required unless ALLOW_RANDOM_INIT
    _C.DISTILL.TEACHER.OPTS = []  # extra "KEY", "VALUE" overrides applied to the teacher config
    # Teacher compute dtype on GPU: "float32", "bfloat16" or "float16" (autocast). CPU always fp32.
    _C.DISTILL.TEACHER.DTYPE = "float32"
    # On-disk cache of the teacher's features (multi-epoch runs with deterministic inputs only):
    # DIR empty = off. DTYPE of the stored tensors: "float16" (half the disk), "float32" (exact).
    _C.DISTILL.TEACHER.FEATURE_CACHE = CN()
    _C.DISTILL.TEACHER.FEATURE_CACHE.DIR = ""
    _C.DISTILL.TEACHER.FEATURE_CACHE.DTYPE = "float16"
    # Build the teacher with random weights (unit tests, benchmarks). Never for real runs.
    _C.DISTILL.TEACHER.ALLOW_RANDOM_INIT = False
    # Before training, evaluate the teacher on a few validation images and stop if it is at chance.
    _C.DISTILL.TEACHER.SANITY_CHECK = CN()
    _C.DISTILL.TEACHER.SANITY_CHECK.ENABLED = False
    _C.DISTILL.TEACHER.SANITY_CHECK.DATASET = ""  # default: DATASETS.TEST[0]
    _C.DISTILL.TEACHER.SANITY_CHECK.NUM_IMAGES = 50
    _C.DISTILL.TEACHER.SANITY_CHECK.MIN_AP = 1.0  # bbox AP (0-100) below which the run stops

    # ---- what the student is trained with ----------------------------------------------------
    # Names of registered distillation losses (dla_kd.distill.DISTILLER_REGISTRY), e.g.
    # ["fitnet", "logit_kd"]. Empty: the teacher is built but no KD loss runs.
    _C.DISTILL.LOSSES = []
    # The student's own (ground-truth) detection losses stay on by default. Setting this False is
    # DistilDoc's "distill only" setting (their released configs), which we found to hurt.
    _C.DISTILL.DETECTION_LOSSES = True
    # Copy teacher weights into the student where names and shapes match (FGD/ICD-style init).
    _C.DISTILL.INIT_FROM_TEACHER = CN()
    _C.DISTILL.INIT_FROM_TEACHER.ENABLED = False
    _C.DISTILL.INIT_FROM_TEACHER.PREFIXES = ["backbone.fpn", "proposal_generator", "roi_heads"]

    # ---- shared settings ---------------------------------------------------------------------
    _C.DISTILL.FEATURE = CN()
    _C.DISTILL.FEATURE.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # FPN levels distilled
    _C.DISTILL.ROI = CN()
    # Which teacher stage answers a standard (single-stage) student when the teacher is a
    # Cascade: "last", "average" (mean of the stages' logits), or a stage index "0", "1", ...
    _C.DISTILL.ROI.CASCADE_TEACHER_STAGE = "last"

    # ---- feature-based losses (student FPN -> teacher FPN) -----------------------------------
    # FitNets hint: 1x1-conv adapter (identity when widths match) + MSE.
    _C.DISTILL.FITNET = _loss_node(1.0)
    # DeFeat-style decoupled feature MSE: separate weights inside/outside ground-truth boxes.
    _C.DISTILL.DEFEAT = _loss_node(1.0, FG_WEIGHT=2.0, BG_WEIGHT=0.5)
    # PKD: MSE between per-channel standardised student and teacher features. Default weight:
    # mmrazor's Faster R-CNN setting.
    _C.DISTILL.PKD = _loss_node(6.0)
    # CWD: KL between per-channel spatial softmaxes with temperature TAU (times TAU^2).
    # Defaults: mmrazor's Faster R-CNN FPN setting (TAU 1, weight 10).
    _C.DISTILL.CWD = _loss_node(10.0, TAU=1.0)
    # FGD (Yang et al., CVPR 2022): focal (fg/bg with attention masks) + global (GcBlock) terms.
    # Defaults: the official FGD settings for two-stage detectors (Faster R-CNN).
    _C.DISTILL.FGD = _loss_node(1.0, TEMPERATURE=0.5, ALPHA=5e-5, BETA=2.5e-5, GAMMA=5e-5, LAMBDA=5e-7)
    # MGD (Yang et al., ECCV 2022): masked generative distillation. Defaults: the official
    # two-stage settings (one-stage detectors use MASK_RATIO 0.65, ALPHA 2e-5).
    _C.DISTILL.MGD = _loss_node(1.0, MASK_RATIO=0.45, ALPHA=5e-7)
    # ReviewKD (Chen et al., CVPR 2021): ABF fusion coarse -> fine + hierarchical context loss
    # with adaptive pooling to HCL_LEVELS. NORM of the ABF convs: "BN" (official), "GN" (small
    # per-device batches), "" (none).
    _C.DISTILL.REVIEWKD = _loss_node(1.0, MID_CHANNELS=256, HCL_LEVELS=[4, 2, 1], NORM="BN")
    # SimKD (Chen et al., CVPR 2022): projector student FPN -> teacher space, teacher RPN/ROI
    # heads reused by the student. The deployable student = backbone + projector + teacher heads.
    # PROJECTOR: "bottleneck" (1x1-3x3-1x1 convs, width out/FACTOR, NORM) or "identity" (only when
    # student and teacher FPN widths match). TRAIN_HEADS: fine-tune the reused teacher heads.
    _C.DISTILL.SIMKD = _loss_node(1.0, PROJECTOR="bottleneck", FACTOR=2, NORM="GN", TRAIN_HEADS=False)

    # ---- response-based losses on the ROI heads (teacher scores the student's proposals) ----
    # Vanilla KD: KL(softmax(t/T) || softmax(s/T)) * T^2 over the K+1 classes. POS/NEG weights
    # scale foreground / background RoIs (DeFeat's decoupling; 1, 1 = plain KD).
    _C.DISTILL.LOGIT_KD = _loss_node(1.0, TEMPERATURE=2.0, POS_WEIGHT=1.0, NEG_WEIGHT=1.0)
    # MSE between class logits.
    _C.DISTILL.LOGIT_MSE = _loss_node(1.0, POS_WEIGHT=1.0, NEG_WEIGHT=1.0)
    # Box-regression KD. LOSS: "l2_deltas" (class-specific deltas), "l1" or "giou" (decoded
    # boxes). CLASS: "gt" (ground-truth class), "teacher" (teacher's top class) or "agnostic".
    # Foreground RoIs only.
    _C.DISTILL.BOX_KD = _loss_node(1.0, LOSS="l1", CLASS="gt")
    # Mask-logit KD (Mask R-CNN): MSE between mask logits of the ground-truth class.
    _C.DISTILL.MASK_KD = _loss_node(1.0)
    # CrossKD: student box-head features through the teacher's frozen box predictor, distilled
    # to the teacher's own output with KL at TEMPERATURE.
    _C.DISTILL.CROSSKD = _loss_node(1.0, TEMPERATURE=1.0)


def add_projected_backbone_config(cfg: CN) -> None:
    """``MODEL.PROJECTED_BACKBONE``: the architecture of a SimKD student, written by the
    distillation builder and kept in exported student configs.

    The backbone "build_projected_backbone" wraps BACKBONE_NAME and maps each of its outputs to
    OUT_CHANNELS with one projector shared by all levels (the reused heads are shared too).
    """
    cfg.MODEL.PROJECTED_BACKBONE = CN()
    cfg.MODEL.PROJECTED_BACKBONE.BACKBONE_NAME = ""  # the wrapped backbone, e.g. build_resnet_fpn_backbone
    cfg.MODEL.PROJECTED_BACKBONE.OUT_CHANNELS = 256  # the teacher's FPN width
    cfg.MODEL.PROJECTED_BACKBONE.PROJECTOR = "bottleneck"  # or "identity"
    cfg.MODEL.PROJECTED_BACKBONE.FACTOR = 2  # bottleneck width = OUT_CHANNELS // FACTOR
    cfg.MODEL.PROJECTED_BACKBONE.NORM = "GN"
