"""The SLURM launcher (tools/submit_slurm.py, dla_kd/engine/slurm.py): each node's command line,
requeueing with --resume, and a real submission through submitit's local executor that trains a
tiny model on two gloo processes. No SLURM cluster and no GPU here: sbatch itself, several nodes
and NCCL are not run (docs/distributed.md)."""
import os
import sys

import pytest

from dla_kd.engine.slurm import TRAIN_NET, TrainJob, default_port
from tiny_models import MICRO, TINY, load_tool, tool_main

ARGV = ["--config-file", "cfg.yaml", "--num-gpus", "8", "SOLVER.BASE_LR", "0.04"]


def test_each_node_runs_train_net_with_its_machine_rank():
    job = TrainJob(ARGV)
    cmd = job.node_command(num_nodes=2, node=1, first_host="gpu-a", job_id="4242")
    assert cmd[:2] == [sys.executable, TRAIN_NET]
    port = default_port("4242")
    assert 20000 <= port < 40000 and default_port("4243") != port
    assert cmd[2:] == ["--num-machines", "2", "--machine-rank", "1", "--dist-url", f"tcp://gpu-a:{port}", *ARGV]
    # One node: Detectron2's launch on a free local port.
    assert TrainJob(ARGV, port=1234).node_command(1, 0, "gpu-a", "1")[2:8] == [
        "--num-machines", "1", "--machine-rank", "0", "--dist-url", "auto"]
    assert "tcp://gpu-a:1234" in TrainJob(ARGV, port=1234).node_command(4, 3, "gpu-a", "1")
    with pytest.raises(ValueError, match="the launcher sets --num-machines"):
        TrainJob(ARGV + ["--machine-rank", "0"])


def test_a_preempted_job_is_requeued_with_resume():
    pytest.importorskip("submitit", reason="submitit (the optional extra dla-kd[slurm]) is not installed")
    requeued = TrainJob(ARGV, port=1234).checkpoint()
    again = requeued.function
    assert again.argv == ["--resume", *ARGV] and again.port == 1234
    assert again.checkpoint().function.argv == ["--resume", *ARGV]  # not twice


def test_submit_to_the_local_executor_trains_on_two_gloo_processes(use_synthetic_root, tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit", reason="submitit (the optional extra dla-kd[slurm]) is not installed")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path / "run")
    code = tool_main("submit_slurm")([
        "--cluster", "local", "--job-dir", str(tmp_path / "jobs" / "%j"), "--timeout", "15", "--wait",
        "--config-file", TINY, "--num-gpus", "2", *MICRO, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.005",
        "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    assert "submitted job" in printed.out and "finished" in printed.out
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(os.path.join(out, "log.txt.rank1"))  # the second process wrote its own log
    job_logs = "".join(open(os.path.join(d, f)).read() for d, _, fs in os.walk(tmp_path / "jobs")
                       for f in fs if f.endswith(".out"))
    assert "--num-machines 1 --machine-rank 0 --dist-url auto" in job_logs


def test_the_sbatch_script_asks_one_task_per_node_with_its_gpus(tmp_path, monkeypatch):
    """What would reach sbatch, without a cluster: submitit checks for srun, a stub stands in."""
    pytest.importorskip("submitit", reason="submitit (the optional extra dla-kd[slurm]) is not installed")
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")
    tool = load_tool("submit_slurm")
    args, rest = tool.build_parser().parse_known_args([
        "--nodes", "2", "--partition", "gpu", "--timeout", "90", "--mem-gb", "64", "--slurm", "account=proj",
        "--job-dir", str(tmp_path / "%j"), *ARGV])
    assert rest == ARGV  # train_net's arguments pass through unchanged
    script = tool.executor_for(args, 8)._executor._make_submission_file_text("CMD", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--cpus-per-task=64", "--partition=gpu",
                 "--time=90", "--mem=64GB", "--account=proj", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in script, line
