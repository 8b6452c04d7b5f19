"""projects/kd_benchmark/tools/kd_report.py: teacher once, student and KD runs once per seed (seed-major), collected when
finished, resumed otherwise; report with mean ± std, sizes, curves, environment and wall time."""
import hashlib
import json
import os
import shutil
import sys

import pytest
import torch

from tiny_models import MICRO, TINY, load_tool, write_config

TOOLS = "projects/kd_benchmark/tools"

# A stand-in for tools/train_net.py: records its call, writes a final evaluation whose AP encodes
# the run and seed, a learning curve in metrics.json and a loadable model_final.pth.
FAKE_TRAIN_NET = r'''
import json, os, sys, time
import torch
start = time.time()
args = sys.argv[1:]
out, seed = args[args.index("OUTPUT_DIR") + 1], int(args[args.index("SEED") + 1])
config = os.path.basename(args[args.index("--config-file") + 1])
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "fake_started"), "w").close()  # the run has started (after its imports)
if config == "teacher.yaml":
    time.sleep(float(os.environ.get("FAKE_TEACHER_SECONDS", "0")))
# FAKE_WAIT="<config>|<seed>|<file>|<text>": that run finishes once <file> contains <text> (60 s at most).
wait = os.environ.get("FAKE_WAIT", "|||").split("|")
while wait[:2] == [config, str(seed)] and time.time() - start < 60:
    if os.path.isfile(wait[2]) and wait[3] in open(wait[2]).read():
        break
    time.sleep(0.2)
base = {"teacher.yaml": 60.0, "student.yaml": 40.0, "fitnet.yaml": 45.0, "pkd.yaml": 44.0}[config] + seed
if config == "teacher.yaml":  # FAKE_TEACHER_AP_OFFSET: a teacher retrained on a fresh machine scores otherwise
    base += float(os.environ.get("FAKE_TEACHER_AP_OFFSET", "0"))
final = int(os.environ["FAKE_FINAL_ITER"])
kd = {"kd_weight/fitnet": 0.5 * seed} if config == "fitnet.yaml" else {}  # as DISTILL.BALANCE would calibrate it
with open(os.path.join(out, "metrics.json"), "w") as f:
    for it, frac in ((final // 2, 0.5), (final, 1.0)):
        f.write(json.dumps({"iteration": it, "bbox/AP": base * frac, **kd}) + "\n")
# FAKE_TEST_DATASETS="a,b": the run evaluates on several datasets (AP 10 lower on each next one),
# logged as Detectron2 does: "<dataset>/bbox/AP" when there are several. A DATASETS.TEST override
# evaluates a part of them (same APs).
known = os.environ.get("FAKE_TEST_DATASETS", "synthetic_doclaynet_val").split(",")
datasets = eval(args[args.index("DATASETS.TEST") + 1]) if "DATASETS.TEST" in args else known
if len(datasets) > 1:
    with open(os.path.join(out, "metrics.json"), "w") as f:
        for it, frac in ((final // 2, 0.5), (final, 1.0)):
            f.write(json.dumps({"iteration": it, **{f"{d}/bbox/AP": (base - 10 * i) * frac
                                                    for i, d in enumerate(datasets)}}) + "\n")
for dataset in datasets:
    ap = base - 10 * known.index(dataset)
    res = {t: {"AP": ap, "AP50": ap + 20, "AP75": ap - 5, "AP-Text": ap} for t in ("bbox", "segm")}
    with open(os.path.join(out, f"eval_{dataset}.json"), "w") as f:
        json.dump({"iteration": final, "results": res}, f)
torch.save({"model": {}, "ap": base}, os.path.join(out, "model_final.pth"))  # other weights, other sha256
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"config": config, "seed": seed, "resume": "--resume" in args,
                        "eval_only": "--eval-only" in args, "start": start, "end": time.time(),
                        "threads": os.environ.get("OMP_NUM_THREADS")}) + "\n")
'''


@pytest.fixture
def report_setup(tmp_path, monkeypatch):
    teacher = write_config(str(tmp_path / "teacher.yaml"), TINY, ["SOLVER.MAX_ITER", "4"])
    student = write_config(str(tmp_path / "student.yaml"), TINY, ["SOLVER.MAX_ITER", "4"])
    distill = write_config(str(tmp_path / "fitnet.yaml"), TINY, [
        "SOLVER.MAX_ITER", "4", "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
        "DISTILL.TEACHER.CONFIG", teacher, "DISTILL.LOSSES", "['fitnet']",
    ])
    fake = tmp_path / "fake_train_net.py"
    fake.write_text(FAKE_TRAIN_NET)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_FINAL_ITER", "3")
    kd_report = load_tool("kd_report", TOOLS)
    monkeypatch.setattr(kd_report, "TRAIN_NET", str(fake))
    out = tmp_path / "report"
    argv = ["kd_report.py", "--teacher", teacher, "--student", student, "--distill", distill,
            "--output", str(out), "--seeds", "1", "2", "--threads", "1", "--publish", str(out / "pub"), *MICRO]
    return kd_report, argv, out, calls


def _side_by_side(argv, jobs, threads=None):
    """``argv`` with ``--jobs jobs`` (and ``--threads threads``)."""
    argv = argv[:1] + ["--jobs", str(jobs)] + argv[1:]
    if threads is not None:
        argv[argv.index("--threads") + 1] = str(threads)
    return argv


def _calls(path):
    return [json.loads(line) for line in open(path)] if os.path.isfile(path) else []


