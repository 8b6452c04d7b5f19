"""Fault injection on tiny models: runs survive kills, collisions and bad files.

A save killed mid-write (a real SIGKILL, and a write that raises) leaves the previous checkpoint
and ``last_checkpoint`` as they were; ``--resume`` of a finished run re-creates a missing or
truncated ``model_final.pth``; kd_report resumes such a run; a second run in a locked OUTPUT_DIR
is refused naming the first, a stale lock is taken over; ``--eval-only`` loads strictly;
``DISTILL.*`` on a plain model is refused; a truncated checkpoint is named (teacher, eval, predict,
export exits 2); free ports for side-by-side runs; an empty ``last_checkpoint`` counts as absent;
the teacher sanity check says how many images it really used; concurrent atomic writes of one
file leave one whole file. A killed launcher: its workers stop, the lock stays taken while any of
them lives, a ``--num-gpus 2`` run killed mid-training resumes alone; a reused PID; temporaries of
killed saves removed; a damaged ``last_checkpoint`` falls back to the newest complete checkpoint;
``--eval-only`` in a run folder writes beside the run's evaluation; maskless instances and
crowded pages are named before training; a resume moves the killed run's metrics rows past its
checkpoint out of ``metrics.json``. (``--resume`` with a changed config:
``test_resume_config.py``.)
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


def test_a_requeued_slurm_job_takes_over_its_own_earlier_lock_from_another_node(tmp_path, monkeypatch, caplog):
    lock = tmp_path / "train.lock"
    earlier = {**_holder(12345, host="node-a"), "slurm_job_id": "777", "slurm_restart_count": 0}
    lock.write_text(json.dumps(earlier))
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same incarnation (another task of it): refused
    with pytest.raises(OutputDirLockedError, match="on node-a"):
        OutputDirLock(str(tmp_path)).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "778")  # another job: refused
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(OutputDirLockedError, match="on node-a"):
        OutputDirLock(str(tmp_path)).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "777")  # the job, requeued: its earlier allocation has ended
    with _logged(caplog, "dla_kd.engine.output_lock"), OutputDirLock(str(tmp_path)):
        record = json.loads(lock.read_text())
        assert (record["slurm_job_id"], record["slurm_restart_count"]) == ("777", 1)
    assert "stale lock" in caplog.text and "node-a" in caplog.text


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


# ---- 8. a killed launcher: its workers stop, the lock stays taken while any of them lives -------

LAUNCHER_WITH_WORKER = textwrap.dedent("""
    import os, subprocess, sys, time
    from dla_kd.engine.output_lock import LOCK_PATH_ENV, OutputDirLock
    lock = OutputDirLock(sys.argv[1]).acquire()
    worker = ("import sys, time; from dla_kd.engine.output_lock import join_run_lock; "
              "from dla_kd.engine.launch import stop_with_launcher; "
              "stop_with_launcher(int(sys.argv[1])) if sys.argv[2] == 'stop' else None; "
              "join_run_lock(); print('joined', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", worker, str(os.getpid()), sys.argv[2]],
                             env=dict(os.environ, **{LOCK_PATH_ENV: lock.path}))
    print(child.pid, flush=True)
    time.sleep(120)
""")


def _start_launcher(folder, mode):
    """A launcher holding ``folder``'s lock with one worker; returns (launcher, worker PID)."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_WITH_WORKER, str(folder), mode], env=_env(),
                                stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    assert launcher.stdout.readline().strip() == "joined"
    return launcher, worker


def _gone(pid, timeout=20.0):
    """Whether process ``pid`` has exited within ``timeout`` seconds: gone, or a zombie whose
    threads have all exited (a zombie leader's other threads may still hold its files)."""
    import time

    deadline = time.time() + timeout
    while True:  # checked at least once
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1:
                    return True
        except FileNotFoundError:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.2)


