#!/usr/bin/env python
"""Submit tools/train_net.py to a SLURM cluster through submitit (``pip install -e .[slurm]``):

    python tools/submit_slurm.py --nodes 2 --partition gpu --timeout 2880 --job-dir output/slurm \\
        --config-file CFG --num-gpus 8 [--resume] [KEY VALUE ...]

The launcher's own options come first (below); every other argument is tools/train_net.py's and
is passed on unchanged. ``--num-gpus`` (train_net's: processes per node) is also the number of
GPUs asked per node. One task per node runs tools/train_net.py with that node's
``--num-machines``, ``--machine-rank`` and ``--dist-url`` (``dla_kd/engine/slurm.py``); on
preemption or timeout the job is requeued with ``--resume``. ``--cluster local`` runs the job on
this machine through submitit's local executor (one node), e.g. to try a command before a
cluster. Prints the job id and its log folder; ``--wait`` waits for the end and fails with the
job's error.
"""
import argparse
import os
import sys

from dla_kd.utils.cli import run_tool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--job-dir", default="output/slurm/%j", help="submitit's logs and pickles (%%j: the job id)")
    parser.add_argument("--cluster", choices=["slurm", "local"], default="slurm",
                        help="slurm (sbatch) or local (this machine, submitit's local executor)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=60 * 24, metavar="MINUTES", help="job time limit")
    parser.add_argument("--partition", default="", help="SLURM partition")
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="CPUs per GPU (data loader workers)")
    parser.add_argument("--mem-gb", type=int, default=0, help="memory per node (0: the partition's default)")
    parser.add_argument("--job-name", default="dla-kd")
    parser.add_argument("--port", type=int, default=None, help="rendezvous port on the first node (default: from the job id)")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help="another sbatch option, e.g. --slurm account=myproj --slurm constraint=a100 (repeatable)")
    parser.add_argument("--wait", action="store_true", help="wait for the job to end")
    return parser


def train_net_args(argv):
    """train_net's arguments, parsed by train_net's own parser (usage errors before submitting)."""
    import importlib.util

    from dla_kd.engine.slurm import TRAIN_NET

    spec = importlib.util.spec_from_file_location("train_net", TRAIN_NET)
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    return train_net.build_parser().parse_args(argv)


def executor_for(args, num_gpus: int):
    import submitit

    executor = submitit.AutoExecutor(folder=args.job_dir, cluster=args.cluster)
    extra = dict(kv.split("=", 1) for kv in args.slurm)
    params = dict(name=args.job_name, nodes=args.nodes, tasks_per_node=1, timeout_min=args.timeout,
                  cpus_per_task=max(1, num_gpus * args.cpus_per_gpu))
    if args.cluster == "slurm":
        params["gpus_per_node"] = num_gpus
        params.update(slurm_signal_delay_s=120, slurm_additional_parameters=extra)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.mem_gb:
            params["mem_gb"] = args.mem_gb
    elif args.nodes != 1:
        raise SystemExit("error: --cluster local runs one node (submitit's local executor)")
    executor.update_parameters(**params)
    return executor


def main(argv=None) -> int:
    try:
        import submitit  # noqa: F401
    except ImportError:
        print("error: submitit is not installed: pip install -e .[slurm]", file=sys.stderr)
        return 2
    from dla_kd.engine.slurm import TrainJob

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if not rest:
        parser.error("give tools/train_net.py's arguments after the launcher's, e.g. --config-file CFG --num-gpus 8")
    try:
        job_fn = TrainJob(rest, port=args.port)
    except ValueError as e:
        parser.error(str(e))
    targs = train_net_args(rest)
    if targs.eval_only:
        parser.error("submit training runs; run --eval-only with tools/train_net.py")
    executor = executor_for(args, targs.num_gpus)
    job = executor.submit(job_fn)
    print(f"submitted job {job.job_id} ({args.nodes} node(s) x {targs.num_gpus} process(es)); logs: "
          f"{os.path.abspath(str(job.paths.folder))}", flush=True)
    if args.wait:
        try:
            job.result()
        except Exception as e:  # submitit's FailedJobError carries the job's traceback
            print(f"error: job {job.job_id} failed:\n{e}", file=sys.stderr)
            return 1
        print(f"job {job.job_id} finished")
    return 0


if __name__ == "__main__":
    run_tool(main)
