"""Fault injection on tiny models: runs survive kills, collisions and bad files.

A save killed mid-write (a real SIGKILL, and a write that raises) leaves the previous checkpoint
and ``last_checkpoint`` as they were; ``--resume`` of a finished run re-creates a missing or
truncated ``model_final.pth``; kd_report resumes such a run; a second run in a locked OUTPUT_DIR
is refused naming the first, a stale lock is taken over; ``--eval-only`` loads strictly;
``DISTILL.*`` on a plain model is refused; a truncated checkpoint is named (teacher, eval, predict,
export exits 2); free ports for side-by-side runs; an empty ``last_checkpoint`` counts as absent;
the teacher sanity check says how many images it really used; concurrent atomic writes of one
file leave one whole file.
"""
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn

import dla_kd  # noqa: F401
from dla_kd.checkpoint import DLACheckpointer, IncompleteCheckpointError, UnreadableCheckpointError, checkpoint_problem
from dla_kd.engine import Trainer, load_config
from dla_kd.engine.distill_check import changed_distill_keys, check_distill_section
from dla_kd.engine.eval_weights import load_eval_weights
from dla_kd.engine.launch import free_port, process_group_closed, resolve_dist_url
from dla_kd.engine.output_lock import OutputDirLock, OutputDirLockedError, lock_name
from dla_kd.engine.teacher_check import evaluate_teacher
from tiny_models import (
    MICRO, REPO, TINY, TINY_CASCADE, distill_cfg, load_tool, save_random_weights, tool_main, write_config,
)

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
DEFAULT_DIST_URL = "tcp://127.0.0.1:49152"


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS="1", **extra)


@contextlib.contextmanager
def _logged(caplog, name):
    """Records of logger ``name`` in ``caplog`` (dla-kd's loggers may not propagate to the root)."""
    logger = logging.getLogger(name)
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def _truncate(src, dst):
    """A copy of ``src`` cut in the middle, as a save killed mid-write leaves it."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, weights, truncated weights) of a random-init MICRO Mask R-CNN."""
    folder = tmp_path_factory.mktemp("tiny")
    config = write_config(str(folder / "model.yaml"), TINY)
    weights = save_random_weights(config, str(folder / "model.pth"))
    return config, weights, _truncate(weights, str(folder / "truncated.pth"))


# ---- 1. interrupted saves, resume of a finished run ---------------------------------------------

KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    from torch import nn
    from dla_kd.checkpoint import DLACheckpointer
    checkpointer = DLACheckpointer(nn.Linear(64, 64), save_dir=sys.argv[1])
    checkpointer.save("model_0000001", iteration=1)
    def killed_while_writing(obj, f):
        f.write(b"PK\\x03\\x04" + bytes(4096))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = killed_while_writing
    checkpointer.save("model_final", iteration=2)