def test_lock_stays_taken_while_a_worker_of_a_killed_launcher_lives(tmp_path, caplog):
    launcher, worker = _start_launcher(tmp_path, "keep")  # a worker that does not stop with its launcher
    try:
        launcher.kill()
        launcher.wait()
        assert not _gone(worker, timeout=1.0)
        # The lock names the dead launcher, but its worker holds it: not stale.
        with pytest.raises(OutputDirLockedError, match=rf"in use by another run: PID {launcher.pid} .*has exited, but processes of its run"):
            OutputDirLock(str(tmp_path)).acquire()
    finally:
        os.kill(worker, signal.SIGKILL)
    assert _gone(worker)
    with _logged(caplog, "dla_kd.engine.output_lock"), OutputDirLock(str(tmp_path)):
        pass
    assert f"Taking over the stale lock {tmp_path / 'train.lock'} of PID {launcher.pid}" in caplog.text


def test_worker_stops_when_its_launcher_dies(tmp_path):
    launcher, worker = _start_launcher(tmp_path, "stop")
    launcher.kill()
    launcher.wait()
    assert _gone(worker, timeout=10.0), "the worker outlived its launcher"
    OutputDirLock(str(tmp_path)).acquire().release()  # nobody of that run is left: stale, taken over


def test_lock_whose_pid_was_reused_is_stale(tmp_path, caplog):
    """The holder's PID now runs another process (started at another time): taken over."""
    from dla_kd.engine.output_lock import process_start_time

    lock = tmp_path / "train.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        started = process_start_time(sleeper.pid)
        assert started is not None
        lock.write_text(json.dumps(dict(_holder(sleeper.pid), pid_start=started)))
        with pytest.raises(OutputDirLockedError, match=f"PID {sleeper.pid}"):  # the holder itself: alive
            OutputDirLock(str(tmp_path)).acquire()
        lock.write_text(json.dumps(dict(_holder(sleeper.pid), pid_start=started - 100)))
        with _logged(caplog, "dla_kd.engine.output_lock"), OutputDirLock(str(tmp_path)):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert f"stale lock {lock} of PID {sleeper.pid}" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()


def test_worker_refuses_a_lock_taken_by_another_run(tmp_path):
    from dla_kd.engine.output_lock import RunLockLostError, join_run_lock

    lock = tmp_path / "train.lock"
    with pytest.raises(RunLockLostError, match="is gone"):
        join_run_lock(str(lock), launcher_pid=12345)
    lock.write_text(json.dumps(_holder(os.getpid())))
    with pytest.raises(RunLockLostError, match=rf"names PID {os.getpid()}.*not this run's launcher \(PID 12345\)"):
        join_run_lock(str(lock), launcher_pid=12345)


