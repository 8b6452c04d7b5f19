#!/usr/bin/env python
"""Run (or collect) a KD comparison: the teacher once, then the supervised student and each
distillation config on the same schedule, once per seed; then one table (Markdown + JSON) with
mean and standard deviation over seeds of bbox/segm AP, AP50, AP75, per-class AP, "gap closed" =
(KD - student) / (teacher - student) on the means, the distance to the student in units of its
seed standard deviation, and each deployable model's parameters and GFLOPs; plus learning curves
(``curves.png``: teacher, student and the best KD runs, from the periodic evaluations that
``TEST.EVAL_PERIOD`` logs) and the hardware, threads and wall time.

    python projects/kd_benchmark/tools/kd_report.py --teacher configs/synthetic/bench/teacher_R_50_GN.yaml \\
        --student configs/synthetic/bench/student_MNv3_GN.yaml \\
        --distill projects/kd_benchmark/configs/[a-z]*.yaml --output output/kd_benchmark \\
        --seeds 42 1 2 --jobs 2 --threads 2 [--teacher-weights W] [--collect-only] [KEY VALUE ...]

The teacher trains into ``<output>/teacher``, every other run into ``<output>/<name>/seed<k>``:
the supervised seeds beside the teacher (with --jobs > 1), then the distillation runs, all first
seeds before any second seed. A finished run (its final evaluation exists and its
model_final.pth loads) is not repeated, an interrupted one resumes from its last
checkpoint (which re-creates a truncated or missing final file), a finished one that lacks the
final evaluation of another of its test datasets (killed between two) is only evaluated on those
(``<run>/evaluated_here``), as is a run taken over by ``--reuse``. The teacher's checkpoint is
checked to load before any student uses it. Runs side by side with --num-gpus > 1 each get a free
port (--dist-url auto). KEY VALUE overrides
apply to the student and every distillation run (same schedule); ``--teacher-opts`` to the
teacher. Distillation runs get DISTILL.TEACHER.CONFIG/WEIGHTS pointed at this teacher.

``--publish DIR`` copies the report and every finished run (``DIR/runs/<run>/seed<k>``, from where
a later call, also on a fresh machine, collects it instead of training it again) into a folder of
the repository; ``--publish-runs DIR`` does the same for the runs only, for calls that train part
of the list and must not replace the published table with their part of it. A teacher retrained
on a fresh machine (same config, other weights: CPU training is not bit-reproducible) does not
replace the published one, which stays the table's teacher: it is published beside it in
``<publish>/runs/teacher/retrained/<sha12>/``, and each distillation run names its teacher
(``teacher.json``), listed with its AP under the table.

The table is about the student's first ``DATASETS.TEST`` dataset; ``--dataset`` names another of
them (every run evaluates on all, see projects/unlabeled_kd): that table goes to
``report_<dataset>.{md,json}`` and ``curves_<dataset>.png``, e.g. from finished runs with
``--collect-only --dataset synthetic_publaynet_as_doclaynet_val``. The teacher is scored there
when its own DATASETS.TEST (``--teacher-opts``) has it.

``--reuse NAME=DIR`` takes over the finished runs ``DIR/seed<k>`` of another report for the run
NAME instead of training it again, when they trained exactly as NAME would (config equal apart
from OUTPUT_DIR and DATASETS.TEST, same teacher weights): only the test datasets they were not
evaluated on are evaluated (kd_benchmark/reused_runs.py). Else NAME trains, and the reason is
printed. The report lists the runs taken over.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import dla_kd  # noqa: F401
from dla_kd.checkpoint import checkpoint_problem
from dla_kd.config import load_config
from dla_kd.evaluation.model_cost import model_cost
from dla_kd.inference.student import deployable_cfg
from dla_kd.utils.benchmark import run_environment
from dla_kd.utils.files import atomic_copy, atomic_write_json, atomic_write_text

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)  # the project's package, kd_benchmark
from kd_benchmark.curves import curve_metric, last_logged, mean_curve, plateau_change, plot_curves, read_curve  # noqa: E402
from kd_benchmark.publishing import RETRAINED_DIR, publish_run, publish_teacher, published_runs_left_out  # noqa: E402
from kd_benchmark.report import (  # noqa: E402
    add_own_teacher_gap, build_seed_rows, configured_kd_weights, deploys_as_student, load_eval, report_markdown,
    runs_to_draw)
from kd_benchmark.reused_runs import EVAL_DIR, adopt_run, collect_evaluations, reuse_problem, reused_from  # noqa: E402
from kd_benchmark.run_info import (  # noqa: E402
    invocation_count, keep_recording, read_teacher_record, record_invocation, weights_sha256, write_teacher_record)

REPO = os.path.dirname(os.path.dirname(PROJECT))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TOOL = os.path.relpath(os.path.abspath(__file__), REPO)  # as the report's command names it


def run_name(config_file: str) -> str:
    return os.path.splitext(os.path.basename(config_file))[0]


def report_files(dataset: str, student_cfg) -> dict:
    """The report's file names: ``report.{md,json}``/``curves.png`` for the student's first test
    dataset, ``report_<dataset>...`` for another one."""
    suffix = "" if dataset == student_cfg.DATASETS.TEST[0] else f"_{dataset}"
    return {"md": f"report{suffix}.md", "json": f"report{suffix}.json", "curves": f"curves{suffix}.png"}


def _finished(output_dir, dataset, final_iteration=None, eval_only=False, published_dir=None, verbose=True):
    """(results, None) of a run that need not run again: its final evaluation is in
    ``output_dir`` with a loadable final checkpoint (published to ``published_dir`` on the way), or
    in ``published_dir``. Else (local results or None, the problem with the local checkpoint).
    ``verbose``: say so, and publish (else only look)."""
    done = load_eval(output_dir, dataset, final_iteration=final_iteration)
    if done is None and published_dir:
        published = load_eval(published_dir, dataset, final_iteration=final_iteration)
        if published is not None:
            if verbose:
                print(f"[kd_report] {output_dir}: finished earlier, collected from {published_dir}")
            return published, None
    problem = None if done is None or eval_only else checkpoint_problem(os.path.join(output_dir, "model_final.pth"))
    if done is not None and problem is None and verbose:
        print(f"[kd_report] {output_dir}: done, collected")
        if published_dir:
            publish_run(output_dir, published_dir)
    return done, problem


def run(config_file, output_dir, opts, dataset, num_gpus, eval_only=False, threads=None, final_iteration=None,
        published_dir=None, also=()):
    """Train + evaluate (or only evaluate) one config unless already done; returns its results.
    ``threads``: torch threads of the run (OMP_NUM_THREADS), default: inherited.
    ``final_iteration``: the evaluation that counts as "done" (periodic evaluations during
    training write the same file at earlier iterations). ``published_dir``: where a finished run
    is copied (``publish_run``) and, when ``output_dir`` has not finished, collected from.
    ``also``: with ``eval_only``, datasets whose evaluation must be there too (else all are
    evaluated again: an evaluation killed between two datasets)."""
    if eval_only and any(load_eval(output_dir, d, final_iteration=final_iteration) is None for d in also):
        done, problem = None, None
    else:
        done, problem = _finished(output_dir, dataset, final_iteration, eval_only, published_dir)
    if done is not None and problem is None:
        return done
    if done is not None:
        print(f"[kd_report] {output_dir}: evaluated, but {problem}: resuming the run", flush=True)
    resume = not eval_only and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))
    cmd = [sys.executable, TRAIN_NET, "--config-file", config_file, "--num-gpus", str(num_gpus)]
    cmd += ["--dist-url", "auto"] if num_gpus > 1 else []
    cmd += ["--resume"] if resume else []
    cmd += ["--eval-only"] if eval_only else []
    cmd += [*opts, "OUTPUT_DIR", output_dir]
    print(f"[kd_report] {'resuming' if resume else 'training'} {output_dir}:\n  {' '.join(cmd)}", flush=True)
    start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    log_path = os.path.join(output_dir, "kd_report_stdout.log")
    with open(log_path, "a") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        print(f"[kd_report] {output_dir}: FAILED (exit code {proc.returncode}), see {log_path}", flush=True)
        return None
    problem = None if eval_only else checkpoint_problem(os.path.join(output_dir, "model_final.pth"))
    if problem:
        print(f"[kd_report] {output_dir}: FAILED: {problem}", flush=True)
        return None
    print(f"[kd_report] {output_dir}: finished in {(time.time() - start) / 60:.1f} min", flush=True)
    if published_dir:
        publish_run(output_dir, published_dir)
    return load_eval(output_dir, dataset, final_iteration=final_iteration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher config")
    parser.add_argument("--teacher-weights", default="", help="trained teacher; else it is trained here")
    parser.add_argument("--teacher-opts", nargs="*", default=[], help="KEY VALUE overrides for the teacher")
    parser.add_argument("--student", required=True, help="supervised student config")
    parser.add_argument("--distill", nargs="+", required=True, help="distillation configs")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="student/KD runs are trained once per seed (the teacher once, with the first)")
    parser.add_argument("--distill-seeds", type=int, nargs="+", default=None,
                        help="the distillation runs' seeds when fewer than the student's (a subset of --seeds: "
                             "e.g. a supervised control on more seeds than the distilled rows)")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--collect-only", action="store_true", help="only tabulate finished runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained side by side, the teacher included (CPU: threads/jobs each); "
                             "supervised seeds train beside the teacher, distillation runs wait for it")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads to share between jobs")
    parser.add_argument("--curves", type=int, default=2,
                        help="learning curves of this many best KD runs whose deployable model is the student's "
                             "size (plus the best of any size when it is not among them)")
    parser.add_argument("--publish", default="",
                        help="a folder of the repository (e.g. projects/kd_benchmark/results): report.md, "
                             "report.json and curves.png are copied there, and each finished run's evaluation and "
                             "metrics to <publish>/runs/<run>/seed<k>/, from where a later invocation (also on a "
                             "fresh machine) collects it")
    parser.add_argument("--publish-runs", default="", metavar="DIR",
                        help="--publish for the runs only: finished runs are collected from and copied to "
                             "<DIR>/runs/<run>/seed<k>/ and the wall time is recorded there, but the published "
                             "report is left as it is (a call that trains part of the list, also on a fresh machine)")
    parser.add_argument("--replace-published", action="store_true",
                        help="publish even when the published report has runs this call does not list "
                             "(they leave the published table; their files under <publish>/runs stay)")
    parser.add_argument("--dataset", default="",
                        help="the evaluation dataset of the table: one of the student's DATASETS.TEST (default: "
                             "its first); another one writes report_<dataset>.{md,json} and curves_<dataset>.png")
    parser.add_argument("--reuse", nargs="+", default=[], metavar="NAME=DIR",
                        help="take over the finished runs DIR/seed<k> of another report for the run NAME (student or a "
                             "--distill config's name) when they trained the same way; only evaluated here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for student and KD runs")
    return parser


class KDBenchmark:
    """The runs of one report and how each is obtained: ``plan`` lists (run name, seed) in training
    order (supervised seeds first: they need no teacher, so they train beside it; then the
    distillation runs seed-major, every run's first seed before any second seed); ``execute``
    collects, resumes, takes over or trains one of them, ``train_teacher`` the teacher. Raises
    ``ValueError`` for arguments that contradict each other or the published report."""

    def __init__(self, args):
        if args.publish and args.publish_runs:
            raise ValueError("--publish already publishes the runs: give --publish or --publish-runs, not both")
        self.args = args
        student_cfg = load_config(args.student, args.opts)
        self.dataset = args.dataset or student_cfg.DATASETS.TEST[0]
        if self.dataset not in student_cfg.DATASETS.TEST:
            raise ValueError(f"--dataset {self.dataset} is not one of the student's DATASETS.TEST "
                             f"{tuple(student_cfg.DATASETS.TEST)}")
        self.report_files = report_files(self.dataset, student_cfg)
        self.student_final = student_cfg.SOLVER.MAX_ITER - 1
        self.teacher_final = load_config(args.teacher, args.teacher_opts).SOLVER.MAX_ITER - 1
        # The teacher's evaluation that counts: the final one of a teacher trained here, any of given weights.
        self.teacher_final_eval = None if args.teacher_weights else self.teacher_final
        self.teacher_dir = os.path.join(args.output, "teacher")
        self.teacher_weights = args.teacher_weights or os.path.join(self.teacher_dir, "model_final.pth")
        kd_opts = ["DISTILL.TEACHER.CONFIG", args.teacher, "DISTILL.TEACHER.WEIGHTS", self.teacher_weights]
        self.runs = {"student": (args.student, list(args.opts))}
        self.runs.update({run_name(c): (c, list(args.opts) + kd_opts) for c in args.distill})
        self.reuse = self._reuse(args.reuse)
        if args.publish and not args.replace_published:
            dropped = published_runs_left_out(args.publish, self.report_files["json"], self.runs)
            if dropped:
                raise ValueError(
                    f"{args.publish} has a report with the runs {dropped}, which this call does not list: "
                    "publishing would drop them from the published table. Add their configs to --distill, "
                    "leave out --publish (then publish with the full list), or pass --replace-published.")
        self.plan = [("student", seed) for seed in args.seeds]
        kd_seeds = args.distill_seeds or args.seeds
        if not set(kd_seeds) <= set(args.seeds):
            raise ValueError(f"--distill-seeds {kd_seeds} must be a subset of --seeds {args.seeds} "
                             "(a distillation run is paired with the supervised run of its seed)")
        self.plan += [(name, seed) for seed in kd_seeds for name in self.runs if name != "student"]
        self.threads = max(1, args.threads // args.jobs)  # of each run side by side
        self.teacher_future = None  # set by run_all: the teacher's results, once trained or collected
        self._test_sets = {}

    def _reuse(self, items) -> dict:
        """``--reuse NAME=DIR`` items as {NAME: DIR}, each NAME one of the runs."""
        unknown = [item for item in items if "=" not in item or item.split("=", 1)[0] not in self.runs]
        if unknown:
            raise ValueError(f"--reuse {' '.join(unknown)}: give NAME=DIR with NAME one of {sorted(self.runs)}")
        return dict(item.split("=", 1) for item in items)

    # Where runs are
    def out_dir(self, name: str, seed: int) -> str:
        return os.path.join(self.args.output, name, f"seed{seed}")

    def published(self, name, seed=None):
        """The published copy of a run (``<publish>/runs/<name>/seed<k>``), None without publishing."""
        folder = self.args.publish or self.args.publish_runs
        if not folder:
            return None
        return os.path.join(folder, "runs", name, *([f"seed{seed}"] if seed is not None else []))

    def run_dirs(self, name, seed=None):
        """Where a run's files are: this machine's output folder, then the published copy; for the
        teacher the published one first (see publish_teacher: a retrained teacher is not the table's)."""
        local = os.path.join(self.args.output, name, *([f"seed{seed}"] if seed is not None else []))
        dirs = [d for d in (local, self.published(name, seed)) if d]
        return dirs[::-1] if name == "teacher" else dirs

    def finished(self, name, seed) -> bool:
        done, problem = _finished(self.out_dir(name, seed), self.dataset, self.student_final,
                                  published_dir=self.published(name, seed), verbose=False)
        return done is not None and problem is None

    def unevaluated(self, name, seed):
        """The test datasets of run (name, seed) whose final evaluation its folder lacks while the
        table's one is there (a run killed between two evaluations, a take-over killed during its
        own): evaluated by :meth:`evaluate_missing`, not trained again."""
        out = self.out_dir(name, seed)
        if load_eval(out, self.dataset, final_iteration=self.student_final) is None:
            return []
        if name not in self._test_sets:
            self._test_sets[name] = tuple(load_config(*self.runs[name]).DATASETS.TEST)
        return [d for d in self._test_sets[name] if load_eval(out, d, final_iteration=self.student_final) is None]

    # Obtaining runs
    def evaluate_missing(self, out, config, opts, missing) -> bool:
        """Evaluate the final checkpoint of ``out`` on the datasets ``missing`` (--eval-only, in
        ``out/evaluated_here``) and move the evaluations into ``out``; False when that failed."""
        eval_opts = opts + ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "DATASETS.TEST", repr(tuple(missing))]
        run(config, os.path.join(out, EVAL_DIR), eval_opts, missing[0], self.args.num_gpus, eval_only=True,
            threads=self.threads)
        try:
            collect_evaluations(os.path.join(out, EVAL_DIR), out, missing, self.student_final)
        except FileNotFoundError as e:
            print(f"[kd_report] {out}: FAILED: {e}", flush=True)
            return False
        return True

    def needs_teacher(self) -> bool:
        """Whether a distillation run still has to train (else the teacher is only collected)."""
        return not all(self.finished(name, seed) for name, seed in self.plan if name != "student")

    def train_teacher(self):
        """The teacher's evaluation (trained here, or only evaluated with --teacher-weights); None
        when it failed or its checkpoint cannot be used. Only collected when every distillation
        run has finished (on a fresh machine: from the published folder)."""
        args, published = self.args, self.published("teacher")
        if args.collect_only or (not args.teacher_weights and not self.needs_teacher()):
            here = load_eval(self.teacher_dir, self.dataset, final_iteration=self.teacher_final_eval)
            if published and here is not None:  # trained by a call without --publish
                publish_teacher(self.teacher_dir, published, self.teacher_weights, self.dataset,
                                self.teacher_final_eval, evaluated_only=bool(args.teacher_weights))
            return self.table_teacher(here)
        # The supervised seeds train beside the teacher; when they have all finished (a fresh machine
        # with published seeds) nothing does (distillation waits for it): it gets every thread.
        alone = all(self.finished("student", seed) for seed in args.seeds)
        threads = args.threads if alone else self.threads
        opts = ["SEED", str(args.seeds[0]), *args.teacher_opts]
        if args.teacher_weights:
            tests = load_config(args.teacher, list(args.teacher_opts)).DATASETS.TEST
            result = run(args.teacher, self.teacher_dir, opts + ["MODEL.WEIGHTS", args.teacher_weights], self.dataset,
                         args.num_gpus, eval_only=True, threads=threads, also=tests)
            if published and result is not None:  # the evaluations a later step (analyze.py) reads beside the runs
                publish_teacher(self.teacher_dir, published, self.teacher_weights, self.dataset,
                                self.teacher_final_eval, evaluated_only=True)
            return result
        # Trained here whatever was published: the distillation runs need its weights.
        result = run(args.teacher, self.teacher_dir, opts, self.dataset, args.num_gpus, threads=threads,
                     final_iteration=self.teacher_final)
        # A teacher trained here must have left a complete final checkpoint (--teacher-weights files,
        # possibly .pkl or bare state dicts, were just loaded strictly by the teacher's evaluation).
        problem = checkpoint_problem(self.teacher_weights) if result is not None else "its run failed"
        if problem:
            print(f"[kd_report] the teacher cannot be used: {problem}", flush=True)
            return None
        if published:
            publish_teacher(self.teacher_dir, published, self.teacher_weights, self.dataset, self.teacher_final)
        return result

    def table_teacher(self, here):
        """The teacher row of the table: the published teacher when there is one (see
        publish_teacher), else ``here`` (this machine's)."""
        published = self.published("teacher")
        there = load_eval(published, self.dataset, final_iteration=self.teacher_final_eval) if published else None
        return there or here

    def execute(self, item):
        """(item, results) of the run ``item`` = (name, seed): collected, evaluated where it lacks
        a test dataset, taken over (``--reuse``) or trained (resumed); results None when it failed."""
        name, seed = item
        config, opts = self.runs[name]
        out = self.out_dir(name, seed)
        opts = ["SEED", str(seed)] + opts
        if self.args.collect_only:  # a run finished by a call without --publish is published now
            return item, _finished(out, self.dataset, self.student_final, published_dir=self.published(name, seed))[0]
        done = self.finished(name, seed)
        if name != "student" and not done:
            teacher = self.teacher_future.result()  # a distillation run to train waits for the teacher
            if teacher is None:
                return item, None
            write_teacher_record(out, self.teacher_weights, teacher)  # trained here or given (--teacher-weights)
        missing = self.unevaluated(name, seed) if done else []
        if missing:
            print(f"[kd_report] {out}: finished, evaluating {missing}", flush=True)
            if not self.evaluate_missing(out, config, opts, missing):
                return item, None
        if name in self.reuse and not done:
            taken, result = self.take_over(name, seed, config, opts)
            if taken:
                return item, result
        return item, run(config, out, opts, self.dataset, self.args.num_gpus, threads=self.threads,
                         final_iteration=self.student_final, published_dir=self.published(name, seed))

    def take_over(self, name, seed, config, opts):
        """(taken over?, results) of ``--reuse``'s run for (name, seed): the donor adopted and
        evaluated here on the datasets it lacks; (False, None) when it cannot stand for the run."""
        out, donor = self.out_dir(name, seed), os.path.join(self.reuse[name], f"seed{seed}")
        cfg = load_config(config, opts)
        has_teacher = name != "student" and os.path.isfile(self.teacher_weights)
        problem = reuse_problem(donor, cfg, self.student_final, weights_sha256(self.teacher_weights) if has_teacher else None)
        if problem:
            print(f"[kd_report] {out}: not taken over ({problem}): training it", flush=True)
            return False, None
        missing = adopt_run(donor, out, cfg.DATASETS.TEST, self.student_final)
        print(f"[kd_report] {out}: taken over from {donor}" + (f", evaluating {missing}" if missing else ""), flush=True)
        if missing and not self.evaluate_missing(out, config, opts, missing):
            return True, None
        if self.published(name, seed):
            publish_run(out, self.published(name, seed))
        return True, load_eval(out, self.dataset, final_iteration=self.student_final)


def run_all(bench: KDBenchmark, report: "BenchmarkReport"):
    """Train or collect the teacher and every run of ``bench.plan`` (``--jobs`` side by side, the
    teacher taking one slot), writing the report as each finishes; returns (teacher results,
    {(name, seed): results})."""
    results = {}
    # The teacher takes one of the --jobs slots; the supervised seeds use the others meanwhile.
    with ThreadPoolExecutor(max(1, bench.args.jobs)) as pool:
        bench.teacher_future = teacher_future = pool.submit(bench.train_teacher)
        # Finished runs first: collecting them trains nothing, and the table has them at once
        # instead of after every run before them in the plan has trained.
        futures = [pool.submit(bench.execute, item) for item in sorted(bench.plan, key=lambda i: not bench.finished(*i))]
        # While this machine's teacher trains, the table's teacher is the published one (if any).
        report.write(bench.table_teacher(None), results)
        # Written as each run finishes (not in plan order: a run that finishes while an earlier
        # one still trains is in the table at once), its rows' seeds in plan order.
        for future in as_completed(futures):
            item, res = future.result()
            results[item] = res
            results = {i: results[i] for i in bench.plan if i in results}
            report.write(bench.table_teacher(teacher_future.result() if teacher_future.done() else None), results)
    return teacher_future.result(), results


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.time()
    try:
        bench = KDBenchmark(args)
    except ValueError as e:
        parser.error(str(e))
    report = BenchmarkReport(args, bench.dataset, bench.runs, started, bench.run_dirs, bench.teacher_final_eval)
    heartbeat = keep_recording(report.invocation_dirs, started)  # a killed call keeps the time it ran
    try:
        teacher, results = run_all(bench, report)
    finally:
        heartbeat.set()
    if teacher is None and not args.collect_only:
        raise SystemExit("[kd_report] the teacher run failed or cannot be used; nothing was distilled")
    report.write(teacher, results, final=True)


_COSTS = {}  # (deployable MODEL config, test size) -> model_cost


def deployable_cost(cfg):
    """Parameters and GFLOPs of what gets deployed (SimKD: student + projector + teacher heads) on
    a square page at the test size. Measured once per deployable architecture: the recipes whose
    deployable model is the plain student share one measurement."""
    plain = deployable_cfg(cfg).clone()
    plain.defrost()
    plain.MODEL.WEIGHTS = ""  # the architecture, not the weights, sets the cost
    size = cfg.INPUT.MIN_SIZE_TEST
    key = (plain.MODEL.dump(), size)
    if key not in _COSTS:
        _COSTS[key] = model_cost(plain, size, size)
    return dict(_COSTS[key])


class BenchmarkReport:
    """Writes ``report.{md,json}`` (mean ± std over seeds, model sizes, settings, wall time) and
    ``curves.png`` into ``--output`` after every finished run (``report_<dataset>.*``,
    ``curves_<dataset>.png`` for a ``--dataset`` other than the student's first test dataset)."""

    def __init__(self, args, dataset, runs, started, run_dirs, teacher_final_eval=None):
        self.args, self.dataset, self.runs, self.started, self.run_dirs = args, dataset, runs, started, run_dirs
        self.teacher_final_eval = teacher_final_eval  # the teacher's evaluation that counts (None: any)
        # Recorded in both folders: calls that trained here without publishing count when one publishes.
        self.invocation_dirs = [args.output] + [d for d in (args.publish, args.publish_runs) if d]
        student_cfg, teacher_cfg = load_config(args.student, list(args.opts)), load_config(args.teacher, list(args.teacher_opts))
        self.files = report_files(dataset, student_cfg)
        # SOLVER.MAX_ITER of the students (False) and of the teacher (True): a shorter curve is unfinished.
        self.max_iter = {False: student_cfg.SOLVER.MAX_ITER, True: teacher_cfg.SOLVER.MAX_ITER}
        # Run name -> key of its bbox AP on the dataset in metrics.json (None: not evaluated there).
        self.metrics = {"teacher": curve_metric(teacher_cfg.DATASETS.TEST, dataset)}
        self.sizes = {}
        self.kd_config = {}  # distillation run name -> its configured KD weights (configured_kd_weights)
        for name, config in [("teacher", args.teacher)] + [(n, c) for n, (c, _) in runs.items()]:
            try:
                cfg = load_config(config, list(args.opts) if name != "teacher" else [])
                if name != "teacher":
                    self.metrics[name] = curve_metric(cfg.DATASETS.TEST, dataset)
                    kd_weights = configured_kd_weights(cfg)
                    if kd_weights:
                        self.kd_config[name] = kd_weights
                self.sizes[name] = deployable_cost(cfg)
            except Exception as e:  # a size that cannot be computed must not stop the report
                print(f"[kd_report] size of {name} not computed: {e}", flush=True)

    def write(self, teacher, results, final=False):
        """Write (and with ``--publish`` copy) the report of ``results`` {(name, seed): results or
        None}; ``teacher``: the table's teacher's results; ``final``: the call's last write."""
        args = self.args
        report = self.build(teacher, results, final)
        os.makedirs(args.output, exist_ok=True)
        atomic_write_json(os.path.join(args.output, self.files["json"]), report, indent=2)
        md = report_markdown(report, self.files["curves"])
        atomic_write_text(os.path.join(args.output, self.files["md"]), md)
        print(md, flush=True)
        if args.publish:
            os.makedirs(args.publish, exist_ok=True)
            for name in self.files.values():
                if os.path.isfile(os.path.join(args.output, name)):
                    atomic_copy(os.path.join(args.output, name), os.path.join(args.publish, name))

    def build(self, teacher, results, final=False) -> dict:
        """report.json's content (also draws ``curves.png``); see :meth:`write`."""
        args = self.args
        per_run = {"teacher": [teacher] if teacher else []}
        seeds = {}
        for name in self.runs:
            finished = [(s, res) for (n, s), res in results.items() if n == name and res is not None]
            per_run[name], seeds[name] = [res for _, res in finished], [s for s, _ in finished]
        rows = build_seed_rows({k: v for k, v in per_run.items() if v}, seeds=seeds)
        missing = [f"{n}/seed{s}" for (n, s), res in results.items() if res is None]
        curves = self._curves(rows, results)
        meta = run_environment(args.threads, args.jobs)
        # Kept with the published report when there is one: sessions on fresh machines add up.
        meta["wall_time_h"] = record_invocation(self.invocation_dirs, self.started, final) / 3600
        meta["invocations"] = invocation_count(args.publish or args.publish_runs or args.output)
        meta["command"] = f"{TOOL} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        teachers = self._teachers(results, teacher)
        own_teacher = {}  # run name -> its seeds' teachers' results
        for t in teachers:
            for name, _ in t["run_pairs"] if t["results"] else []:
                own_teacher.setdefault(name, []).append(t["results"])
        add_own_teacher_gap(rows, own_teacher)
        teachers = [{k: v for k, v in t.items() if k not in ("results", "run_pairs")} for t in teachers]
        reused = {f"{n}/seed{s}": reused_from(self.run_dirs(n, s)) for (n, s), res in results.items() if res is not None}
        convergence = {name: plateau_change(c, max_iter=self.max_iter[name == "teacher"]) for name, c in curves.items()}
        return {"dataset": self.dataset, "seeds": args.seeds, "opts": args.opts, "environment": meta,
                "sizes": self.sizes, "rows": rows, "kd_weights": self._kd_weights(results), "curves": curves,
                "teachers": teachers, "reused_runs": {k: v for k, v in reused.items() if v},
                "plateau_change_last_third": convergence, "failed_or_missing": missing}

    def _kd_weights(self, results):
        """Run name -> configured KD weights and, per finished seed (``"trained"``, keyed by the
        seed as a string), the weights its metrics.json logged last."""
        out = {}
        for name, conf in self.kd_config.items():
            trained = {}
            for seed in self.args.seeds:
                if results.get((name, seed)) is not None:
                    logged = next((w for w in (last_logged(d, "kd_weight/") for d in self.run_dirs(name, seed)) if w), {})
                    if logged:
                        trained[str(seed)] = logged
            out[name] = {**conf, "trained": trained}
        return out

    def _teachers(self, results, table_teacher):
        """Distinct teachers (by weights sha256) of the finished distillation runs, each with the
        runs that learned from it (``run_pairs`` (name, seed), ``run_ids`` ``<name>/seed<k>``) and
        its ``results`` on the report's dataset (``bbox_AP`` their bbox AP): those of this
        machine's teacher or of a retrained one published beside the table's when the sha256 is
        theirs, else the table's teacher's (``table_teacher``:
        the teacher the published runs learned from; its folder need not name its sha256). The
        AP a run's teacher.json records is on the dataset of the call that trained it."""
        evaluated = self._teacher_evaluations()
        seen = {}
        for (name, seed), res in sorted(results.items()):
            record = read_teacher_record(self.run_dirs(name, seed)) if res is not None and name != "student" else None
            if record:
                seen.setdefault(record["sha256"], {**record, "run_pairs": []})["run_pairs"].append((name, seed))
        teachers = []
        for sha, entry in seen.items():
            here = evaluated.get(sha, table_teacher)  # None: the table's teacher has not finished
            bbox_ap = here["bbox"]["AP"] if here else entry["bbox_AP"]
            run_ids = [f"{name}/seed{seed}" for name, seed in entry["run_pairs"]]
            teachers.append({**entry, "bbox_AP": bbox_ap, "results": here, "run_ids": run_ids, "runs": len(run_ids)})
        return teachers

    def _teacher_evaluations(self):
        """sha256 -> results on the report's dataset of the teachers whose folder names its weights
        (teacher.json): this machine's and those published in ``retrained/``."""
        dirs = list(self.run_dirs("teacher"))
        dirs += [os.path.join(d, RETRAINED_DIR, sha) for d in dirs if os.path.isdir(os.path.join(d, RETRAINED_DIR))
                 for sha in sorted(os.listdir(os.path.join(d, RETRAINED_DIR)))]
        evaluated = {}
        for d in dirs:
            record = read_teacher_record([d])
            here = load_eval(d, self.dataset, final_iteration=self.teacher_final_eval) if record else None
            if here is not None:
                evaluated.setdefault(record["sha256"], here)
        return evaluated

    def _curves(self, rows, results):
        """bbox AP curves: teacher, supervised student and the KD runs of ``runs_to_draw`` (the
        ``--curves`` best at the student's deployable cost, and the best of any cost), each the
        mean over its finished seeds (a seed still training would cut the mean curve short). A
        run that deploys more than the student says so in the legend."""
        names = ["teacher", "student"] + runs_to_draw(rows, self.sizes, self.args.curves)
        curves = {"teacher": _first_curve(self.run_dirs("teacher"), self.metrics["teacher"])}
        for name in names[1:]:
            curves[name] = mean_curve([_first_curve(self.run_dirs(name, s), self.metrics.get(name))
                                       for s in self.args.seeds if results.get((name, s)) is not None])
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            plot_curves(curves, os.path.join(self.args.output, self.files["curves"]), f"bbox AP on {self.dataset}",
                        labels={n: f"{n} (deploys {self.sizes[n]['params_M']:.2f} M params, "
                                   f"{self.sizes[n]['gflops']:.1f} GFLOPs)"
                                for n in curves if n not in ("teacher", "student")
                                and not deploys_as_student(self.sizes, n)})
        return curves


def _first_curve(dirs, metric):
    """The first curve of ``metric`` found in ``dirs`` ([] when ``metric`` is None: not evaluated)."""
    return next((c for c in (read_curve(d, metric) for d in dirs) if c), []) if metric else []


if __name__ == "__main__":
    main()