def test_seeds_report_sizes_curves_and_collection(report_setup, monkeypatch):
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    order = [(c["config"], c["seed"]) for c in _calls(calls)]
    # The teacher once (first seed), the supervised seeds, then every distillation run's first
    # seed before any second seed.
    assert order == [("teacher.yaml", 1), ("student.yaml", 1), ("student.yaml", 2), ("fitnet.yaml", 1),
                     ("fitnet.yaml", 2)]
    assert os.path.isfile(out / "student" / "seed2" / "model_final.pth")
    report = json.load(open(out / "report.json"))
    rows = {r["run"]: r for r in report["rows"]}
    assert rows["student"]["bbox_AP"]["mean"] == pytest.approx(41.5)  # 41, 42
    assert rows["student"]["bbox_AP"]["std"] == pytest.approx(0.5 ** 0.5)
    assert rows["fitnet"]["bbox_gap_closed"] == pytest.approx(5.0 / 19.5)  # (46.5 - 41.5) / (61 - 41.5)
    assert rows["teacher"]["seeds"] == 1
    # The deployable models' sizes: the distilled student is the student's size.
    assert report["sizes"]["fitnet"]["params_M"] == pytest.approx(report["sizes"]["student"]["params_M"])
    assert report["sizes"]["teacher"]["params_M"] == pytest.approx(report["sizes"]["student"]["params_M"])
    assert report["curves"]["student"] == [[1, pytest.approx(20.75)], [3, pytest.approx(41.5)]]
    assert set(report["curves"]) == {"teacher", "student", "fitnet"}
    assert open(out / "curves.png", "rb").read(4) == b"\x89PNG"
    assert sorted(os.listdir(out / "pub")) == ["curves.png", "invocations.json", "report.json", "report.md", "runs"]
    env = report["environment"]
    assert env["cpu_count"] == os.cpu_count() and env["threads_per_job"] == 1 and env["invocations"] == 1
    md = open(out / "report.md").read()
    assert "| fitnet | 2 | 46.5 ± 0.7 |" in md and "Hardware:" in md and "Command: `projects/kd_benchmark/tools/kd_report.py" in md
    # A second invocation collects everything and trains nothing.
    kd_report.main()
    assert len(_calls(calls)) == 5
    assert json.load(open(out / "report.json"))["environment"]["invocations"] == 2


def _pkd_recipe(argv, tmp_path):
    """A second distillation recipe (pkd) with the report's teacher, beside the fixture's fitnet."""
    return write_config(str(tmp_path / "pkd.yaml"), TINY, [
        "SOLVER.MAX_ITER", "4", "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
        "DISTILL.TEACHER.CONFIG", argv[argv.index("--teacher") + 1], "DISTILL.LOSSES", "['pkd']"])


def test_publishing_a_shorter_list_over_a_published_report_is_refused(report_setup, tmp_path, monkeypatch, capsys):
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    published = (out / "pub" / "report.md").read_text()
    # The same call without the fitnet recipe: refused before anything runs, the report kept.
    other = _pkd_recipe(argv, tmp_path)
    shorter = list(argv)
    shorter[shorter.index("--distill") + 1] = other
    monkeypatch.setattr(sys, "argv", shorter)
    with pytest.raises(SystemExit) as exit_info:
        kd_report.main()
    assert exit_info.value.code == 2
    assert "has a report with the runs ['fitnet']" in capsys.readouterr().err
    assert len(_calls(calls)) == 5 and (out / "pub" / "report.md").read_text() == published
    # With --replace-published the shorter table is published (the dropped run's files stay).
    monkeypatch.setattr(sys, "argv", shorter[:1] + ["--replace-published"] + shorter[1:])
    kd_report.main()
    rows = json.load(open(out / "pub" / "report.json"))["rows"]
    assert {r["run"] for r in rows} == {"teacher", "student", "pkd"}
    assert os.path.isfile(out / "pub" / "runs" / "fitnet" / "seed1" / "eval_synthetic_doclaynet_val.json")


def _fresh_machine_partial_call(argv, out, tmp_path):
    """Remove the output folder's runs (a fresh machine) and return the argv of a call that trains
    only a pkd recipe, publishing its runs but not the table (--publish-runs), and of the full call
    (fitnet and pkd, --publish)."""
    for name in ("teacher", "student", "fitnet"):
        shutil.rmtree(out / name)
    other = _pkd_recipe(argv, tmp_path)
    partial = list(argv)
    partial[partial.index("--distill") + 1] = other
    partial[partial.index("--publish")] = "--publish-runs"
    full = argv[:argv.index("--distill") + 2] + [other] + argv[argv.index("--distill") + 2:]
    return _side_by_side(partial, 2, threads=2), full


def test_a_partial_list_collects_and_publishes_runs_but_not_the_table(report_setup, tmp_path, monkeypatch):
    """--publish-runs on a fresh machine: the published seeds are collected, not trained again; the
    runs it trains are published; the published table stays as it was; its wall time counts there."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    pub = out / "pub"
    table = (pub / "report.md").read_text()
    partial, full = _fresh_machine_partial_call(argv, out, tmp_path)
    monkeypatch.setattr(sys, "argv", partial)
    kd_report.main()
    trained = [(c["config"], c["seed"]) for c in _calls(calls)[5:]]
    assert sorted(trained) == [("pkd.yaml", 1), ("pkd.yaml", 2), ("teacher.yaml", 1)]  # no student seed again
    # Nothing trained beside the teacher (the supervised seeds were published): it had every thread.
    assert {c["config"]: c["threads"] for c in _calls(calls)[5:]} == {"teacher.yaml": "2", "pkd.yaml": "1"}
    assert (pub / "report.md").read_text() == table
    assert os.path.isfile(pub / "runs" / "pkd" / "seed2" / "eval_synthetic_doclaynet_val.json")
    assert len(json.load(open(pub / "invocations.json"))) == 2
    # The full list with --publish then collects everything: nothing trains.
    shutil.rmtree(out / "pkd")
    monkeypatch.setattr(sys, "argv", full)
    kd_report.main()
    assert len(_calls(calls)) == 8
    rows = json.load(open(pub / "report.json"))["rows"]
    assert {r["run"]: r["seeds"] for r in rows} == {"teacher": 1, "student": 2, "fitnet": 2, "pkd": 2}
    # Both flags at once are refused.
    monkeypatch.setattr(sys, "argv", partial[:1] + ["--publish", str(pub)] + partial[1:])
    with pytest.raises(SystemExit):
        kd_report.main()


def test_a_retrained_teacher_is_published_beside_the_table_teacher(report_setup, tmp_path, monkeypatch, capsys):
    """On a fresh machine the teacher is trained again and scores otherwise: the published teacher
    (the one the published runs learned from) stays the table's teacher, the new one is published
    beside it with its sha256, and the runs distilled from it record it."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    pub = out / "pub"
    monkeypatch.setenv("FAKE_TEACHER_AP_OFFSET", "5")
    partial, full = _fresh_machine_partial_call(argv, out, tmp_path)
    monkeypatch.setattr(sys, "argv", partial)
    kd_report.main()
    assert "is a retrained one" in capsys.readouterr().out
    assert json.load(open(pub / "runs" / "teacher" / "eval_synthetic_doclaynet_val.json"))["results"]["bbox"]["AP"] == 61.0
    (retrained,) = os.listdir(pub / "runs" / "teacher" / "retrained")
    record = json.load(open(pub / "runs" / "teacher" / "retrained" / retrained / "teacher.json"))
    assert record["bbox_AP"] == 66.0 and record["sha256"].startswith(retrained)
    assert json.load(open(pub / "runs" / "pkd" / "seed1" / "teacher.json"))["sha256"] == record["sha256"]
    # The full table: the published teacher's row and gap closed, both teachers listed.
    monkeypatch.setattr(sys, "argv", full)
    kd_report.main()
    report = json.load(open(pub / "report.json"))
    assert next(r for r in report["rows"] if r["run"] == "teacher")["bbox_AP"]["mean"] == 61.0
    assert sorted((t["bbox_AP"], t["runs"], t["run_ids"]) for t in report["teachers"]) == [
        (61.0, 2, ["fitnet/seed1", "fitnet/seed2"]), (66.0, 2, ["pkd/seed1", "pkd/seed2"])]
    # The runs of the teacher fewer runs learned from are named (here a tie: the first listed is not).
    md = open(pub / "report.md").read()
    assert ": 66.0, 2 run(s) (pkd/seed1, pkd/seed2)." in md
    # pkd's gap closed against the teacher it learned from: (45.5 - 41.5) / (66 - 41.5), not / (61 - 41.5).
    rows = {r["run"]: r for r in report["rows"]}
    assert rows["pkd"]["bbox_gap_closed"] == pytest.approx(4.0 / 19.5)
    assert rows["pkd"]["bbox_own_teacher_AP"] == 66.0
    assert rows["pkd"]["bbox_gap_closed_own_teacher"] == pytest.approx(4.0 / 24.5)
    assert rows["fitnet"]["bbox_gap_closed_own_teacher"] == rows["fitnet"]["bbox_gap_closed"]
    assert "| gap closed (bbox, own teacher) |" in md
    assert "| pkd | 2 | 45.5 ± 0.7 |" in md and "| +21% | +21% | +16% |" in md