""")


def test_save_killed_mid_write_leaves_previous_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], env=_env(), capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (tmp_path / "model_final.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert checkpoint_problem(str(tmp_path / "model_0000001.pth")) is None
    # The next save of that name replaces the leftover temporary file.
    DLACheckpointer(nn.Linear(64, 64), save_dir=str(tmp_path)).save("model_final", iteration=2)
    assert checkpoint_problem(str(tmp_path / "model_final.pth")) is None
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth", "model_final.pth"]


def test_save_failing_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    checkpointer = DLACheckpointer(nn.Linear(4, 4), save_dir=str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")


def test_atomic_writes_of_many_writers_leave_one_whole_file(tmp_path, monkeypatch):
    """The one atomic write every module uses (checkpoints, evaluations, caches, rendered pages):
    with ``unique`` temporaries, threads writing one file at once leave one writer's whole file and
    no temporary; a failed write leaves the old file; ``durable=False`` never fsyncs; a copy
    whose source cannot be read leaves the target as it was."""
    from concurrent.futures import ThreadPoolExecutor

    from dla_kd.utils.files import atomic_copy, atomic_write, atomic_write_json, atomic_write_text

    path = str(tmp_path / "cache.json")
    payloads = [{"writer": k, "entries": list(range(20000))} for k in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: atomic_write_json(path, p, unique=True), payloads * 4))
    assert json.load(open(path)) in payloads
    assert os.listdir(tmp_path) == ["cache.json"]

    def half_then_fail(f):
        f.write(b'{"writer"')
        raise OSError("No space left on device")

    for unique in (False, True):
        with pytest.raises(OSError, match="No space left"):
            atomic_write(path, half_then_fail, unique=unique)
        assert json.load(open(path)) in payloads and os.listdir(tmp_path) == ["cache.json"]

    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    atomic_write(str(tmp_path / "page.png"), lambda f: f.write(b"png"), durable=False, unique=True)
    assert synced == [] and (tmp_path / "page.png").read_bytes() == b"png"
    atomic_write_json(path, {"writer": "last"})
    assert len(synced) == 2 and json.load(open(path)) == {"writer": "last"}  # the file, then its folder

    report = str(tmp_path / "report.md")
    atomic_write_text(report, "| AP ± std |")
    atomic_copy(report, path)
    assert open(path, encoding="utf-8").read() == "| AP ± std |"
    with pytest.raises(FileNotFoundError):
        atomic_copy(str(tmp_path / "absent.md"), path)  # the copy's target stays as it was
    assert open(path, encoding="utf-8").read() == "| AP ± std |"
    assert sorted(os.listdir(tmp_path)) == ["cache.json", "page.png", "report.md"]


def test_resume_of_finished_run_recreates_final_checkpoint(use_synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(TINY, MICRO + ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
                                     "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
                                     "OUTPUT_DIR", str(out)])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    final, last = out / "model_final.pth", out / "model_0000001.pth"
    expected = torch.load(str(last))["model"]
    # The state a kill during the final save left before saves were atomic, then a deleted file.
    for damage in (lambda: _truncate(str(last), str(final)), final.unlink):
        damage()
        (out / "last_checkpoint").write_text("model_0000001.pth")
        trainer.resume_or_load(resume=True)
        assert trainer.start_iter == 2
        saved = torch.load(str(final))
        assert saved["iteration"] == 1
        assert all(torch.equal(v, saved["model"][k]) for k, v in expected.items())
        assert (out / "last_checkpoint").read_text() == "model_final.pth"


FAKE_TRAIN_NET = textwrap.dedent("""
    import json, os, shutil, sys
    out = sys.argv[sys.argv.index("OUTPUT_DIR") + 1]
    json.dump(sys.argv[1:], open(os.path.join(out, "argv.json"), "w"))
    shutil.copy(os.environ["GOOD_CHECKPOINT"], os.path.join(out, "model_final.pth"))
