"""What the wait after a gloo collective costs: how often a collective's call slept until gloo let go of its tensors.

    cd benchmarks && python collective_wait.py --calls 500 --passes 3 --out results/collective-wait-avx512.json

Two ranks on 127.0.0.1 (spawned here, torchrun's environment), one thread each. Each pass makes ``--calls``
``cnnlab.train.distributed.reduce_int`` calls and counts the 0.1-ms sleeps of ``_collective`` (docs/distributed.md,
"Testing on a CPU with gloo", says why it waits); the passes alternate with passes that skip the wait, for its
cost side by side. Rank 0 prints one line per pass, and the JSON keeps both ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from bench import environment


def _rank(rank: int, port: int, calls: int, passes: int, out: str) -> None:
    import cnnlab.train.distributed as distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo")
    env = distributed.init_distributed(torch.device("cpu"))
    sleeps, real_sleep = [0], distributed.time.sleep

    def counted(seconds: float) -> None:
        sleeps[0] += 1
        real_sleep(seconds)

    distributed.time.sleep = counted
    rows = []
    for p in range(2 * passes):
        wait = p % 2 == 0
        distributed._waits_ran_out = not wait  # what the flag does after a bound ran out: no wait at all
        sleeps[0] = 0
        start = time.perf_counter()
        for i in range(calls):
            distributed.reduce_int(i, env, torch.device("cpu"))
        seconds = time.perf_counter() - start
        rows.append({"pass": p // 2 + 1, "wait": wait, "calls": calls, "sleeps": sleeps[0],
                     "us_per_call": seconds / calls * 1e6})
    distributed.shutdown(env)
    Path(out, f"rank{rank}.json").write_text(json.dumps(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="reduce_int calls per pass (default 500)")
    parser.add_argument("--passes", type=int, default=3, help="pairs of passes, with and without (default 3)")
    parser.add_argument("--out", type=Path, help="write the figures and the machine here as JSON")
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as work:
        mp.start_processes(_rank, args=(port, args.calls, args.passes, work), nprocs=2, start_method="spawn")
        ranks = [json.loads(Path(work, f"rank{r}.json").read_text()) for r in (0, 1)]
    for row in ranks[0]:
        print(f"pass {row['pass']} {'with' if row['wait'] else 'without'} the wait: {row['sleeps']} sleeps in "
              f"{row['calls']} reduce_int calls, {row['us_per_call']:.0f} us per call (rank 0)")
    if args.out:
        args.out.write_text(json.dumps({"environment": environment(), "ranks": ranks}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