def test_a_teacher_trained_otherwise_replaces_the_published_one(tmp_path):
    """publish_teacher: a teacher of the same training config is published beside the table's
    teacher; one of another config (the benchmark's teacher changed) replaces it."""
    import torch

    from kd_benchmark.publishing import publish_teacher

    def teacher(folder, ap, width, seed=-1):
        os.makedirs(folder)
        write_config(str(folder / "config.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", str(width), "SEED", str(seed)])
        with open(folder / "eval_val.json", "w") as f:
            json.dump({"iteration": 3, "results": {"bbox": {"AP": ap}}}, f)
        torch.save({"model": {}, "ap": ap}, folder / "model_final.pth")
        return str(folder / "model_final.pth")

    pub = tmp_path / "pub"
    teacher(pub, 61.0, 32)
    # The published teacher trained before a config key existed: that key (at its default here) does not
    # make it another config.
    lines = (pub / "config.yaml").read_text().splitlines(keepends=True)
    kept = [line for line in lines if "MASK_WEIGHT:" not in line]
    assert len(kept) == len(lines) - 1
    (pub / "config.yaml").write_text("".join(kept))
    same = teacher(tmp_path / "same", 66.0, 32)
    publish_teacher(str(tmp_path / "same"), str(pub), same, "val", 3)
    assert json.load(open(pub / "eval_val.json"))["results"]["bbox"]["AP"] == 61.0
    assert len(os.listdir(pub / "retrained")) == 1
    wider = teacher(tmp_path / "wider", 70.0, 64)
    publish_teacher(str(tmp_path / "wider"), str(pub), wider, "val", 3)
    assert json.load(open(pub / "eval_val.json"))["results"]["bbox"]["AP"] == 70.0
    # Given weights (--teacher-weights) only evaluated, by a call whose first seed is another: that
    # SEED says nothing about the weights (a call with --seeds 1 replaced the table's teacher).
    given = teacher(tmp_path / "given", 58.0, 64, seed=1)
    publish_teacher(str(tmp_path / "given"), str(pub), given, "val", 3, evaluated_only=True)
    assert json.load(open(pub / "eval_val.json"))["results"]["bbox"]["AP"] == 70.0
    assert len(os.listdir(pub / "retrained")) == 2
    # Trained here with another SEED, the same folder is another training: it replaces the table's.
    publish_teacher(str(tmp_path / "given"), str(pub), given, "val", 3)
    assert json.load(open(pub / "eval_val.json"))["results"]["bbox"]["AP"] == 58.0


def test_periodic_evaluation_is_not_mistaken_for_a_finished_run(report_setup, monkeypatch):
    kd_report, argv, out, calls = report_setup
    run_dir = out / "student" / "seed1"
    run_dir.mkdir(parents=True)
    # An interrupted run: a periodic evaluation at iteration 1 and a checkpoint to resume from.
    (run_dir / "eval_synthetic_doclaynet_val.json").write_text(
        json.dumps({"iteration": 1, "results": {"bbox": {"AP": 1.0}}}))
    (run_dir / "last_checkpoint").write_text("model_0000001.pth")
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    student_calls = [c["resume"] for c in _calls(calls) if c["config"] == "student.yaml" and c["seed"] == 1]
    assert student_calls == [True]


def test_a_fresh_machine_collects_published_runs(report_setup, monkeypatch):
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    pub = out / "pub"
    # Each finished run is published with the teacher it learned from.
    assert os.path.isfile(pub / "runs" / "fitnet" / "seed2" / "eval_synthetic_doclaynet_val.json")
    record = json.load(open(pub / "runs" / "fitnet" / "seed1" / "teacher.json"))
    assert len(record["sha256"]) == 64 and record["bbox_AP"] == 61.0
    assert not os.path.isfile(pub / "runs" / "student" / "seed1" / "teacher.json")
    # A new session: the output folder is gone, the published folder (committed) is there.
    shutil.rmtree(out / "teacher")
    shutil.rmtree(out / "student")
    shutil.rmtree(out / "fitnet")
    kd_report.main()
    assert len(_calls(calls)) == 5  # nothing trained again, not even the teacher: no run needs it
    report = json.load(open(pub / "report.json"))
    assert {r["run"]: r["seeds"] for r in report["rows"]} == {"teacher": 1, "student": 2, "fitnet": 2}
    assert report["teachers"][0]["runs"] == 2 and report["environment"]["invocations"] == 2
    assert set(report["curves"]) == {"teacher", "student", "fitnet"}


