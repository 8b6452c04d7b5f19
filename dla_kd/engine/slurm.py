"""Training on SLURM through submitit (optional dependency: ``pip install dla-kd[slurm]``).

One submitit task per node runs ``tools/train_net.py`` with the user's arguments and Detectron2's
multi-machine options of its node: ``--num-machines`` (the job's nodes), ``--machine-rank`` (the
node's index) and ``--dist-url tcp://<first node>:<port>`` (one node: ``auto``, a free local
port). On each node Detectron2's ``launch`` then starts ``--num-gpus`` workers, exactly as the
multi-machine command typed by hand on every node does (docs/distributed.md). When SLURM
preempts the job or its time runs out, submitit calls :meth:`TrainJob.checkpoint`: the job is
requeued with ``--resume``, so it continues from the run's ``last_checkpoint``.
"""
import os
import subprocess
import sys
import zlib
from typing import List, Optional, Sequence

TRAIN_NET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "tools", "train_net.py")
NODE_OPTIONS = ("--num-machines", "--machine-rank", "--dist-url")  # set per node by the launcher


def default_port(job_id: str) -> int:
    """A port in 20000-39999 derived from the SLURM job id: jobs whose first nodes coincide do not collide."""
    return 20000 + zlib.crc32(str(job_id).encode()) % 20000


class TrainJob:
    """The callable submitit runs on each node: ``tools/train_net.py`` with ``argv`` (its own
    arguments: ``--config-file``, ``--num-gpus``, ``--resume``, ``KEY VALUE`` overrides) plus the
    node's multi-machine options. ``port``: of the rendezvous on the first node (None: from the job id)."""

    def __init__(self, argv: Sequence[str], port: Optional[int] = None, train_net: str = TRAIN_NET,
                 python: str = sys.executable):
        given = [a for a in argv if a.split("=")[0] in NODE_OPTIONS]
        if given:
            raise ValueError(f"{given}: the launcher sets {', '.join(NODE_OPTIONS)} for each node")
        self.argv, self.port, self.train_net, self.python = list(argv), port, train_net, python

    def node_command(self, num_nodes: int, node: int, first_host: str, job_id: str) -> List[str]:
        """The command line of node ``node`` (0-based) of ``num_nodes`` (``first_host``: node 0's host name)."""
        if num_nodes == 1:
            url = "auto"
        else:
            url = f"tcp://{first_host}:{self.port or default_port(job_id)}"
        # Options first: train_net's KEY VALUE overrides take the rest of the line.
        return [self.python, self.train_net, "--num-machines", str(num_nodes), "--machine-rank", str(node),
                "--dist-url", url, *self.argv]

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        cmd = self.node_command(env.num_nodes, env.node, env.hostnames[0], env.job_id)
        print("Node command:", " ".join(cmd), flush=True)
        code = subprocess.call(cmd)
        if code != 0:
            raise RuntimeError(f"tools/train_net.py on node {env.node} exited with status {code}: {' '.join(cmd)}")
        return code

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption or timeout: requeue the same training with ``--resume``."""
        import submitit

        argv = self.argv if "--resume" in self.argv else ["--resume", *self.argv]
        return submitit.helpers.DelayedSubmission(TrainJob(argv, self.port, self.train_net, self.python))