""")


def test_kd_report_resumes_a_run_whose_final_checkpoint_is_truncated(tiny, tmp_path, monkeypatch):
    _, weights, truncated = tiny
    kd_report = load_tool("kd_report", "projects/kd_benchmark/tools")
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    monkeypatch.setattr(kd_report, "TRAIN_NET", str(fake))
    monkeypatch.setenv("GOOD_CHECKPOINT", weights)
    out = tmp_path / "student"
    out.mkdir()
    (out / "eval_val.json").write_text(json.dumps({"results": {"bbox": {"AP": 1.0}}}))
    (out / "last_checkpoint").write_text("model_0000001.pth")
    shutil.copy(truncated, out / "model_final.pth")
    assert kd_report.run("cfg.yaml", str(out), [], "val", num_gpus=2) == {"bbox": {"AP": 1.0}}
    argv = json.loads((out / "argv.json").read_text())
    assert "--resume" in argv and argv[argv.index("--dist-url") + 1] == "auto"
    assert checkpoint_problem(str(out / "model_final.pth")) is None
    # Finished and loadable: collected, not run again.
    (out / "argv.json").unlink()
    assert kd_report.run("cfg.yaml", str(out), [], "val", num_gpus=2) is not None
    assert not (out / "argv.json").exists()


# ---- 2. one run per output folder -------------------------------------------------------------

def _holder(pid, host=None):
    return {"pid": pid, "host": host or socket.gethostname(), "since": "2024-05-01 10:00:00 +0000",
            "command": "tools/train_net.py --config-file first.yaml"}


def test_second_run_in_locked_folder_is_refused_naming_the_first(tmp_path):
    with OutputDirLock(str(tmp_path)) as first:
        assert json.load(open(first.path))["pid"] == os.getpid()
        with pytest.raises(OutputDirLockedError, match=rf"PID {os.getpid()} on {socket.gethostname()} since"):
            OutputDirLock(str(tmp_path)).acquire()
        OutputDirLock(str(tmp_path), lock_name(eval_only=True)).acquire().release()  # evaluation: its own lock
    assert not os.path.exists(first.path)
    OutputDirLock(str(tmp_path)).acquire().release()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "train.lock"
    lock.write_text(json.dumps(_holder(dead.pid)))
    with _logged(caplog, "dla_kd.engine.output_lock"), OutputDirLock(str(tmp_path)):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"stale lock {lock} of PID {dead.pid}" in caplog.text
    # Another machine's holder cannot be checked: refused.
    lock.write_text(json.dumps(_holder(dead.pid, host="other-host")))
    with pytest.raises(OutputDirLockedError, match="on other-host"):
        OutputDirLock(str(tmp_path)).acquire()


def test_train_net_refuses_a_locked_output_dir(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / "train.lock").write_text(json.dumps(_holder(sleeper.pid)))
        proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY, *MICRO, "OUTPUT_DIR", str(out)],
                              env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode != 0
    assert f"PID {sleeper.pid} on {socket.gethostname()} since 2024-05-01 10:00:00" in proc.stderr
    assert sorted(os.listdir(out)) == ["train.lock"]  # nothing written: no config.yaml, no log


# ---- 3. strict --eval-only ----------------------------------------------------------------------

def test_eval_only_refuses_weights_of_another_architecture(tiny, tmp_path):
    config, weights, _ = tiny
    cascade = write_config(str(tmp_path / "cascade.yaml"), TINY_CASCADE)
    model = build_model(load_config(cascade))
    cfg = load_config(cascade, ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(IncompleteCheckpointError, match=r"does not match the model.*--allow-partial-weights"):
        load_eval_weights(cfg, model)
    assert load_eval_weights(cfg, model, allow_partial=True) == weights
    # A plain checkpoint evaluates a distillation config: its training-only adapters may be absent.
    distill = build_model(distill_cfg(config, ["fitnet"]))
    load_eval_weights(load_config(config, ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path)]), distill)


def test_train_net_eval_only_with_mismatched_weights_fails(tiny, synthetic_root, tmp_path):
    _, weights, _ = tiny
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY_CASCADE, "--eval-only", *MICRO,
                           "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "eval")],
                          env=_env(DETECTRON2_DATASETS=synthetic_root), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "does not match the model" in proc.stderr and "--allow-partial-weights" in proc.stderr
    assert not (tmp_path / "eval" / "eval_synthetic_doclaynet_val.json").exists()


# ---- 4. DISTILL on a plain model ----------------------------------------------------------------

def test_distill_keys_on_a_plain_model_are_refused(tmp_path):
    opts = MICRO + ["DISTILL.TEACHER.WEIGHTS", str(tmp_path / "missing.pth"), "OUTPUT_DIR", str(tmp_path)]
    with pytest.raises(ValueError, match=r"DISTILL.TEACHER.WEIGHTS.*not DistillGeneralizedRCNN.*DISTILL.ALLOW_UNUSED"):
        Trainer(load_config(TINY, opts))
    assert changed_distill_keys(load_config(TINY, MICRO)) == []
    check_distill_section(load_config(TINY, opts + ["DISTILL.ALLOW_UNUSED", "True"]))  # opted out: a warning


# ---- 5. truncated checkpoints are named ---------------------------------------------------------

def test_truncated_checkpoint_is_named_everywhere(tiny, tmp_path, capsys):
    config, weights, truncated = tiny
    name = re.escape(truncated)
    with pytest.raises(UnreadableCheckpointError, match=rf"Checkpoint {name} \(\d+ bytes\) is truncated or not a"):
        DLACheckpointer(build_model(load_config(config))).load(truncated)
    with pytest.raises(UnreadableCheckpointError, match=rf"Teacher weights \(DISTILL.TEACHER.WEIGHTS\): .*{name}"):
        build_model(distill_cfg(config, ["fitnet"], teacher_weights=truncated))
    cfg = load_config(config, ["MODEL.WEIGHTS", truncated, "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(UnreadableCheckpointError, match=rf"Weights to evaluate.*{name}.*truncated"):
        load_eval_weights(cfg, build_model(cfg))

    status = tool_main("export_model")(["--config-file", config, "--format", "torchscript", "--output",
                                        str(tmp_path / "export"), "--no-check", "MODEL.WEIGHTS", truncated])
    err = capsys.readouterr().err
    assert status == 2 and truncated in err and "truncated or not a checkpoint" in err
    status = tool_main("predict")(["--config-file", config, "--input", str(tmp_path), "--output",
                                   str(tmp_path / "pred"), "--no-progress", "MODEL.WEIGHTS", truncated])
    err = capsys.readouterr().err
    assert status == 2 and truncated in err and "truncated or not a checkpoint" in err


def test_checkpoint_problem_says_what_is_wrong(tiny, tmp_path):
    _, weights, truncated = tiny
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    bare = str(tmp_path / "bare.pth")
    torch.save({"weights": {}}, bare)
    assert checkpoint_problem(weights) is None
    assert "truncated" in checkpoint_problem(truncated) and truncated in checkpoint_problem(truncated)
    assert "(0 bytes) is truncated" in checkpoint_problem(str(empty))
    assert "no 'model' entry" in checkpoint_problem(bare)
    assert "does not exist" in checkpoint_problem(str(tmp_path / "missing.pth"))


# ---- 6. free ports for side-by-side runs --------------------------------------------------------

def test_free_port_is_bindable_and_not_the_fixed_default():
    with socket.socket() as held:
        port = free_port()
        held.bind(("127.0.0.1", port))  # bindable
        assert free_port() != port  # a second run does not get the port the first one holds
    for url in ("auto", DEFAULT_DIST_URL):
        resolved = resolve_dist_url(url, 1, DEFAULT_DIST_URL)
        assert resolved.startswith("tcp://127.0.0.1:") and resolved != DEFAULT_DIST_URL
    assert resolve_dist_url("tcp://10.0.0.1:1234", 1, DEFAULT_DIST_URL) == "tcp://10.0.0.1:1234"
    assert resolve_dist_url(DEFAULT_DIST_URL, 2, DEFAULT_DIST_URL) == DEFAULT_DIST_URL


def test_worker_closes_its_process_group_after_success_only(tmp_path):
    """A gloo group left to interpreter exit can abort a run that succeeded (SIGABRT); after an
    error the group is left alone (a barrier could hang on a dead peer)."""
    def init(store_name):
        dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / store_name), 1), rank=0, world_size=1)

    init("first")
    try:
        with process_group_closed():
            assert dist.is_initialized()
        assert not dist.is_initialized()
        init("second")
        with pytest.raises(RuntimeError, match="boom"):
            with process_group_closed():
                raise RuntimeError("boom")
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---- 7. empty last_checkpoint, teacher sanity check count ---------------------------------------

def test_empty_last_checkpoint_counts_as_absent(tmp_path, caplog):
    (tmp_path / "last_checkpoint").write_text("")
    checkpointer = DLACheckpointer(nn.Linear(4, 4), save_dir=str(tmp_path))
    with _logged(caplog, "dla_kd.checkpoint.files"):
        assert not checkpointer.has_checkpoint()
        assert checkpointer.resume_or_load("", resume=True) == {}
    warned = {id(r) for r in caplog.records if "last_checkpoint is empty" in r.getMessage()}
    assert len(warned) == 1  # said once, though asked twice


def test_teacher_sanity_check_counts_the_images_it_used(tiny, use_synthetic_root, tmp_path):
    config, weights, _ = tiny
    teacher_cfg = load_config(config)
    teacher = build_model(teacher_cfg).eval()
    DLACheckpointer(teacher).load(weights)
    _, used = evaluate_teacher(teacher, teacher_cfg, "synthetic_doclaynet_val", 20, str(tmp_path))
    assert used == 2  # the split has 2 pages, not the 20 asked for


class _OracleTeacher(nn.Module):
    """Predicts each page's ground-truth boxes with score 1 (a perfect teacher)."""

    def __init__(self, dicts):
        super().__init__()
        self.pages = {d["image_id"]: d for d in dicts}

    def forward(self, batched_inputs):
        outputs = []
        for inputs in batched_inputs:
            page = self.pages[inputs["image_id"]]
            annos = page["annotations"]
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
            instances = Instances((page["height"], page["width"]))
            instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            instances.scores = torch.ones(len(annos))
            instances.pred_classes = torch.tensor([a["category_id"] for a in annos])
            outputs.append({"instances": instances})
        return outputs


def test_teacher_sanity_check_scores_only_the_images_it_used(tiny, use_synthetic_root, tmp_path):
    """A perfect teacher on the first page of two scores 100 AP: the evaluation does not count the
    page it never saw as missed (it did: about half the true AP)."""
    dicts = DatasetCatalog.get("synthetic_doclaynet_val")
    assert len(dicts) == 2
    results, used = evaluate_teacher(_OracleTeacher(dicts), load_config(tiny[0]), "synthetic_doclaynet_val", 1,
                                     str(tmp_path))
    assert used == 1
    assert results["bbox"]["AP"] == pytest.approx(100.0)