def test_given_teacher_weights_are_published_with_their_evaluations(report_setup, tmp_path, monkeypatch):
    """--teacher-weights with --publish: the teacher, only evaluated here, is published beside the
    runs (``<publish>/runs/teacher``, every test dataset), where analyze.py reads it."""
    kd_report, argv, out, calls = report_setup
    weights = tmp_path / "given_teacher.pth"
    torch.save({"model": {}}, weights)
    datasets = ("synthetic_doclaynet_val", "synthetic_doclaynet_test")
    monkeypatch.setenv("FAKE_TEST_DATASETS", ",".join(datasets))
    monkeypatch.setattr(sys, "argv", argv[:1] + ["--teacher-weights", str(weights), "--teacher-opts", "DATASETS.TEST",
                                                 repr(datasets)] + argv[1:])
    kd_report.main()
    teacher = out / "pub" / "runs" / "teacher"
    assert [c["eval_only"] for c in _calls(calls) if c["config"] == "teacher.yaml"] == [True]
    assert json.load(open(teacher / "eval_synthetic_doclaynet_val.json"))["results"]["bbox"]["AP"] == 61.0
    assert json.load(open(teacher / "eval_synthetic_doclaynet_test.json"))["results"]["bbox"]["AP"] == 51.0


def test_collecting_publishes_runs_trained_without_publishing(report_setup, monkeypatch):
    """Seeds trained by a call without --publish (a shorter list run first) are published by the
    collecting call that publishes the table, so a fresh machine can collect every row of it."""
    kd_report, argv, out, calls = report_setup
    unpublished = argv[: argv.index("--publish")] + argv[argv.index("--publish") + 2:]
    monkeypatch.setattr(sys, "argv", unpublished)
    kd_report.main()
    assert not os.path.isdir(out / "pub")
    monkeypatch.setattr(sys, "argv", argv[:1] + ["--collect-only"] + argv[1:])
    kd_report.main()
    assert len(_calls(calls)) == 5
    for name in ("student", "fitnet"):
        for seed in (1, 2):
            assert os.path.isfile(out / "pub" / "runs" / name / f"seed{seed}" / "eval_synthetic_doclaynet_val.json")
    for name in ("teacher", "student", "fitnet"):
        shutil.rmtree(out / name)  # a fresh machine
    kd_report.main()
    report = json.load(open(out / "pub" / "report.json"))
    assert {r["run"]: r["seeds"] for r in report["rows"]} == {"teacher": 1, "student": 2, "fitnet": 2}


def test_supervised_seeds_train_beside_the_teacher_distillation_after_it(report_setup, monkeypatch):
    kd_report, argv, out, calls = report_setup
    monkeypatch.setenv("FAKE_TEACHER_SECONDS", "4")
    monkeypatch.setattr(sys, "argv", _side_by_side(argv, 2, threads=2))
    kd_report.main()
    runs = {(c["config"], c["seed"]): c for c in _calls(calls)}
    teacher = runs["teacher.yaml", 1]
    assert runs["student.yaml", 1]["start"] < teacher["end"]  # the other slot, while the teacher trains
    assert teacher["threads"] == "1"  # its share of the threads
    assert runs["fitnet.yaml", 1]["start"] >= teacher["end"] and runs["fitnet.yaml", 2]["start"] >= teacher["end"]
    # A distillation run left to train on a fresh machine needs the teacher again.
    os.remove(out / "pub" / "runs" / "fitnet" / "seed2" / "eval_synthetic_doclaynet_val.json")
    for name in ("teacher", "student", "fitnet"):
        shutil.rmtree(out / name)
    kd_report.main()
    assert [(c["config"], c["seed"]) for c in _calls(calls)][5:] == [("teacher.yaml", 1), ("fitnet.yaml", 2)]
    assert _calls(calls)[5]["threads"] == "2"  # alone this time: every thread


def test_a_second_test_dataset_gets_its_own_report(report_setup, tmp_path, monkeypatch):
    """Runs evaluating on two datasets: the table is about the first; --dataset tabulates the
    other from the same runs (curves from the "<dataset>/bbox/AP" keys), into its own files."""
    kd_report, argv, out, calls = report_setup
    datasets = ("synthetic_doclaynet_val", "synthetic_publaynet_as_doclaynet_val")
    test_opt = ["DATASETS.TEST", repr(datasets)]
    teacher, student, distill = argv[2], argv[4], argv[6]
    write_config(teacher, TINY, ["SOLVER.MAX_ITER", "4", *test_opt])
    write_config(student, TINY, ["SOLVER.MAX_ITER", "4", *test_opt])
    write_config(distill, TINY, ["SOLVER.MAX_ITER", "4", "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN",
                                 "DISTILL.TEACHER.CONFIG", teacher, "DISTILL.LOSSES", "['fitnet']", *test_opt])
    monkeypatch.setenv("FAKE_TEST_DATASETS", ",".join(datasets))
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    first = json.load(open(out / "report.json"))
    assert first["dataset"] == datasets[0]
    assert {r["run"]: r["bbox_AP"]["mean"] for r in first["rows"]} == {"teacher": 61.0, "student": 41.5,
                                                                          "fitnet": 46.5}
    assert first["curves"]["student"] == [[1, pytest.approx(20.75)], [3, pytest.approx(41.5)]]
    # Every evaluation is published (a fresh machine can tabulate either dataset).
    assert sorted(os.listdir(out / "pub" / "runs" / "fitnet" / "seed1")) == [
        *(f"eval_{d}.json" for d in datasets), "metrics.json", "teacher.json"]

    monkeypatch.setattr(sys, "argv", argv[:1] + ["--collect-only", "--dataset", datasets[1]] + argv[1:])
    kd_report.main()
    assert len(_calls(calls)) == 5  # nothing trained again
    other = json.load(open(out / f"report_{datasets[1]}.json"))
    assert other["dataset"] == datasets[1]
    assert {r["run"]: r["bbox_AP"]["mean"] for r in other["rows"]} == {"teacher": 51.0, "student": 31.5,
                                                                          "fitnet": 36.5}
    assert other["curves"]["student"] == [[1, pytest.approx(15.75)], [3, pytest.approx(31.5)]]
    assert open(out / f"curves_{datasets[1]}.png", "rb").read(4) == b"\x89PNG"
    assert os.path.isfile(out / "pub" / f"report_{datasets[1]}.md")
    assert json.load(open(out / "report.json"))["dataset"] == datasets[0]  # the first table is kept
    # The teacher's AP there, not the one the runs' teacher.json recorded on the first dataset.
    assert json.load(open(out / "pub" / "runs" / "fitnet" / "seed1" / "teacher.json"))["bbox_AP"] == 61.0
    assert [t["bbox_AP"] for t in other["teachers"]] == [51.0]
    assert "gap closed (bbox, own teacher)" not in open(out / f"report_{datasets[1]}.md").read()  # one teacher

    monkeypatch.setattr(sys, "argv", argv[:1] + ["--collect-only", "--dataset", "synthetic_publaynet_val"] + argv[1:])
    with pytest.raises(SystemExit):
        kd_report.main()



