"""The ``DISTILL`` config section: teacher, which distillation losses run, their weights and
schedules. Every key is documented here; docs/distillation.md explains them.

A distillation config is the *student's* config (its ``MODEL.*`` builds the student) with
``MODEL.META_ARCHITECTURE: DistillGeneralizedRCNN`` and a ``DISTILL`` section naming the teacher.
"""
from detectron2.config import CfgNode as CN


def _schedule_node() -> CN:
    """Per-loss weight schedule (``dla_kd.distill.schedule.LossWeightSchedule``).

    factor(it) = warm-up (linear 0 -> 1 over WARMUP_ITERS) x decay (from the end of warm-up to
    DECAY_END_ITER, down to FINAL_FACTOR) and 0 from STOP_ITER on. With
    SOLVER.REFERENCE_WORLD_SIZE the three iterations are rescaled like SOLVER.MAX_ITER
    (``dla_kd.engine.auto_scale``); -1 stays -1.
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
    # With DISTILL.BALANCE.ENABLED: this loss's gradient-norm ratio target (-1: DISTILL.BALANCE.TARGET;
    # 0 switches the loss off).
    node.BALANCE_TARGET = -1.0
    for k, v in extra.items():
        setattr(node, k, v)
    return node


def _feature_loss_node(weight: float, in_features=(), **extra) -> CN:
    """A feature loss's node: :func:`_loss_node` plus IN_FEATURES, the FPN levels this loss
    distills (its reference's levels where the reference fixes them). Empty: the levels of
    DISTILL.FEATURE.IN_FEATURES."""
    node = _loss_node(weight, **extra)
    node.IN_FEATURES = list(in_features)
    return node


P2_P5 = ["p2", "p3", "p4", "p5"]  # mmdet Faster R-CNN neck.fpn_convs.0..3 (P6 is a max-pool)
P2_P6 = ["p2", "p3", "p4", "p5", "p6"]  # every FPN output


def add_distill_config(cfg: CN) -> None:
    """Add the ``DISTILL`` section (and its defaults) to ``cfg`` in place."""
    _C = cfg
    _C.DISTILL = CN()

    _add_teacher_keys(_C.DISTILL)
    # DISTILL.* set (not at its default) on a config whose MODEL.META_ARCHITECTURE is not
    # DistillGeneralizedRCNN would be silently unused: training stops with an error. True: train
    # the plain model anyway, with a warning (e.g. a supervised baseline from a distillation config).
    _C.DISTILL.ALLOW_UNUSED = False
    _add_training_keys(_C.DISTILL)
    _add_unlabeled_keys(_C.DISTILL)
    _add_shared_keys(_C.DISTILL)
    _add_feature_loss_keys(_C.DISTILL)
    _add_response_loss_keys(_C.DISTILL)


def _add_teacher_keys(distill: CN) -> None:
    """The teacher: its config and weights, precision, feature cache, checks before training."""
    distill.TEACHER = CN()
    distill.TEACHER.CONFIG = ""  # the teacher's own full config file (required)
    distill.TEACHER.WEIGHTS = ""  # teacher checkpoint (.pth/.pkl); required unless ALLOW_RANDOM_INIT
    distill.TEACHER.OPTS = []  # extra "KEY", "VALUE" overrides applied to the teacher config
    # Expected sha256 (hex) of the WEIGHTS file: a run stops before training if the file's bytes
    # differ (a retrained or swapped teacher). Empty: not checked.
    distill.TEACHER.SHA256 = ""
    # Teacher compute dtype on GPU: "float32", "bfloat16" or "float16" (autocast). CPU always fp32.
    # float32 holds also under SOLVER.AMP.ENABLED: the trainer's autocast is off for the teacher.
    distill.TEACHER.DTYPE = "float32"
    # On-disk cache of the teacher's features (multi-epoch runs with deterministic inputs only):
    # DIR empty = off. DTYPE of the stored tensors: "float16" (half the disk), "float32" (exact).
    # The teacher always runs image by image (cache or not) and feature losses ignore the batch
    # padding, so cached and live targets agree also for batches of pages of different sizes.
    # Each set of cached levels gets its own sub-folder of DIR (e.g. DIR/p2-p3-p4-p5), so runs of
    # different losses with the same teacher and inputs can share one DIR. An image's entry is
    # keyed by its file's real path, size and mtime (any spelling of a path hits; a rewritten page misses).
    # Entries are read in the training data loader's workers (feature_cache.CachedFeaturesMapper); an unreadable
    # entry (a truncated file) is named in a warning, recomputed and rewritten.
    distill.TEACHER.FEATURE_CACHE = CN()
    distill.TEACHER.FEATURE_CACHE.DIR = ""
    distill.TEACHER.FEATURE_CACHE.DTYPE = "float16"
    # Levels the cache holds, e.g. ["p2", "p3", "p4", "p5", "p6"] to serve runs of p2..p5 and of p2..p6
    # losses from one cache. Empty: the levels the step reads. A level
    # the step reads but the cache lacks is computed by the teacher every step (its backbone runs,
    # so no time is saved in that run); cached levels the step does not read are kept for other runs.
    distill.TEACHER.FEATURE_CACHE.LEVELS = []
    # Before training the full cache's size is estimated from the training pages' sizes and logged
    # (with the disk's free space); the build stops when it exceeds MAX_GB (gigabytes, 1e9 bytes;
    # negative: no limit). At 1024 px, p2..p6 at 256 channels in float16 is about 45 MB a page.
    distill.TEACHER.FEATURE_CACHE.MAX_GB = 500.0
    # Build the teacher with random weights (unit tests, benchmarks). Never for real runs.
    distill.TEACHER.ALLOW_RANDOM_INIT = False
    # Teacher and student must be proven to predict the same classes in the same order: the
    # thing_classes of the teacher's and the student's DATASETS.TRAIN are compared (for a
    # register_coco_instances dataset: its JSON's categories in id order), and the build stops
    # when either side has none. True: go on with a warning (you checked the order yourself).
    distill.TEACHER.ALLOW_UNVERIFIED_CLASSES = False
    # Before training, evaluate the teacher on a few validation images and stop if it is at chance
    # (on forked RNG streams, like the teacher's and the adapters' initialisation: a run whose KD
    # weights are all 0 reproduces the plain run of the same SEED).
    distill.TEACHER.SANITY_CHECK = CN()
    distill.TEACHER.SANITY_CHECK.ENABLED = False
    distill.TEACHER.SANITY_CHECK.DATASET = ""  # default: DATASETS.TEST[0]
    distill.TEACHER.SANITY_CHECK.NUM_IMAGES = 50
    distill.TEACHER.SANITY_CHECK.MIN_AP = 1.0  # bbox AP (0-100) below which the run stops


def _add_training_keys(distill: CN) -> None:
    """What the student is trained with: the losses, its own detection losses, teacher-initialised
    weights, automatic KD weights."""
    # Names of registered distillation losses (dla_kd.distill.DISTILLER_REGISTRY), e.g.
    # ["fitnet", "logit_kd"]. Empty: the teacher is built but no KD loss runs.
    distill.LOSSES = []
    # The student's own (ground-truth) detection losses stay on by default. Setting this False is
    # DistilDoc's "distill only" setting (their released configs), which we found to hurt.
    distill.DETECTION_LOSSES = True
    # Copy teacher weights into the student where names and shapes match (FGD/ICD-style init).
    # Order at the start of training: a plain MODEL.WEIGHTS loads first, then these copies (and
    # SimKD's teacher heads) are applied again, so the teacher wins where both fill a tensor; a
    # distillation checkpoint (--resume, or MODEL.WEIGHTS of a distillation run) is kept as it is.
    distill.INIT_FROM_TEACHER = CN()
    distill.INIT_FROM_TEACHER.ENABLED = False
    distill.INIT_FROM_TEACHER.PREFIXES = ["backbone.fpn", "proposal_generator", "roi_heads"]

    # Automatic KD weights (dla_kd/distill/balance.py): over the first ITERS iterations, each KD
    # loss's gradient norm on the student's shared parameters (backbone + FPN; also the ROI heads
    # for response losses) is measured against the detection losses' on the same parameters; then
    # its WEIGHT is replaced, once and for all, by TARGET x |g_det| / |g_kd| (per-loss targets:
    # DISTILL.<NAME>.BALANCE_TARGET). Until then the configured weights apply. The calibrated
    # weights are logged, written to OUTPUT_DIR/kd_balance.json and kept in checkpoints (--resume).
    distill.BALANCE = CN()
    distill.BALANCE.ENABLED = False
    distill.BALANCE.ITERS = 20  # calibration iterations (norms averaged over them)
    distill.BALANCE.TARGET = 1.0  # |weight x g_kd| / |g_det| after calibration


def _add_unlabeled_keys(distill: CN) -> None:
    """Pages without annotations (``DATASETS.UNLABELED``): their share of a batch and the teacher's
    detections on them."""
    # dla_kd/modeling/meta_arch/unlabeled.py. A training batch holds labelled pages (DATASETS.TRAIN)
    # and unlabeled pages (DATASETS.UNLABELED); on an unlabeled page there is no ground-truth
    # detection loss, feature losses compare the whole page, and the teacher's own detections
    # stand in for the boxes the losses need. Every loss is computed on each part of the batch
    # separately and logged as <name> (labelled) and unlabeled/<name>; a part's KD losses are
    # weighted by its share of the batch's images (together: the batch mean).
    distill.UNLABELED = CN()
    # Share of each batch's images taken from DATASETS.UNLABELED: 0.5 = half of them; 1.0 = only
    # unlabeled pages (DATASETS.TRAIN then only names the classes); 0 = off. Per worker, batch b
    # (SOLVER.IMS_PER_BATCH / #workers) holds round(b x RATIO) unlabeled images (at least one) and
    # the rest labelled (at least one unless RATIO is 1): two Detectron2 loaders (each with its own
    # aspect-ratio grouping), one batch of each concatenated per step (dla_kd/data/mixed_loader.py).
    distill.UNLABELED.RATIO = 0.0
    # The teacher's detections (its own inference: RPN + ROI heads, MODEL.ROI_HEADS.SCORE_THRESH_TEST
    # and TEST.DETECTIONS_PER_IMAGE of the teacher's config) scoring at least this are an
    # unlabeled page's boxes: FGD/DeFeat foreground masks, the RoI sampling of ROI KD (logit/box/
    # mask KD, CrossKD: foreground = matched to a teacher box, class = the teacher's class) and,
    # with PSEUDO_LABELS, the pseudo ground truth.
    distill.UNLABELED.SCORE_THRESH = 0.5
    # True: those detections train the student's detection losses (RPN, box, mask: masks from the
    # teacher's mask head binarised at 0.5, the box itself for a teacher without one), weighted by
    # PSEUDO_LABEL_WEIGHT. False: the student's detection losses on unlabeled pages are computed
    # (so every parameter still gets a gradient each step) and multiplied by 0.
    distill.UNLABELED.PSEUDO_LABELS = False
    distill.UNLABELED.PSEUDO_LABEL_WEIGHT = 1.0


def _add_shared_keys(distill: CN) -> None:
    """Settings every feature or ROI loss shares."""
    distill.FEATURE = CN()
    # FPN levels distilled by feature losses whose own DISTILL.<NAME>.IN_FEATURES is empty.
    distill.FEATURE.IN_FEATURES = list(P2_P6)
    distill.ROI = CN()
    # Which teacher stage answers a standard (single-stage) student when the teacher is a
    # Cascade: "last", "average" (mean of the stages' softmax probabilities, as Detectron2's
    # Cascade inference; logit losses use log of that mean as the teacher's logits), or a stage
    # index "0", "1", ...
    distill.ROI.CASCADE_TEACHER_STAGE = "last"


def _add_feature_loss_keys(distill: CN) -> None:
    """Feature-based losses (student FPN -> teacher FPN)."""
    # Each has IN_FEATURES (see _feature_loss_node): [] = DISTILL.FEATURE.IN_FEATURES.
    # FitNets hint: 1x1-conv adapter (identity when widths match) + MSE.
    distill.FITNET = _feature_loss_node(1.0)
    # DeFeat (ggjy/DeFeat.pytorch, neck-decouple): MSE inside / outside GT boxes, each over
    # 2 x its cell count, x FG_WEIGHT / BG_WEIGHT (configs/kd_faster_rcnn/*decouple_neck.py:
    # hint_neck_w 3, hint_neck_back_w 12), averaged over the levels (all 5 FPN outputs); each box
    # only on the level its scale assigns it to. ADAPTER: "conv3x3" (reference: 3x3 conv
    # initialised near zero, also when widths match) or "channel" (ours: identity when widths
    # match, else 1x1 conv).
    distill.DEFEAT = _feature_loss_node(1.0, P2_P6, FG_WEIGHT=3.0, BG_WEIGHT=12.0, ADAPTER="conv3x3")
    # PKD: MSE between per-channel standardised student and teacher features. Defaults: mmrazor's
    # pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py (weight 6 on neck outputs p2..p5).
    distill.PKD = _feature_loss_node(6.0, P2_P5)
    # CWD: KL between per-channel spatial softmaxes with temperature TAU (times TAU^2).
    # Defaults: mmrazor's cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py (TAU 1, weight 10, p2..p6: the
    # DISTILL.FEATURE.IN_FEATURES default).
    distill.CWD = _feature_loss_node(10.0, TAU=1.0)
    # FGD (Yang et al., CVPR 2022): focal (fg/bg with attention masks) + global (GcBlock) terms.
    # Defaults: the official two-stage (Faster R-CNN) config of yzd-v/FGD, on neck.fpn_convs.0..3
    # = p2..p5. Its configs also set init_student (DISTILL.INIT_FROM_TEACHER, on in our fgd configs).
    distill.FGD = _feature_loss_node(
        1.0, P2_P5, TEMPERATURE=0.5, ALPHA=5e-5, BETA=2.5e-5, GAMMA=5e-5, LAMBDA=5e-7
    )
    # MGD (Yang et al., ECCV 2022): masked generative distillation. Defaults: the official
    # two-stage configs of yzd-v/MGD (p2..p5; one-stage detectors use MASK_RATIO 0.65, ALPHA 2e-5).
    distill.MGD = _feature_loss_node(1.0, P2_P5, MASK_RATIO=0.45, ALPHA=5e-7)
    # ReviewKD (Chen et al., CVPR 2021): ABF fusion coarse -> fine + hierarchical context loss
    # with adaptive pooling to HCL_LEVELS. NORM of the ABF convs: "BN" (official), "GN" (small
    # per-device batches), "" (none).
    # Official levels: all 5 FPN outputs (the DISTILL.FEATURE.IN_FEATURES default).
    distill.REVIEWKD = _feature_loss_node(1.0, MID_CHANNELS=256, HCL_LEVELS=[4, 2, 1], NORM="BN")
    # SimKD (Chen et al., CVPR 2022): projector student FPN -> teacher space, teacher RPN/ROI
    # heads reused by the student. The deployable student = backbone + projector + teacher heads.
    # PROJECTOR: "bottleneck" (1x1-3x3-1x1 convs, width out/FACTOR, NORM) or "identity" (only when
    # student and teacher FPN widths match). TRAIN_HEADS: fine-tune the reused teacher heads.
    distill.SIMKD = _feature_loss_node(1.0, PROJECTOR="bottleneck", FACTOR=2, NORM="GN", TRAIN_HEADS=False)


def _add_response_loss_keys(distill: CN) -> None:
    """Response-based losses on the ROI heads (the teacher scores the student's proposals)."""
    # Vanilla KD: KL(softmax(t/T) || softmax(s/T)) * T^2 over the K+1 classes, mean over RoIs.
    # POS_WEIGHT / NEG_WEIGHT for foreground / background RoIs: 1, 1 = plain KD (mean over all
    # RoIs); any other pair = DeFeat's decoupled head KD, each group averaged over its own RoIs
    # then weighted (ggjy/DeFeat.pytorch mmdet/apis/train.py; their setting: 2, 2 at T 1).
    distill.LOGIT_KD = _loss_node(1.0, TEMPERATURE=2.0, POS_WEIGHT=1.0, NEG_WEIGHT=1.0)
    # MSE between class logits (mean over the K+1 classes); POS/NEG weights as LOGIT_KD.
    distill.LOGIT_MSE = _loss_node(1.0, POS_WEIGHT=1.0, NEG_WEIGHT=1.0)
    # Box-regression KD on foreground RoIs, summed over them and divided by all sampled RoIs
    # (Detectron2's box_reg_loss). LOSS: "l1" or "l2_deltas" (L1 / squared error on box deltas in
    # the student's delta space, teacher box re-encoded) or "giou" (decoded boxes). CLASS: "gt"
    # (ground-truth class), "teacher" (teacher's top class) or "agnostic".
    distill.BOX_KD = _loss_node(1.0, LOSS="l1", CLASS="gt")
    # Mask-logit KD (Mask R-CNN; ours): MSE between mask logits of the ground-truth class.
    distill.MASK_KD = _loss_node(1.0)
    # CrossKD (jbwang1997/CrossKD, branch faster-rcnn, crosskd_two_stage.py): the student's FPN
    # features (1x1-conv adapter where widths differ) through the teacher's frozen pooler, box head
    # and predictor on the student's RoIs; its output is distilled to the teacher's own output.
    # TEMPERATURE: of the class KD (KL x T^2). CLS_WEIGHT: the class KD's weight. REG_WEIGHT: the
    # L1 on the teacher's top-class deltas weighted by its probability. Defaults: the reference's
    # Faster R-CNN config (T 3, loss_weight 0.5 and 1.0). MASK_WEIGHT: the mask term when student
    # and teacher both have a mask head (the teacher's mask head on the student's foreground RoIs,
    # quality focal loss to the teacher's mask sigmoid over every class channel, / #sampled RoIs;
    # reference: its Mask R-CNN config, KDQualityFocalLoss beta 1, loss_weight 1.0); 0 = box terms
    # only, as the reference's Faster R-CNN recipe. WEIGHT multiplies every term.
    distill.CROSSKD = _loss_node(1.0, TEMPERATURE=3.0, CLS_WEIGHT=0.5, REG_WEIGHT=1.0, MASK_WEIGHT=1.0)


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
