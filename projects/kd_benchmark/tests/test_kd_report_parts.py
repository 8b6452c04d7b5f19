"""The parts of projects/kd_benchmark/tools/kd_report.py on their own, without training: the plan of
runs, where a run's files are, what counts as finished, and the arguments refused before anything
starts."""
import json
import os

import pytest
import torch

from tiny_models import TINY, load_tool, write_config

TOOLS = "projects/kd_benchmark/tools"


@pytest.fixture(scope="module")
def kd_report():
    return load_tool("kd_report", TOOLS)


@pytest.fixture
def configs(tmp_path):
    teacher = write_config(str(tmp_path / "teacher.yaml"), TINY, ["SOLVER.MAX_ITER", "6"])
    student = write_config(str(tmp_path / "student.yaml"), TINY, ["SOLVER.MAX_ITER", "4"])
    fitnet = write_config(str(tmp_path / "fitnet.yaml"), TINY, ["SOLVER.MAX_ITER", "4"])
    pkd = write_config(str(tmp_path / "pkd.yaml"), TINY, ["SOLVER.MAX_ITER", "4"])
    return teacher, student, [fitnet, pkd]


def _bench(kd_report, tmp_path, configs, *extra):
    teacher, student, distill = configs
    args = kd_report.build_parser().parse_args(
        ["--teacher", teacher, "--student", student, "--distill", *distill, "--output", str(tmp_path / "out"),
         "--seeds", "1", "2", *extra])
    return kd_report.KDBenchmark(args)


def test_plan_trains_supervised_seeds_first_then_distillation_seed_major(kd_report, tmp_path, configs):
    bench = _bench(kd_report, tmp_path, configs)
    assert bench.plan == [("student", 1), ("student", 2), ("fitnet", 1), ("pkd", 1), ("fitnet", 2), ("pkd", 2)]
    assert bench.student_final == 3 and bench.teacher_final == 5
    # Distillation runs learn from this report's teacher.
    config, opts = bench.runs["fitnet"]
    assert opts[-4:] == ["DISTILL.TEACHER.CONFIG", configs[0], "DISTILL.TEACHER.WEIGHTS", bench.teacher_weights]
    assert bench.teacher_weights == str(tmp_path / "out" / "teacher" / "model_final.pth")


def test_distillation_runs_can_have_fewer_seeds_than_the_supervised_student(kd_report, tmp_path, configs):
    bench = _bench(kd_report, tmp_path, configs, "--distill-seeds", "2")
    assert bench.plan == [("student", 1), ("student", 2), ("fitnet", 2), ("pkd", 2)]
    with pytest.raises(ValueError, match=r"--distill-seeds \[3\] must be a subset of --seeds \[1, 2\]"):
        _bench(kd_report, tmp_path, configs, "--distill-seeds", "3")


def test_run_dirs_look_here_first_except_for_the_teacher(kd_report, tmp_path, configs):
    pub = str(tmp_path / "pub")
    bench = _bench(kd_report, tmp_path, configs, "--publish-runs", pub)
    out = str(tmp_path / "out")
    assert bench.run_dirs("fitnet", 2) == [os.path.join(out, "fitnet", "seed2"), os.path.join(pub, "runs", "fitnet", "seed2")]
    # The published teacher is the table's (a retrained one here is published beside it).
    assert bench.run_dirs("teacher") == [os.path.join(pub, "runs", "teacher"), os.path.join(out, "teacher")]
    assert _bench(kd_report, tmp_path, configs).published("fitnet", 2) is None


def _finish(folder, iteration, checkpoint=True):
    os.makedirs(folder, exist_ok=True)
    res = {t: {"AP": 30.0, "AP50": 50.0, "AP75": 25.0} for t in ("bbox", "segm")}
    with open(os.path.join(folder, "eval_synthetic_doclaynet_val.json"), "w") as f:
        json.dump({"iteration": iteration, "results": res}, f)
    if checkpoint:
        torch.save({"model": {}}, os.path.join(folder, "model_final.pth"))


def test_finished_needs_the_final_evaluation_and_a_loadable_checkpoint_or_a_published_copy(kd_report, tmp_path, configs):
    pub = str(tmp_path / "pub")
    bench = _bench(kd_report, tmp_path, configs, "--publish-runs", pub)
    _finish(bench.out_dir("fitnet", 1), iteration=1)  # a periodic evaluation
    assert not bench.finished("fitnet", 1)
    os.remove(os.path.join(bench.out_dir("fitnet", 1), "model_final.pth"))
    _finish(bench.out_dir("fitnet", 1), iteration=3, checkpoint=False)  # final evaluation, no checkpoint
    assert not bench.finished("fitnet", 1)
    _finish(bench.out_dir("fitnet", 1), iteration=3)
    assert bench.finished("fitnet", 1)
    _finish(bench.published("pkd", 2), iteration=3, checkpoint=False)  # published runs carry no checkpoint
    assert bench.finished("pkd", 2)
    assert bench.needs_teacher()  # fitnet 2 and pkd 1 still train
    assert bench.unevaluated("fitnet", 1) == []  # its config tests on one dataset, evaluated


@pytest.mark.parametrize("extra, message", [
    (["--publish", "a", "--publish-runs", "b"], "give --publish or --publish-runs, not both"),
    (["--dataset", "nowhere_val"], "is not one of the student's DATASETS.TEST"),
    (["--reuse", "nobody=somewhere"], "give NAME=DIR with NAME one of"),
    (["--reuse", "fitnet"], "give NAME=DIR with NAME one of"),
])
def test_contradicting_arguments_are_refused_before_anything_runs(kd_report, tmp_path, configs, extra, message):
    with pytest.raises(ValueError, match=message):
        _bench(kd_report, tmp_path, configs, *extra)
    assert not (tmp_path / "out").exists()


def test_publishing_a_list_without_a_published_run_is_refused(kd_report, tmp_path, configs):
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "report.json").write_text(json.dumps({"rows": [{"run": "teacher"}, {"run": "student"}, {"run": "mgd"}]}))
    with pytest.raises(ValueError, match=r"has a report with the runs \['mgd'\]"):
        _bench(kd_report, tmp_path, configs, "--publish", str(pub))
    assert _bench(kd_report, tmp_path, configs, "--publish", str(pub), "--replace-published").reuse == {}