def _write_run_configs(out, runs, seeds, opts):
    """config.yaml into every run folder, as tools/train_net.py writes it (the fake does not)."""
    from dla_kd.engine import load_config

    for name, (config, extra) in runs.items():
        for seed in seeds:
            folder = os.path.join(out, name, f"seed{seed}")
            cfg = load_config(config, ["SEED", str(seed), *opts, *extra, "OUTPUT_DIR", folder])
            with open(os.path.join(folder, "config.yaml"), "w") as f:
                f.write(cfg.dump())


def test_runs_of_another_report_are_taken_over_and_only_evaluated(report_setup, tmp_path, monkeypatch, capsys):
    """--reuse: a report that also scores a second dataset takes over the finished runs of one
    that scored the first only, when they trained the same way: nothing trains again, only the
    second dataset is evaluated; a run that trained otherwise is trained."""
    kd_report, argv, first_out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()  # the donor report: one test dataset
    teacher, student, distill = argv[2], argv[4], argv[6]
    teacher_weights = os.path.join(str(first_out), "teacher", "model_final.pth")
    kd_opts = ["DISTILL.TEACHER.CONFIG", teacher, "DISTILL.TEACHER.WEIGHTS", teacher_weights]
    _write_run_configs(str(first_out), {"student": (student, []), "fitnet": (distill, kd_opts)}, (1, 2), MICRO)
    with open(first_out / "fitnet" / "seed2" / "config.yaml", "a") as f:
        f.write("VIS_PERIOD: 7\n")  # this seed trained otherwise: not taken over

    datasets = ("synthetic_doclaynet_val", "synthetic_publaynet_as_doclaynet_val")
    test_opt = ["DATASETS.TEST", repr(datasets)]
    (tmp_path / "b").mkdir()
    student_b = write_config(str(tmp_path / "b" / "student.yaml"), student, test_opt)
    distill_b = write_config(str(tmp_path / "b" / "fitnet.yaml"), distill, test_opt)
    monkeypatch.setenv("FAKE_TEST_DATASETS", ",".join(datasets))
    out = tmp_path / "second"
    before = len(_calls(calls))
    monkeypatch.setattr(sys, "argv", [
        "kd_report.py", "--reuse", f"student={first_out / 'student'}", f"fitnet={first_out / 'fitnet'}",
        "--teacher", teacher, "--teacher-weights", teacher_weights, "--teacher-opts", "DATASETS.TEST", repr(datasets),
        "--student", student_b, "--distill", distill_b, "--output", str(out), "--seeds", "1", "2", "--threads", "1",
        *MICRO])
    kd_report.main()
    new = [(c["config"], c["seed"], c["eval_only"]) for c in _calls(calls)[before:]]
    assert sorted(new) == sorted([("teacher.yaml", 1, True), ("student.yaml", 1, True), ("student.yaml", 2, True),
                                  ("fitnet.yaml", 1, True), ("fitnet.yaml", 2, False)])
    assert "fitnet/seed2: not taken over" in capsys.readouterr().out
    # a run trained from --teacher-weights records that teacher too (file, sha256, its AP here)
    record = json.load(open(out / "fitnet" / "seed2" / "teacher.json"))
    assert record["weights"] == os.path.realpath(teacher_weights) and record["bbox_AP"] == 61.0
    assert record["sha256"] == hashlib.sha256(open(teacher_weights, "rb").read()).hexdigest()
    taken = out / "student" / "seed1"
    assert os.path.realpath(taken / "model_final.pth") == os.path.realpath(first_out / "student" / "seed1" / "model_final.pth")
    second = json.load(open(taken / f"eval_{datasets[1]}.json"))
    assert second["iteration"] == 3 and second["reused_from"] == os.path.realpath(first_out / "student" / "seed1")
    assert second["results"]["bbox"]["AP"] == 31.0  # evaluated here (the donor never saw this dataset)
    report = json.load(open(out / "report.json"))
    assert {r["run"]: r["bbox_AP"]["mean"] for r in report["rows"]} == {"teacher": 61.0, "student": 41.5, "fitnet": 46.5}
    assert sorted(report["reused_runs"]) == ["fitnet/seed1", "student/seed1", "student/seed2"]
    assert report["curves"]["student"] == [[1, pytest.approx(20.75)], [3, pytest.approx(41.5)]]  # the donor's curve
    assert "Runs taken over from another report" in open(out / "report.md").read()

    training_argv = sys.argv
    monkeypatch.setattr(sys, "argv", sys.argv[:1] + ["--collect-only", "--dataset", datasets[1]] + sys.argv[1:])
    kd_report.main()
    other = json.load(open(out / f"report_{datasets[1]}.json"))
    assert {r["run"]: r["bbox_AP"]["mean"] for r in other["rows"]} == {"teacher": 51.0, "student": 31.5, "fitnet": 36.5}
    assert len(_calls(calls)) == before + 5  # collected, nothing run again

    # Killed between two evaluations (a take-over during its own, a trained run between its two,
    # the teacher's): the next call evaluates what is missing; nothing trains again.
    for folder in (out / "student" / "seed1", out / "student" / "seed1" / "evaluated_here", out / "fitnet" / "seed2",
                   out / "teacher"):
        os.remove(folder / f"eval_{datasets[1]}.json")
    before = len(_calls(calls))
    monkeypatch.setattr(sys, "argv", training_argv)
    kd_report.main()
    new = [(c["config"], c["seed"], c["eval_only"]) for c in _calls(calls)[before:]]
    assert sorted(new) == [("fitnet.yaml", 2, True), ("student.yaml", 1, True), ("teacher.yaml", 1, True)]
    monkeypatch.setattr(sys, "argv", sys.argv[:1] + ["--collect-only", "--dataset", datasets[1]] + sys.argv[1:])
    kd_report.main()
    assert json.load(open(out / f"report_{datasets[1]}.json"))["rows"] == other["rows"]


