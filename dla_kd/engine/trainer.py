"""The trainer behind ``tools/train_net.py``: Detectron2's ``DefaultTrainer`` with COCO
evaluation of layout datasets, results written as JSON, and dla-kd's checkpointer."""
import logging
import os
import weakref

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import DLACheckpointer
from ..data.mixed_loader import build_mixed_train_loader, uses_unlabeled
from ..distill.balance import attach_grad_scaler
from ..distill.feature_cache import CachedFeaturesMapper
from ..evaluation import format_results_table, save_eval_results
from ..utils.events import current_iter
from . import auto_scale
from .distill_check import DISTILL_META_ARCHITECTURE, check_distill_section
from .final_checkpoint import restore_final_checkpoint
from .frozen_norms import check_frozen_norms_initialised
from .optimizer import build_optimizer
from .teacher_check import TeacherSanityCheck

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for layout detection and distillation.

    * evaluation: ``COCOEvaluator`` (bbox + segm AP, AP50, AP75, APs/m/l, per-category AP) on
      every dataset of ``DATASETS.TEST``; results go to ``<OUTPUT_DIR>/eval_<dataset>.json`` and
      (during training) to Detectron2's ``metrics.json``;
    * checkpoints: :class:`DLACheckpointer` (plain weights into a distillation student, format
      converters, atomic writes); ``--resume`` restores model, optimizer, scheduler and iteration,
      and re-creates a missing or unreadable ``model_final.pth`` of a finished run
      (``final_checkpoint.py``);
    * ``DISTILL.*`` set on a plain model is refused (``distill_check.py``);
    * weights order: a plain ``MODEL.WEIGHTS`` first, then a distillation student's teacher
      copies again (``modeling/meta_arch/teacher_init.py``); then the per-module FrozenBN guard
      (``frozen_norms.py``);
    * ``SOLVER.REFERENCE_WORLD_SIZE`` also rescales the KD schedules (``auto_scale.py``);
    * a distillation run with ``DATASETS.UNLABELED`` trains on batches that mix labelled and
      unlabeled pages at ``DISTILL.UNLABELED.RATIO`` (``data/mixed_loader.py``).
    """

    auto_scale_workers = staticmethod(auto_scale.auto_scale_workers)

    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that DDP gets device_ids=None for CPU models (gloo) and
        # the checkpointer is DLACheckpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        check_distill_section(cfg)
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, mapper=_train_mapper(cfg, model))
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=_ddp_device_ids(model))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        attach_grad_scaler(model, getattr(self._trainer, "grad_scaler", None))  # DISTILL.BALANCE under AMP
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DLACheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hooks = super().build_hooks()
        model = _unwrap(self._trainer.model)
        if self.cfg.DISTILL.TEACHER.SANITY_CHECK.ENABLED and hasattr(model, "teacher"):
            hooks.insert(0, TeacherSanityCheck(self.cfg, model))
        return hooks

    def resume_or_load(self, resume=True):
        """Detectron2's ``resume_or_load``. Unless resuming (the checkpoint's trained tensors are
        kept as they are): after a plain MODEL.WEIGHTS, a distillation student's teacher copies are
        applied again, then FrozenBN layers that no source initialised are refused."""
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            restore_final_checkpoint(self)
            return
        model = _unwrap(self._trainer.model)
        loaded = self.checkpointer.last_load
        if loaded is not None and not loaded.distillation and hasattr(model, "after_plain_weights"):
            model.after_plain_weights(loaded.keys)
        check_frozen_norms_initialised(model, loaded.keys if loaded is not None else ())

    @classmethod
    def build_train_loader(cls, cfg, mapper=None):
        """Detectron2's train loader (``mapper``: default ``DatasetMapper(cfg, True)``); mixed
        labelled/unlabeled batches for a distillation run with ``DATASETS.UNLABELED``."""
        if cfg.MODEL.META_ARCHITECTURE == DISTILL_META_ARCHITECTURE and uses_unlabeled(cfg):
            return build_mixed_train_loader(cfg, mapper)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None, **info):
        """Evaluate on ``cfg.DATASETS.TEST``; write one JSON per dataset and log a table."""
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process():
            # Index of the last completed iteration, as in the checkpoint (the storage says
            # MAX_ITER after training); None outside training (--eval-only).
            storage_iter = current_iter(default=None)
            if storage_iter is not None:
                storage_iter = min(storage_iter, cfg.SOLVER.MAX_ITER - 1)
            # DefaultTrainer.test unwraps the dict when there is a single dataset.
            per_dataset = {cfg.DATASETS.TEST[0]: results} if len(cfg.DATASETS.TEST) == 1 else results
            for dataset_name, res in per_dataset.items():
                path = save_eval_results(
                    res, cfg.OUTPUT_DIR, dataset_name, weights=cfg.MODEL.WEIGHTS, iteration=storage_iter, **info
                )
                logger.info(f"Evaluation of {dataset_name} written to {path}\n{format_results_table(res)}")
        return results


def _train_mapper(cfg, model):
    """With a teacher feature cache: ``DatasetMapper`` + the cache entries read in the loader's
    workers (``CachedFeaturesMapper``); otherwise None (Detectron2's default mapper)."""
    model = _unwrap(model)
    cache = getattr(model, "feature_cache", None)
    return None if cache is None else CachedFeaturesMapper(DatasetMapper(cfg, True), cache, model.padding)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _ddp_device_ids(model):
    """``[local_rank]`` for a CUDA model, ``None`` for a CPU model (DDP refuses ids on CPU)."""
    device = next(model.parameters()).device
    return [comm.get_local_rank()] if device.type == "cuda" else None