def _metrics_rows(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json")) if line.strip()]


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_launcher_killed_mid_training_then_resume(synthetic_root, tmp_path):
    """``--num-gpus 2`` (gloo) launcher SIGKILLed mid-training, then ``--resume`` at once: the
    workers stop with it; the resume is refused while any of them lives, else resumes from the
    last checkpoint alone; metrics.json holds the killed stretch, then the resumed one, never
    two writers interleaved; every checkpoint is whole and the run finishes."""
    import time

    out = str(tmp_path / "run")
    max_iter = 14
    flags = ["--config-file", TINY, "--num-gpus", "2"]
    args = [*MICRO, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005",
            "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", str(max_iter),
            "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out]
    env = _env(DETECTRON2_DATASETS=synthetic_root)
    launcher = subprocess.Popen([sys.executable, TRAIN_NET, *flags, *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 400
        while not os.path.isfile(os.path.join(out, "model_0000003.pth")):
            assert launcher.poll() is None and time.time() < deadline, "the run ended or stalled before iteration 3"
            time.sleep(0.5)
        workers = [p for p in _children(launcher.pid) if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
        assert len(workers) == 2
        launcher.kill()
        launcher.wait()
        killed_at = time.time()
        resume = subprocess.Popen([sys.executable, TRAIN_NET, *flags, "--resume", *args], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert all(_gone(p, timeout=killed_at + 20 - time.time()) for p in workers), "orphaned workers"
        stdout, stderr = resume.communicate(timeout=600)
        first = subprocess.CompletedProcess(resume.args, resume.returncode, stdout, stderr)
    finally:
        for p in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
    if first.returncode != 0:  # refused while the orphans lived: clearly, then resumed once they are gone
        assert "is in use by another run" in first.stderr, first.stderr[-3000:]
        first = subprocess.run([sys.executable, TRAIN_NET, *flags, "--resume", *args], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    log = open(os.path.join(out, "log.txt")).read()
    resumed_from = list(re.finditer(r"from (\S+model_(\d+)\.pth)", log))
    start = int(resumed_from[-1].group(2)) + 1 if resumed_from else 0
    assert start >= 4, log[-3000:]
    # Detectron2 writes a metrics row every 20 iterations and at the end: here only the resumed
    # run's last; two trainings at once each wrote one (two iteration-13 rows).
    iterations = [r["iteration"] for r in _metrics_rows(out) if "total_loss" in r]
    assert iterations == [max_iter - 1], iterations
    # Each checkpoint saved once by each run: the killed run's before the resumed run loaded its
    # checkpoint, the resumed run's after, all past that checkpoint. (A save the kill interrupted
    # is logged and then redone by the resumed run: its name appears once in each stretch.) Two
    # trainings at once would both save the same names after the resume's load.
    saves = r"Saving checkpoint to \S+/(model_\w+\.pth)"
    killed, resumed = re.findall(saves, log[:resumed_from[-1].start()]), re.findall(saves, log[resumed_from[-1].start():])
    assert len(killed) == len(set(killed)) and len(resumed) == len(set(resumed)), (killed, resumed)
    assert "model_final.pth" in resumed and "model_final.pth" not in killed, (killed, resumed)
    assert all(int(n[len("model_"):-len(".pth")]) >= start for n in resumed if n != "model_final.pth"), resumed
    assert torch.load(os.path.join(out, "model_final.pth"))["iteration"] == max_iter - 1
    for name in os.listdir(out):
        if name.endswith(".pth"):
            assert checkpoint_problem(os.path.join(out, name)) is None, name
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or n == "train.lock"]
    assert os.path.isfile(os.path.join(out, "config.yaml")) and os.path.isfile(os.path.join(out, "config_resume_1.yaml"))


# ---- 9. temporaries of killed saves, damaged last_checkpoint ------------------------------------

def test_temporaries_of_killed_saves_are_removed_at_the_next_start(use_synthetic_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    leftovers = ["model_0000001.pth.tmp", "last_checkpoint.tmp", "config.yaml.tmp", "model_final.pth.123.456.tmp",
                 "metrics.json.tmp", "metrics_discarded_1.json.tmp"]
    kept = ["eval_synthetic_doclaynet_val.json.tmp", "notes.tmp"]  # an evaluation may be writing; not ours
    for name in leftovers + kept:
        (out / name).write_bytes(b"PK\x03\x04")
    cfg = load_config(TINY, MICRO + ["SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out)])
    Trainer(cfg).resume_or_load(resume=True)
    assert sorted(n for n in os.listdir(out) if n.endswith(".tmp")) == sorted(kept)


def test_damaged_last_checkpoint_falls_back_to_the_newest_complete_checkpoint(tiny, tmp_path, caplog):
    _, weights, truncated = tiny
    model = nn.Linear(4, 4)
    for iteration in (1, 3):
        DLACheckpointer(model, save_dir=str(tmp_path)).save(f"model_{iteration:07d}", iteration=iteration)
    shutil.copy(truncated, tmp_path / "model_0000005.pth")  # newest, but cut short
    for damage in ("", "model_0000009.pth"):  # empty, or naming a file that is not there
        (tmp_path / "last_checkpoint").write_text(damage)
        checkpointer = DLACheckpointer(nn.Linear(4, 4), save_dir=str(tmp_path))
        with _logged(caplog, "dla_kd.checkpoint.files"):
            assert checkpointer.has_checkpoint()
            assert checkpointer.resume_or_load("", resume=True)["iteration"] == 3
        assert f"using the newest complete checkpoint {tmp_path / 'model_0000003.pth'}" in caplog.text
        assert "Skipping" in caplog.text and "model_0000005.pth" in caplog.text


# ---- 10. --eval-only into a finished run's folder -----------------------------------------------

def test_eval_only_in_a_run_folder_never_replaces_the_runs_evaluation(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    short = [*MICRO, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005", "SOLVER.WARMUP_ITERS", "1",
             "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", out]
    env = _env(DETECTRON2_DATASETS=synthetic_root)

    def train_net(*extra, eval_only=False):
        flags = ["--eval-only"] if eval_only else []
        proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY, *flags, *short, *extra], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    train_net()
    final_eval = open(os.path.join(out, "eval_synthetic_doclaynet_val.json")).read()
    config = open(os.path.join(out, "config.yaml")).read()
    older = os.path.join(out, "model_0000000.pth")
    train_net("MODEL.WEIGHTS", older, "TEST.DETECTIONS_PER_IMAGE", "7", eval_only=True)
    assert open(os.path.join(out, "eval_synthetic_doclaynet_val.json")).read() == final_eval
    assert open(os.path.join(out, "config.yaml")).read() == config
    named = json.load(open(os.path.join(out, "eval_synthetic_doclaynet_val__model_0000000.json")))
    assert named["weights"] == older and len(named["weights_sha256"]) == 64 and named["iteration"] is None
    assert "DETECTIONS_PER_IMAGE: 7" in open(os.path.join(out, "config_eval__model_0000000.yaml")).read()
    assert os.path.isdir(os.path.join(out, "inference", "synthetic_doclaynet_val__model_0000000"))
    # Another file of the same name (another run's first checkpoint): its own file, not this one's.
    other = tmp_path / "other" / "model_0000000.pth"
    other.parent.mkdir()
    data = torch.load(older)
    data["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in data["model"].items()}
    torch.save(data, other)
    train_net("MODEL.WEIGHTS", str(other), eval_only=True)
    again = [n for n in os.listdir(out) if n.startswith("eval_synthetic_doclaynet_val__model_0000000-")]
    assert len(again) == 1 and json.load(open(os.path.join(out, again[0])))["weights"] == str(other)
    assert json.load(open(os.path.join(out, "eval_synthetic_doclaynet_val__model_0000000.json"))) == named


# ---- 11. annotations the loader accepts but training cannot use --------------------------------

def test_instance_without_mask_gets_its_box_and_maskless_data_is_refused_for_mask_models(tmp_path, caplog):
    from dla_kd.data import PUBLAYNET_CATEGORIES
    from dla_kd.data.coco_layout import CorruptAnnotationError, load_layout_coco_json
    from dla_kd.data.page_checks import check_training_pages
    from layout_files import publaynet_like

    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 10], "iscrowd": 0,
         "segmentation": [[5, 5, 35, 5, 35, 15, 5, 15]]},
        {"id": 11, "image_id": 2, "category_id": 5, "bbox": [10, 20, 40, 40], "iscrowd": 0, "segmentation": []},
    ]
    path = publaynet_like(str(tmp_path / "mixed"), annotations=anns)
    with _logged(caplog, "dla_kd.data.coco_layout"):
        records = load_layout_coco_json(path, os.path.join(os.path.dirname(path), "val"), PUBLAYNET_CATEGORIES)
    assert records[1]["annotations"][0]["segmentation"] == [[10, 20, 50, 20, 50, 60, 10, 60]]
    assert f"{path}: 1 annotations have no segmentation" in caplog.text and "annotation 11 (image 2)" in caplog.text
    mask_cfg = load_config(TINY, MICRO)
    check_training_pages(mask_cfg, records)

    for ann in anns:
        ann["segmentation"] = []
    boxes_only = publaynet_like(str(tmp_path / "boxes"), annotations=anns)
    records = load_layout_coco_json(boxes_only, os.path.join(os.path.dirname(boxes_only), "val"),
                                    PUBLAYNET_CATEGORIES)
    assert all("segmentation" not in a for r in records for a in r["annotations"])
    with pytest.raises(CorruptAnnotationError, match=r"2 instances have no segmentation.*MASK_ON.*a\.png \(image id 1\)"):
        check_training_pages(mask_cfg, records)
    check_training_pages(load_config(TINY, MICRO + ["MODEL.MASK_ON", "False"]), records)


def test_page_with_too_many_instances_is_refused_before_training(use_synthetic_root, tmp_path):
    from dla_kd.data.coco_layout import CorruptAnnotationError
    from dla_kd.data.page_checks import check_training_pages

    cfg = load_config(TINY, MICRO + ["DATASETS.MAX_INSTANCES_PER_PAGE", "3"])
    crowded = {"file_name": "/data/page7.png", "image_id": 7,
               "annotations": [{"bbox": [i, i, 1, 1], "segmentation": [[i, i, i + 1, i, i + 1, i + 1]]}
                               for i in range(4)]}
    with pytest.raises(CorruptAnnotationError,
                       match=r"1 pages have more than DATASETS.MAX_INSTANCES_PER_PAGE=3.*/data/page7.png \(image id 7\): 4"):
        check_training_pages(cfg, [crowded])
    check_training_pages(load_config(TINY, MICRO + ["DATASETS.MAX_INSTANCES_PER_PAGE", "0"]), [crowded])  # no limit
    # The trainer checks before the first step (the synthetic pages have more than 3 regions each).
    with pytest.raises(CorruptAnnotationError, match="DATASETS.MAX_INSTANCES_PER_PAGE=3"):
        Trainer(load_config(TINY, MICRO + ["DATASETS.MAX_INSTANCES_PER_PAGE", "3", "OUTPUT_DIR", str(tmp_path)]))


# ---- 12. metrics.json after a resume ------------------------------------------------------------

def test_resume_moves_the_killed_runs_rows_past_its_checkpoint_out_of_metrics_json(use_synthetic_root, tmp_path,
                                                                                  caplog, monkeypatch):
    """A run killed after its checkpoint at iteration 1 had logged iterations 2 and 3 and a line cut
    mid-write. The resume trains them again: metrics.json then holds each iteration once (the
    resumed run's), the killed run's lines are kept in a new metrics_discarded_<k>.json, named in
    the log; only the main process moves them."""
    from detectron2.utils import comm

    out = tmp_path / "run"
    opts = MICRO + ["SOLVER.IMS_PER_BATCH", "1", "SOLVER.BASE_LR", "0.005", "SOLVER.STEPS", "()",
                    "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out)]
    trainer = Trainer(load_config(TINY, opts + ["SOLVER.MAX_ITER", "2"]))
    trainer.resume_or_load(resume=False)
    trainer.train()  # the checkpoint of iteration 1, a metrics row of iteration 1
    metrics = out / "metrics.json"
    first = metrics.read_text()
    killed = "".join(json.dumps({"iteration": i, "total_loss": -1.0}) + "\n" for i in (2, 3)) + '{"iteration": 4, "tot'
    metrics.write_text(first + killed)
    (out / "metrics_discarded_1.json").write_text("an earlier resume's\n")

    trainer = Trainer(load_config(TINY, opts + ["SOLVER.MAX_ITER", "4"]))
    with monkeypatch.context() as m:
        m.setattr(comm, "is_main_process", lambda: False)
        trainer.resume_or_load(resume=True)
    assert metrics.read_text() == first + killed  # another rank leaves the file alone
    with _logged(caplog, "dla_kd"):
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    trainer.train()

    rows = _metrics_rows(out)
    assert [r["iteration"] for r in rows] == [1, 3] and rows[1]["total_loss"] > 0, rows
    assert metrics.read_text().startswith(first)
    assert (out / "metrics_discarded_2.json").read_text() == killed + "\n"
    assert (out / "metrics_discarded_1.json").read_text() == "an earlier resume's\n"
    assert (f"{metrics}: moved 2 rows of iterations after 1 (2, 3) and 1 lines that are not whole rows to "
            f"{out / 'metrics_discarded_2.json'}") in caplog.text