def test_training_differences_compare_files_not_path_spellings(tmp_path, monkeypatch):
    """A donor's config.yaml has absolute paths and lists where the new config has relative
    paths and tuples: not a difference; another file, another value or another key is."""
    from detectron2.config import CfgNode

    from kd_benchmark.reused_runs import training_differences

    (tmp_path / "teacher.pth").write_bytes(b"w")
    (tmp_path / "other.pth").write_bytes(b"w")
    monkeypatch.chdir(tmp_path)

    def cfg(weights, steps, **extra):
        return CfgNode({"OUTPUT_DIR": extra.pop("out", "a"), "DATASETS": CfgNode({"TEST": extra.pop("test", ("v",))}),
                        "DISTILL": CfgNode({"TEACHER": CfgNode({"WEIGHTS": weights})}),
                        "SOLVER": CfgNode({"STEPS": steps}), **extra})

    donor = cfg(str(tmp_path / "teacher.pth"), [10, 20], out="/elsewhere")
    assert training_differences(donor, cfg("teacher.pth", (10, 20), test=("v", "w"))) == []
    assert training_differences(donor, cfg("other.pth", (10, 20))) == [
        f"DISTILL.TEACHER.WEIGHTS: {str(tmp_path / 'teacher.pth')!r} there, {str(tmp_path / 'other.pth')!r} here"]
    assert [d.split(":")[0] for d in training_differences(donor, cfg("teacher.pth", (10, 30), SEED=1))] == [
        "SEED", "SOLVER.STEPS"]
    # A key the donor's config.yaml lacks (older code) counts with the code's default: SEED -1 and
    # DISTILL.BALANCE.ENABLED False are the defaults, SEED 1 and a key the code does not know are not.
    balance = CfgNode({"ENABLED": False})
    assert training_differences(donor, cfg("teacher.pth", (10, 20), SEED=-1)) == []
    newer = cfg("teacher.pth", (10, 20))
    newer.DISTILL.BALANCE = balance
    assert training_differences(donor, newer) == []
    newer.DISTILL.BALANCE.ENABLED = True
    assert training_differences(donor, newer) == ["DISTILL.BALANCE.ENABLED: False there, True here"]
    assert training_differences(donor, cfg("teacher.pth", (10, 20), UNKNOWN_KEY=0)) == [
        "UNKNOWN_KEY: '<absent>' there, 0 here"]


def test_wall_time_counts_overlapping_invocations_once(tmp_path, monkeypatch):
    """A --collect-only call beside a training call does not add its minutes to the report's wall
    time: the time in which any invocation ran counts, once."""
    from kd_benchmark.run_info import covered_seconds, record_invocation

    assert covered_seconds([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert covered_seconds([]) == 0
    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr("kd_benchmark.run_info.time.time", lambda: next(clock))
    assert record_invocation(str(tmp_path), started=0.0) == 100.0  # training call, still running
    assert record_invocation(str(tmp_path), started=90.0, final=True) == 130.0  # collect-only beside it: 90-130
    assert record_invocation(str(tmp_path), started=0.0, final=True) == 160.0  # training call ends at 160
    entries = json.load(open(tmp_path / "invocations.json"))
    assert [(e["start"], e["end"], e["finished"]) for e in entries] == [(0.0, 160.0, True), (90.0, 130.0, True)]
    # A call that trained into the output folder without publishing (a shorter --distill list)
    # counts in the published folder's wall time once a publishing call merges the two.
    output, published = tmp_path / "output", tmp_path / "published"
    clock = iter([300.0, 500.0, 520.0])
    assert record_invocation(str(published), started=200.0, final=True) == 100.0  # published: 200-300
    assert record_invocation(str(output), started=400.0, final=True) == 100.0  # not published: 400-500
    assert record_invocation([str(output), str(published)], started=510.0, final=True) == 210.0  # + 510-520
    for folder in (output, published):
        assert [e["start"] for e in json.load(open(folder / "invocations.json"))] == [200.0, 400.0, 510.0]


def _record_many(folder, first_start, count):
    from kd_benchmark.run_info import record_invocation

    for k in range(count):
        record_invocation([folder], started=float(first_start + k), final=True)


def test_invocations_recorded_at_once_by_two_processes_are_all_kept(tmp_path):
    """Two kd_report calls side by side (e.g. two lanes of one queue) record into the same
    invocations.json: neither drops the other's records."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_record_many, args=(str(tmp_path), first, 40)) for first in (0, 1000)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    starts = [e["start"] for e in json.load(open(tmp_path / "invocations.json"))]
    assert starts == [float(k) for k in range(40)] + [float(1000 + k) for k in range(40)]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_running_invocation_keeps_its_record_current(tmp_path, monkeypatch):
    """keep_recording refreshes the record while the call runs (a call killed during its first run
    keeps the time it ran); a heartbeat that arrives after the final record does not undo it."""
    import time

    from kd_benchmark import run_info

    started = time.time()
    stop = run_info.keep_recording([str(tmp_path)], started, interval_s=0.05)
    time.sleep(0.5)
    stop.set()
    (entry,) = json.load(open(tmp_path / "invocations.json"))
    assert entry["start"] == started and not entry["finished"] and entry["end"] - started >= 0.3
    run_info.record_invocation([str(tmp_path)], started, final=True)
    final_end = json.load(open(tmp_path / "invocations.json"))[0]["end"]
    run_info.record_invocation([str(tmp_path)], started)  # a heartbeat in flight when the call ended
    (entry,) = json.load(open(tmp_path / "invocations.json"))
    assert entry["finished"] and entry["end"] == final_end


def test_a_run_finishing_before_an_earlier_one_is_in_the_table_at_once(report_setup, monkeypatch):
    """Side by side, fitnet seed 1 trains until the report has a fitnet row: only seed 2, which
    finishes meanwhile, can put it there. The final report has both seeds in seed order."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", _side_by_side(argv, 2, threads=2))
    monkeypatch.setenv("FAKE_WAIT", f"fitnet.yaml|1|{out / 'report.json'}|\"run\": \"fitnet\"")
    written = []
    write = kd_report.BenchmarkReport.write

    def recording_write(self, teacher, results, final=False):
        written.append({k: v for k, v in results.items() if v is not None})
        return write(self, teacher, results, final)

    monkeypatch.setattr(kd_report.BenchmarkReport, "write", recording_write)
    kd_report.main()
    runs = {(c["config"], c["seed"]): c for c in _calls(calls)}
    assert runs["fitnet.yaml", 2]["end"] < runs["fitnet.yaml", 1]["end"]
    assert any(("fitnet", 2) in w and ("fitnet", 1) not in w for w in written)
    fitnet = next(r for r in json.load(open(out / "report.json"))["rows"] if r["run"] == "fitnet")
    assert fitnet["bbox_AP"]["values"] == [46.0, 47.0]  # seeds 1, 2 (base 45 + seed)


def test_finished_runs_are_in_the_table_before_the_runs_planned_before_them_train(report_setup, monkeypatch):
    """fitnet seed 1 is left to train again, seed 2 is published: seed 2 is collected first (one
    job), so the table has fitnet before seed 1, which only finishes once it does, has trained."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", _side_by_side(argv, 1))
    kd_report.main()
    shutil.rmtree(out / "fitnet" / "seed1")
    shutil.rmtree(out / "pub" / "runs" / "fitnet" / "seed1")
    os.remove(out / "report.json")
    monkeypatch.setenv("FAKE_WAIT", f"fitnet.yaml|1|{out / 'report.json'}|\"run\": \"fitnet\"")
    kd_report.main()
    calls_now = _calls(calls)[5:]
    assert [(c["config"], c["seed"]) for c in calls_now] == [("fitnet.yaml", 1)]
    assert calls_now[0]["end"] - calls_now[0]["start"] < 50  # it did not wait for its 60 s limit
    fitnet = next(r for r in json.load(open(out / "report.json"))["rows"] if r["run"] == "fitnet")
    assert fitnet["bbox_AP"]["values"] == [46.0, 47.0]


def test_the_published_teacher_is_the_tables_while_a_fresh_machine_retrains_its_own(report_setup, monkeypatch):
    """On a fresh machine the teacher trains again before the runs left to train; meanwhile the
    table (written as collected runs come in, and published) keeps the published teacher's row and
    gap closed: the fake teacher only finishes once the report has a teacher row (60 s at most)."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", _side_by_side(argv, 2, threads=2))
    kd_report.main()
    for gone in (out / "teacher", out / "fitnet" / "seed1", out / "pub" / "runs" / "fitnet" / "seed1"):
        shutil.rmtree(gone)
    os.remove(out / "report.json")
    monkeypatch.setenv("FAKE_WAIT", f"teacher.yaml|1|{out / 'report.json'}|\"run\": \"teacher\"")
    kd_report.main()
    teacher = [c for c in _calls(calls)[5:] if c["config"] == "teacher.yaml"]
    assert len(teacher) == 1 and teacher[0]["end"] - teacher[0]["start"] < 50  # it did not wait for its limit
    rows = {r["run"]: r for r in json.load(open(out / "pub" / "report.json"))["rows"]}
    assert rows["teacher"]["bbox_AP"]["mean"] == 61.0 and rows["fitnet"]["seeds"] == 2


