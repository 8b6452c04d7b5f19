"""The trainer behind ``tools/train_net.py``: Detectron2's ``DefaultTrainer`` with COCO
evaluation of layout datasets, results written as JSON, and dla-kd's checkpointer."""
import logging
import os
import weakref

from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.utils import comm
from detectron2.utils.events import JSONWriter
from detectron2.utils.logger import setup_logger

from ..checkpoint import DLACheckpointer, remove_training_temporaries
from ..data.mixed_loader import build_mixed_train_loader, uses_unlabeled
from ..data.page_checks import check_training_pages
from ..distill.balance import attach_grad_scaler
from ..distill.feature_cache import CachedFeaturesMapper
from ..evaluation import LayoutCOCOEvaluator, format_results_table, save_eval_results
from ..utils.events import current_iter
from . import auto_scale
from .distill_check import DISTILL_META_ARCHITECTURE, check_distill_section
from .eval_outputs import eval_suffix, weights_fingerprint
from .final_checkpoint import restore_final_checkpoint
from .frozen_norms import check_frozen_norms_initialised
from .optimizer import build_optimizer, check_lr_steps, reapply_solver_config
from .run_metrics import METRICS_FILE, OpenAtFirstWrite, move_out_rows_after
from .teacher_check import TeacherSanityCheck

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for layout detection and distillation.

    * evaluation: ``LayoutCOCOEvaluator`` (Detectron2's ``COCOEvaluator``: bbox + segm AP, AP50,
      AP75, APs/m/l, per-category AP) on every dataset of ``DATASETS.TEST``; results go to
      ``<OUTPUT_DIR>/eval_<dataset>.json`` and (during training) to Detectron2's ``metrics.json``;
    * checkpoints: :class:`DLACheckpointer` (plain weights into a distillation student, format
      converters, atomic writes); ``--resume`` restores model, optimizer, scheduler and iteration,
      then gives the optimizer the current config's solver settings (a changed ``BASE_LR`` applies;
      ``run_record.py`` says which changes a resume accepts), and re-creates a missing or
      unreadable ``model_final.pth`` of a finished run (``final_checkpoint.py``);
    * ``metrics.json`` keeps only rows of the iterations before the one training starts from:
      a killed run's rows past its last checkpoint move to ``metrics_discarded_<k>.json``
      (``run_metrics.py``);
    * ``--eval-only`` results never replace another checkpoint's (``eval_outputs.py``);
    * training pages are checked against ``DATASETS.MAX_INSTANCES_PER_PAGE`` and, for mask
      models, for instances without a mask (``data/page_checks.py``);
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

    def build_writers(self):
        """Detectron2's writers; the one of ``metrics.json`` opens it at its first write, after
        :meth:`resume_or_load` moved out the rows training will log again (``run_metrics.py``)."""
        path = os.path.join(self.cfg.OUTPUT_DIR, METRICS_FILE)
        writers = super().build_writers()
        for i, writer in enumerate(writers):
            if isinstance(writer, JSONWriter):
                writer.close()
                writers[i] = OpenAtFirstWrite(lambda: JSONWriter(path))
        return writers

    def resume_or_load(self, resume=True):
        """Detectron2's ``resume_or_load``. Unless resuming (the checkpoint's trained tensors are
        kept as they are): after a plain MODEL.WEIGHTS, a distillation student's teacher copies are
        applied again, then FrozenBN layers that no source initialised are refused. Rows of
        ``metrics.json`` past the iteration training starts from are moved out (main process)."""
        if comm.is_main_process() and self.cfg.OUTPUT_DIR:
            remove_training_temporaries(self.cfg.OUTPUT_DIR)  # this run holds the folder's lock
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            super().resume_or_load(resume=resume)
        except ValueError as e:
            if "parameter group" not in str(e):
                raise
            raise ValueError(
                f"The optimizer state of {self.checkpointer.get_checkpoint_file()} does not fit this model: the "
                f"config changed its trainable parameters ({e}). Train into another OUTPUT_DIR with MODEL.WEIGHTS "
                "set to that checkpoint instead of --resume."
            ) from None
        if comm.is_main_process() and self.cfg.OUTPUT_DIR:
            move_out_rows_after(self.cfg.OUTPUT_DIR, self.start_iter - 1)
        if resume and self.checkpointer.has_checkpoint():
            reapply_solver_config(self.optimizer, self.scheduler, fresh_groups)
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
        labelled/unlabeled batches for a distillation run with ``DATASETS.UNLABELED``. The
        training pages are loaded once, checked, then given to the loader."""
        mixed = cfg.MODEL.META_ARCHITECTURE == DISTILL_META_ARCHITECTURE and uses_unlabeled(cfg)
        dicts = _train_dicts(cfg)
        check_training_pages(cfg, dicts)
        if mixed:
            return build_mixed_train_loader(cfg, mapper, dataset=dicts)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        check_lr_steps(cfg)
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return LayoutCOCOEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None, weights_file=None, **info):
        """Evaluate on ``cfg.DATASETS.TEST``; write one JSON per dataset and log a table.
        ``weights_file`` (``--eval-only``): the file evaluated; results and inference outputs are
        named so that they never replace another checkpoint's (``eval_outputs.py``)."""
        suffixes, weights = {}, cfg.MODEL.WEIGHTS
        if weights_file is not None:
            weights, sha = weights_file, weights_fingerprint(weights_file)
            info = dict(info, weights_sha256=sha)
            suffixes = {d: eval_suffix(cfg.OUTPUT_DIR, d, weights_file, sha) for d in cfg.DATASETS.TEST}
            if evaluators is None:
                evaluators = [
                    cls.build_evaluator(cfg, d, os.path.join(cfg.OUTPUT_DIR, "inference", d + suffixes[d]))
                    for d in cfg.DATASETS.TEST
                ]
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
                path = save_eval_results(res, cfg.OUTPUT_DIR, dataset_name, suffix=suffixes.get(dataset_name, ""),
                                         weights=weights, iteration=storage_iter, **info)
                logger.info(f"Evaluation of {dataset_name} written to {path}\n{format_results_table(res)}")
        return results


def _train_dicts(cfg):
    """The training pages, as ``build_detection_train_loader(cfg)`` loads them."""
    return get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )


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