def test_kd_report_records_its_invocation_while_the_first_run_trains(report_setup, monkeypatch, tmp_path):
    """Before the first run of the list finishes, nothing else records the call: the heartbeat
    does, so a call killed while the teacher trains still counts the minutes it ran. The fake
    teacher only finishes once three heartbeat records were written after it started (60 s at
    most), so a loaded machine slows the test down instead of failing it."""
    from kd_benchmark import run_info

    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", _side_by_side(argv, 1))
    beats = tmp_path / "beats.txt"
    monkeypatch.setenv("FAKE_WAIT", f"teacher.yaml|1|{beats}|beat 3;")
    monkeypatch.setattr(run_info, "HEARTBEAT_S", 0.2)
    records, beats_seen = [], []
    record = run_info.record_invocation

    def counted(dirs, started, final=False):
        wall = record(dirs, started, final)
        records.append((run_info.time.time(), final))
        if not final and (out / "teacher" / "fake_started").is_file():
            beats_seen.append(records[-1])
            with open(beats, "a") as f:
                f.write(f"beat {len(beats_seen)};")
        return wall

    monkeypatch.setattr(run_info, "record_invocation", counted)
    kd_report.main()
    teacher = next(c for c in _calls(calls) if c["config"] == "teacher.yaml")
    during = [t for t, final in records if teacher["start"] < t < teacher["end"] and not final]
    assert len(during) >= 3  # the heartbeat alone recorded the call while the teacher trained
    assert teacher["end"] - teacher["start"] < 60  # the teacher saw the third record, not the timeout
    entries = json.load(open(out / "pub" / "invocations.json"))
    assert len(entries) == 1 and entries[0]["finished"]


def test_model_cost_measured_once_per_deployable_architecture(tmp_path, monkeypatch):
    """Recipes that deploy the plain student share one cost measurement (a full benchmark has 28
    recipes and two deployable architectures); another architecture is measured on its own."""
    from dla_kd.engine import load_config

    kd_report = load_tool("kd_report", TOOLS)
    measured = []
    monkeypatch.setattr(kd_report, "model_cost", lambda cfg, h, w: measured.append(cfg.MODEL.FPN.OUT_CHANNELS) or
                        {"params_M": float(cfg.MODEL.FPN.OUT_CHANNELS)})
    monkeypatch.setattr(kd_report, "_COSTS", {})
    teacher = write_config(str(tmp_path / "teacher.yaml"), TINY)
    student = write_config(str(tmp_path / "student.yaml"), TINY, ["MODEL.WEIGHTS", "a.pth"])
    distill = [write_config(str(tmp_path / f"{loss}.yaml"), TINY, [
        "MODEL.META_ARCHITECTURE", "DistillGeneralizedRCNN", "DISTILL.TEACHER.CONFIG", teacher,
        "DISTILL.LOSSES", f"['{loss}']"]) for loss in ("fitnet", "pkd")]
    wider = write_config(str(tmp_path / "wider.yaml"), TINY, ["MODEL.FPN.OUT_CHANNELS", "64"])
    costs = [kd_report.deployable_cost(load_config(c)) for c in [student, *distill, wider]]
    assert len(measured) == 2 and measured[1] == 64
    assert costs[0] == costs[1] == costs[2] != costs[3]


def test_curves_show_the_best_runs_at_the_students_size_and_the_best_of_any_size():
    from kd_benchmark.report import deploys_as_student, runs_to_draw

    def row(name, ap):
        return {"run": name, "bbox_AP": {"mean": ap}}

    plain, larger = {"params_M": 1.24, "gflops": 0.46}, {"params_M": 5.05, "gflops": 4.4}
    sizes = {"teacher": {"params_M": 28.6, "gflops": 13.9}, "student": plain, "a": dict(plain), "b": dict(plain),
             "c": dict(plain), "simkd": larger}  # "d": size not computed
    rows = [row("teacher", 38.5), row("student", 20.1), row("c", 27.0), row("simkd", 30.4), row("b", 28.0),
            row("a", 29.0), row("d", 28.5), row("unfinished", None)]
    assert not deploys_as_student(sizes, "simkd") and deploys_as_student(sizes, "a") and deploys_as_student(sizes, "d")
    # The two best at the student's size (an unknown size is not hidden), then SimKD: best of all, 4x the parameters.
    assert runs_to_draw(rows, sizes, 2) == ["a", "d", "simkd"]
    assert runs_to_draw(rows, sizes, 4) == ["a", "d", "b", "c", "simkd"]
    assert runs_to_draw(rows, sizes, 0) == []
    # When the best row deploys the student's size, nothing is added.
    rows = [r for r in rows if r["run"] != "simkd"] + [row("simkd", 25.0)]
    assert runs_to_draw(rows, sizes, 2) == ["a", "d"]


def test_a_published_run_keeps_its_calibrated_kd_weights_but_no_checkpoint(tmp_path):
    from dla_kd.distill.balance import BALANCE_FILE
    from kd_benchmark.publishing import publish_run

    run, published = tmp_path / "run", tmp_path / "pub" / "mgd_balanced" / "seed1"
    run.mkdir()
    files = {"eval_synthetic_doclaynet_val.json": "{}", "metrics.json": "{}\n", "config.yaml": "SEED: 1\n",
             "teacher.json": "{}", BALANCE_FILE: json.dumps({"calibrated": True, "losses": [{"weight": 94.5}]})}
    for name, text in {**files, "model_final.pth": "weights", "model_0000199.pth": "weights", "log.txt": "log"}.items():
        (run / name).write_text(text)
    publish_run(str(run), str(published))
    assert sorted(os.listdir(published)) == sorted(files)
    assert json.load(open(published / BALANCE_FILE))["losses"][0]["weight"] == 94.5


def test_a_failed_teacher_record_write_leaves_the_old_record_whole(tmp_path, monkeypatch):
    """teacher.json is replaced atomically: kd_report's table reads it while the teacher's thread
    writes it, so a reader must never see a partial file (here: a write that fails before it is on disk)."""
    from dla_kd.utils import files
    from kd_benchmark import run_info

    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"weights")
    run_info.write_teacher_record(str(tmp_path), str(weights), {"bbox": {"AP": 38.5}})
    before = (tmp_path / run_info.TEACHER_FILE).read_text()

    def disk_full(fd):  # the new record is in the temporary file, not yet on disk
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError):
        run_info.write_teacher_record(str(tmp_path), str(weights), {"bbox": {"AP": 1.0}})
    assert (tmp_path / run_info.TEACHER_FILE).read_text() == before
    assert json.loads(before)["bbox_AP"] == 38.5
    assert sorted(os.listdir(tmp_path)) == ["model_final.pth", run_info.TEACHER_FILE]  # no temporary left


def test_teacher_effect_fit_recovers_known_effects_from_published_runs(tmp_path):
    """AP = recipe + seed + teacher, exactly: the fit returns each teacher's and seed's effect; a
    teacher whose runs no recipe shares with another teacher is not separable (None); the
    supervised student and the teacher's own folders are not distillation runs."""
    runs_dir = tmp_path / "pub" / "runs"
    teachers = {"a" * 64: 38.5, "b" * 64: 35.6, "c" * 64: 36.2}
    recipe_ap, seed_effect, teacher_effect = {"pkd": 25.0, "cwd": 24.0, "mgd": 27.0, "simkd": 30.0}, \
        {1: 0.0, 2: -0.5, 42: 0.8}, {"a" * 64: 0.0, "b" * 64: 1.2, "c" * 64: 7.0}
    taught_by = {("pkd", 42): "a", ("pkd", 1): "a", ("pkd", 2): "b", ("cwd", 42): "a", ("cwd", 1): "b",
                 ("cwd", 2): "a", ("mgd", 42): "b", ("mgd", 1): "b", ("mgd", 2): "b",
                 ("simkd", 42): "c", ("simkd", 1): "c"}
    for (recipe, seed), t in taught_by.items():
        run = runs_dir / recipe / f"seed{seed}"
        run.mkdir(parents=True)
        ap = recipe_ap[recipe] + seed_effect[seed] + teacher_effect[t * 64]
        (run / "eval_val.json").write_text(json.dumps({"results": {"bbox": {"AP": ap}, "segm": {"AP": ap + 1}}}))
        (run / "teacher.json").write_text(json.dumps({"sha256": t * 64, "bbox_AP": teachers[t * 64]}))
    for other in ("student/seed1", "teacher"):  # no teacher record: not a distillation run
        (runs_dir / other).mkdir(parents=True)
        (runs_dir / other / "eval_val.json").write_text(json.dumps({"results": {"bbox": {"AP": 20.0}}}))

    tool = load_tool("kd_teacher_effect", TOOLS)
    assert tool.main(["--published", str(tmp_path / "pub"), "--dataset", "val", "--reference", "aaaa",
                      "--output", str(tmp_path / "out")]) == 0
    report = json.load(open(tmp_path / "out" / "teacher_effect.json"))
    assert (tmp_path / "out" / "teacher_effect.md").is_file()
    for task in ("bbox", "segm"):
        fit = report[task]["fit"]
        assert fit["runs"] == len(taught_by) and fit["reference"] == "a" * 64
        effects = {t["teacher"][0]: t["effect"] for t in fit["teachers"]}
        assert effects["a"] == 0.0 and effects["b"] == pytest.approx(1.2, abs=1e-9)
        assert effects["c"] is None  # only SimKD learned from it: its effect is SimKD's own
        seeds = {s["seed"]: s["effect"] for s in fit["seeds"]}
        assert seeds[1] == 0.0 and seeds[2] == pytest.approx(-0.5, abs=1e-9) and seeds[42] == pytest.approx(0.8, abs=1e-9)
    with pytest.raises(ValueError, match="matches 0 of the runs' teachers"):
        tool.main(["--published", str(tmp_path / "pub"), "--dataset", "val", "--reference", "ffff",
                   "--output", str(tmp_path / "out")])


def test_report_gives_each_distillation_rows_configured_and_trained_kd_weights(report_setup, monkeypatch):
    """Published and balanced weights in the benchmark's report. The configured weight
    comes from the recipe's config, the trained one per seed from its metrics.json (last logged
    ``kd_weight/<loss>``); the teacher and the supervised student have no row."""
    kd_report, argv, out, calls = report_setup
    monkeypatch.setattr(sys, "argv", argv)
    kd_report.main()
    weights = json.load(open(out / "report.json"))["kd_weights"]
    assert weights == {"fitnet": {"balanced": False, "configured": {"fitnet": 1.0},
                                  "trained": {"1": {"fitnet": 0.5}, "2": {"fitnet": 1.0}}}}
    md = (out / "report.md").read_text()
    assert "| run | loss | configured | balanced | seed 1 | seed 2 |" in md
    assert "| fitnet | fitnet | 1 | no | 0.5 | 1 |" in md
