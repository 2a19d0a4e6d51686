"""torch.distributed on the CPU: two gloo ranks on 127.0.0.1 (docs/distributed.md).

One module-scoped harness spawns two processes with the environment torchrun would give them (MASTER_ADDR,
MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE) and runs several short Trainer scenarios in each; every rank saves what
it saw, and the tests below judge it. A hang (ranks disagreeing about a collective) fails by the harness deadline,
which kills both processes. A last test goes through the real launcher: ``python -m torch.distributed.run ... -m
cnnlab train``.

Data: a slice of the real Fashion-MNIST (1000 training, 333 test images). 333 is odd on purpose: two equal shards
of 166 leave one test image over, which rank 0 must validate too.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.distributed import DistEnv, broadcast_object, reduce_int

B = 16  # per-rank batch; the one-process reference uses 2 * B
STEPS = 4  # --limit-train-batches
N_TRAIN, N_TEST = 1000, 333
RUN_FILES = {"config.json", "metrics.csv", "result.json", "curves.png", "last.pt", "best.pt", "tb"}
RELEASE_ROUNDS = 200  # collectives of each kind in the 'released' scenario
DEADLINE_S = 240  # generous for 2 loaded cores; a hang would otherwise last gloo's 30-minute timeout


def _config(**overrides):
    from cnnlab.train import make_config

    base = dict(batch_size=B, epochs=2, limit_train_batches=STEPS, log_every=2, device="cpu", deterministic=True)
    return make_config(overrides.pop("model", "lenet-relu"), **{**base, **overrides})


def _small_data(data_dir):
    from cnnlab.data import load_dataset

    full = load_dataset("fashion-mnist", data_dir, download=False)
    return replace(full, train_images=full.train_images[:N_TRAIN], train_labels=full.train_labels[:N_TRAIN],
                   test_images=full.test_images[:N_TEST], test_labels=full.test_labels[:N_TEST])


class _FunctionalWithNaN(types.ModuleType):
    """torch.nn.functional whose cross_entropy turns NaN on the ``bad``-th training call (1-based)."""

    def __init__(self, bad: int):
        super().__init__("functional_with_nan")
        self.bad, self.calls = bad, 0

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, *args, **kwargs):
        loss = torch.nn.functional.cross_entropy(*args, **kwargs)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.bad:
                loss = loss * float("nan")
        return loss


def _record_error(e: BaseException) -> dict:
    return {"type": type(e).__name__, "message": str(e), "signum": getattr(e, "signum", None)}


def _scenarios(rank: int, ports: list[int], record: dict) -> None:
    """The distributed runs, in order; each one creates and destroys its own process group."""
    import torch.distributed as dist

    from cnnlab.runs.checkpoint import load_checkpoint
    from cnnlab.train import TrainConfig, build_trainer
    from cnnlab.train import trainer as trainer_module

    def fit(trainer) -> dict:
        try:
            trainer.fit()
        except Exception as e:
            return {"error": _record_error(e), "step": trainer.state.step}
        return {"step": trainer.state.step}

    def run(name, port, make):
        os.environ["MASTER_PORT"] = str(port)
        try:
            record[name] = make()
        except Exception as e:  # recorded, judged by the tests
            record[name] = {"error": _record_error(e)}
        finally:
            if dist.is_initialized():  # a Trainer that failed in __init__ never reached fit's shutdown
                dist.destroy_process_group()

    def full():
        trainer = build_trainer(_config(), quiet=True, report=False)  # out=None: the default, time-named run folder
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        history = trainer.fit()
        return {"initial": initial, "weights": trainer.model.state_dict(), "history": history,
                "run_dir": str(trainer.run_dir)}

    def stopped():
        trainer = build_trainer(_config(out="stopped"), quiet=True, report=False)
        update = trainer.epoch_metrics.update

        def update_then_signal(*args):  # rank 1 alone gets SIGTERM at the end of its first step
            update(*args)
            if rank == 1 and trainer.state.step == 0:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer.epoch_metrics.update = update_then_signal
        result = fit(trainer)
        ckpt = load_checkpoint(Path("stopped") / "last.pt")  # every rank may read it: fit waited for rank 0
        return {**result, "saved": {k: ckpt[k] for k in ("step", "loader", "epoch_metrics")}}

    def resumed():  # what cnnlab.train.resume does, keeping the Trainer to read its weights
        state = load_checkpoint(Path("stopped") / "last.pt")
        trainer = build_trainer(TrainConfig(**state["config"]), quiet=True, report=False, run_dir="stopped",
                          resume_state=state)
        history = trainer.fit()
        return {"weights": trainer.model.state_dict(), "history": history, "run_dir": str(trainer.run_dir)}

    def nan():  # rank 1's loss alone turns NaN at step 2, the sync point; rank 0's own losses stay finite there
        if rank == 1:
            trainer_module.F = _FunctionalWithNaN(bad=2)
        try:
            return fit(build_trainer(_config(out="nan"), quiet=True, report=False))
        finally:
            trainer_module.F = torch.nn.functional

    def reported():  # with its report: rank 0 spies on the report's scoring and on the figures the page shows
        import cnnlab.report.html as html
        from cnnlab.inference import Trained

        seen: dict = {"scored": [], "page": None}
        real_logits, real_stats = Trained.logits, html._stats

        def logits(self, images, *args, **kwargs):
            seen["scored"].append(len(images))
            return real_logits(self, images, *args, **kwargs)

        def stats(run, result, *split):
            seen["page"] = {"accuracy": result.accuracy, "n": result.n, "per_class": list(result.per_class)}
            return real_stats(run, result, *split)

        Trained.logits, html._stats = logits, stats
        try:
            trainer = build_trainer(_config(epochs=1, out="reported"), quiet=True)
            trainer.fit()
        finally:
            Trained.logits, html._stats = real_logits, real_stats
        return {**seen, "test_logits": trainer.test_logits, "result": trainer.result}

    def budgeted():  # a time budget: the ranks time their steps apart, yet plan, stop and evaluate together
        trainer = build_trainer(_config(out="budgeted", time_budget=4.0, epochs=None, limit_train_batches=None),
                                quiet=True, report=False)
        result = fit(trainer)
        return {**result, "budget_steps": trainer.state.budget_steps, "weights": trainer.model.state_dict(),
                "result": trainer.result}

    def released():  # how often gloo still held a collective's tensor when the collective had returned
        from cnnlab.train.distributed import broadcast_buffers, gather_in_shard_order, init_distributed, sum_over_ranks

        env, held = init_distributed(torch.device("cpu")), {"gather": 0, "sum": 0, "buffers": 0}
        norm = torch.nn.BatchNorm2d(3)
        counts = [b._use_count() for b in norm.buffers()]
        for i in range(RELEASE_ROUNDS):
            mine = torch.arange(6.0) + i
            gather_in_shard_order(mine, env)
            held["gather"] += mine._use_count() > 1
            total = torch.full((2,), float(i))
            sum_over_ranks(total)
            held["sum"] += total._use_count() > 1
            broadcast_buffers(norm, env)
            held["buffers"] += [b._use_count() for b in norm.buffers()] != counts
        return held

    def unreadable():  # rank 0 alone loads the data, and finds none: every rank ends with its line
        import cnnlab.inference as inference

        def no_data(*args, **kwargs):
            raise CnnlabError("no data here")

        loaded = inference.dataset_of
        if rank == 0:
            inference.dataset_of = no_data
        try:
            return build_trainer(_config(out="unreadable"), quiet=True)
        finally:
            inference.dataset_of = loaded

    def refit():  # --test-split 0 without --val-split: nothing held out, so no rank evaluates
        import cnnlab.inference as inference

        loaded = inference.dataset_of
        whole = loaded()
        none_held = replace(whole, test_images=whole.test_images[:0], test_labels=whole.test_labels[:0],
                            held_out=(0, "none drawn"))
        inference.dataset_of = lambda *args, **kwargs: none_held
        try:
            trainer = build_trainer(_config(out="refit", test_split=0), quiet=True, report=False)
            history = trainer.fit()
        finally:
            inference.dataset_of = loaded
        best, last = (load_checkpoint(Path("refit") / name)["model"] for name in ("best.pt", "last.pt"))
        return {"history": history, "weights": trainer.model.state_dict(), "result": trainer.result,
                "best_is_last": all(torch.equal(best[k], last[k]) for k in last)}

    run("full", ports[0], full)
    run("stopped", ports[1], stopped)
    run("resumed", ports[2], resumed)
    run("nan", ports[3], nan)
    run("sync_bn", ports[4], lambda: build_trainer(_config(model="lenet-bn", sync_bn=True, out="sbn"), quiet=True))
    run("refused", ports[5], lambda: build_trainer(_config(out=record["full"]["run_dir"]), quiet=True))
    run("reported", ports[6], reported)
    run("budgeted", ports[7], budgeted)
    run("released", ports[8], released)
    run("unreadable", ports[9], unreadable)
    run("refit", ports[10], refit)


def _worker(rank: int, world_size: int, ports: list[int], data_dir: str, out: str) -> None:
    """One rank: torchrun's environment, a small dataset, the scenarios; rank 0 then runs the 1-process reference."""
    import cnnlab.inference as inference_module
    import cnnlab.io as io_module
    import cnnlab.runs.checkpoint as checkpoint_module
    import cnnlab.runs.folder as rundir_module
    from cnnlab.train import build_trainer
    from cnnlab.train.metrics import EpochMetrics

    torch.set_num_threads(1)
    os.chdir(Path(out) / "cwd")
    os.environ.update(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), TORCHELASTIC_USE_AGENT_STORE="True")  # the stores: _stores()
    small = _small_data(data_dir)
    inference_module.dataset_of = lambda *args, **kwargs: small
    # A rank that built its own run folder name would leave runs/from-rank1 behind.
    rundir_module.default_run_dir = lambda model: Path("runs") / f"from-rank{rank}"
    # Every file cnnlab writes goes through atomic_write; remember who called it.
    record: dict = {"pid": os.getpid(), "writes": [], "metrics": []}
    real_write = io_module.atomic_write

    def atomic_write(path, write, *args, **kwargs):  # as atomic_write takes them (overwrite)
        record["writes"].append(str(path))
        real_write(path, write, *args, **kwargs)

    checkpoint_module.atomic_write = io_module.atomic_write = atomic_write
    # This rank's own sums next to the global figures compute() returns.
    real_compute = EpochMetrics.compute

    def compute(self):
        loss_sum, correct = self.sums.tolist()
        result = real_compute(self)
        record["metrics"].append({"loss_sum": loss_sum, "correct": correct, "count": self.count, "global": result})
        return result

    EpochMetrics.compute = compute
    _scenarios(rank, ports, record)
    if rank == 0:  # the reference: one process, batch 2B, the same steps (WORLD_SIZE=1 means no process group)
        os.environ["WORLD_SIZE"] = "1"
        trainer = build_trainer(_config(batch_size=2 * B, out="single"), quiet=True, report=False)
        history = trainer.fit()
        record["single"] = {"weights": trainer.model.state_dict(), "history": history}
        state = checkpoint_module.load_checkpoint(Path("stopped") / "last.pt")  # written by two ranks
        try:
            build_trainer(trainer.config, quiet=True, report=False, run_dir="stopped", resume_state=state)
        except Exception as e:
            record["one_rank_resume"] = _record_error(e)
    with open(Path(out) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(record, f)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (torchrun starts each worker in a session of its own, so killing
    torchrun's process group would leave the workers behind); Linux /proc, by process id only."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _stores(n: int) -> list:
    """``n`` rendezvous stores served by this process on ports the system picks, listening until they are dropped.

    A port found free and closed again may be taken by anything before a rank binds it, minutes later for the last
    scenario; these are never let go. The ranks find them as torchrun's ranks find its agent's
    store: ``TORCHELASTIC_USE_AGENT_STORE=True`` with the store at ``MASTER_ADDR:MASTER_PORT``, so that every rank,
    rank 0 too, connects as a client.
    """
    import torch.distributed as dist

    return [dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False) for _ in range(n)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data_dir) -> tuple[dict, dict, Path]:
    """Run the scenarios on two spawned ranks; returns (rank 0's record, rank 1's record, their working folder)."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist")
    (out / "cwd").mkdir()
    stores = _stores(11)  # one per scenario: a store keeps its keys, and each scenario is a new process group
    context = mp.start_processes(_worker, args=(2, [s.port for s in stores], str(data_dir), str(out)), nprocs=2,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=2):
            if time.monotonic() > deadline:
                pytest.fail(f"the two ranks did not finish in {DEADLINE_S}s (a collective hung?)")
    finally:
        for p in context.processes:  # never leave a rank behind, whatever happened
            if p.is_alive():
                p.kill()
                p.join()
    records = []
    for r in (0, 1):
        with open(out / f"rank{r}.pkl", "rb") as f:
            records.append(pickle.load(f))
    return records[0], records[1], out / "cwd"


def test_a_refusal_on_the_rank_that_loads_the_data_ends_every_rank_with_its_line(ranks):
    # rank 1 waited for rank 0's data at a barrier, and ended with gloo's "Connection closed by peer" as an
    # internal error when rank 0 stopped on its own line
    for record in ranks[:2]:
        assert record["unreadable"]["error"]["type"] == "CnnlabError"
        assert record["unreadable"]["error"]["message"] == "no data here"


@pytest.mark.slow
def test_a_run_that_holds_out_nothing_trains_alike_on_every_rank_and_evaluates_nothing(ranks):
    r0, r1, _ = ranks
    assert "error" not in r0["refit"] and "error" not in r1["refit"], (r0["refit"], r1["refit"])
    _assert_same_weights(r0["refit"]["weights"], r1["refit"]["weights"])
    for record in (r0, r1):
        assert [sorted(row) for row in record["refit"]["history"]] == \
            [["epoch", "images_per_s", "lr", "seconds", "train_acc", "train_loss"]] * 2
        result = record["refit"]["result"]
        assert result["nothing_held_out"] and result["train_images"] == N_TRAIN and result["test_acc"] is None
    assert r0["refit"]["best_is_last"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ranks_end_with_identical_weights_that_moved(ranks):
    r0, r1, _ = ranks
    _assert_same_weights(r0["full"]["weights"], r1["full"]["weights"])
    moved = max((r0["full"]["weights"][k] - r0["full"]["initial"][k]).abs().max().item() for k in r0["full"]["initial"])
    assert moved > 1e-3  # 8 SGD steps at lr 0.1 change the weights: the comparisons above are not vacuous
    metrics = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[row[k] for k in metrics] for row in r0["full"]["history"]] == \
        [[row[k] for k in metrics] for row in r1["full"]["history"]]


@pytest.mark.slow
def test_epoch_metrics_are_the_exact_sums_over_ranks(ranks):
    r0, r1, _ = ranks
    # Per epoch: train then validation (the first two Trainers' compute() calls are the "full" scenario).
    calls = list(zip(r0["metrics"][:4], r1["metrics"][:4], strict=True))
    for kind, (a, b) in zip(["train", "val", "train", "val"], calls, strict=True):
        assert a["global"] == b["global"]
        count = a["count"] + b["count"]
        assert a["global"]["count"] == count
        assert a["global"]["loss"] == pytest.approx((a["loss_sum"] + b["loss_sum"]) / count, rel=1e-12)
        assert a["global"]["acc"] == (a["correct"] + b["correct"]) / count
        if kind == "train":
            assert (a["count"], b["count"]) == (STEPS * B, STEPS * B)
        else:  # two equal shards of 166, and the one test image left over goes to rank 0
            assert (a["count"], b["count"]) == (N_TEST // 2 + 1, N_TEST // 2)
    history = r0["full"]["history"]
    assert [row["train_loss"] for row in history] == [c[0]["global"]["loss"] for c in calls[0::2]]
    assert [row["val_acc"] for row in history] == [c[0]["global"]["acc"] for c in calls[1::2]]


@pytest.mark.slow
def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(ranks):
    # Rank r's batch i is perm[r::2][i*B:(i+1)*B] = perm[2iB + r : 2(i+1)B : 2]; the two together are exactly
    # perm[2iB : 2(i+1)B], the one-process batch i of size 2B. DDP averages the two mean-loss gradients, which is
    # the mean over the 2B samples, so only float rounding separates the runs.
    r0, _, _ = ranks
    single, two = r0["single"], r0["full"]
    for k, w in single["weights"].items():
        torch.testing.assert_close(two["weights"][k], w, rtol=1e-5, atol=1e-6, msg=k)
    for a, b in zip(single["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert (b["train_acc"], b["val_acc"]) == (a["train_acc"], a["val_acc"])


@pytest.mark.slow
def test_only_rank_0_writes_and_the_run_folder_name_is_rank_0s(ranks):
    r0, r1, cwd = ranks
    assert r0["full"]["run_dir"] == r1["full"]["run_dir"] == str(Path("runs") / "from-rank0")
    assert r1["writes"] == [] and r0["writes"]
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["from-rank0"]
    run = cwd / "runs" / "from-rank0"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert all(f".{r0['pid']}." in p.name for p in (run / "tb").iterdir())  # TensorBoard: rank 0's events only
    result = json.loads((run / "result.json").read_text())
    assert (result["world_size"], result["global_batch_size"], result["test_samples"]) == (2, 2 * B, N_TEST)
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_all_ranks_at_the_same_step(ranks):
    r0, r1, _ = ranks
    for r in (r0, r1):  # rank 1 got SIGTERM in step 1; both stop at the next sync point, step 2 (log_every=2)
        assert r["stopped"]["error"]["type"] == "Interrupted"
        assert r["stopped"]["error"]["signum"] == signal.SIGTERM
        assert r["stopped"]["step"] == 2
    for r in (r0, r1):
        saved = r["stopped"]["saved"]
        assert (saved["step"], saved["loader"]) == (2, {"epoch": 0, "batch": 2})
        assert saved["epoch_metrics"]["count"] == 2 * 2 * B  # both ranks' samples, not rank 0's alone


@pytest.mark.slow
def test_resume_under_two_ranks_matches_the_uninterrupted_run(ranks):
    r0, r1, _ = ranks
    assert r0["resumed"]["run_dir"] == r1["resumed"]["run_dir"] == "stopped"
    for r in (r0, r1):
        _assert_same_weights(r["resumed"]["weights"], r0["full"]["weights"])
    for a, b in zip(r0["resumed"]["history"], r0["full"]["history"], strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), key


@pytest.mark.slow
def test_resume_needs_the_same_number_of_processes(ranks):
    error = ranks[0]["one_rank_resume"]
    assert error["type"] == "CnnlabError"
    assert "trained by 2 process(es) and must resume with as many" in error["message"] and "got 1" in error["message"]


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_all_ranks_with_the_same_error(ranks):
    r0, r1, _ = ranks
    for r in (r0, r1):
        assert r["nan"]["error"]["type"] == "NonFiniteLoss"
        assert r["nan"]["step"] == 2
    assert "non-finite at step 2 (epoch 1)" in r0["nan"]["error"]["message"]
    assert r0["nan"]["error"]["message"] == r1["nan"]["error"]["message"]


@pytest.mark.slow
def test_setup_errors_reach_every_rank_as_one_line(ranks):
    r0, r1, _ = ranks
    for r in (r0, r1):
        assert r["sync_bn"]["error"]["type"] == "CnnlabError"
        assert "--sync-bn needs CUDA devices" in r["sync_bn"]["error"]["message"]
        # only rank 0 looks at the folder; rank 1 learns its verdict instead of waiting for a name forever
        assert r["refused"]["error"]["type"] == "CnnlabError"
        assert "already holds files" in r["refused"]["error"]["message"]
        assert "\n" not in r["refused"]["error"]["message"]


@pytest.mark.slow
def test_the_report_of_a_torchrun_run_reuses_the_ranks_gathered_test_logits(ranks, data_dir):
    """Rank 0 once scored the whole test set again for report.html, alone (207 s after 22 s of training)."""
    from cnnlab.inference import load_trained

    r0, r1, cwd = ranks
    seen, result = r0["reported"], r0["reported"].get("result")
    assert "error" not in seen and (cwd / "reported" / "report.html").is_file(), seen.get("error")
    assert seen["scored"] == []  # no pass over the test set of its own
    assert r1["reported"]["test_logits"] is None  # rank 1 sent its shard; rank 0 holds the whole split
    assert seen["page"]["n"] == len(seen["test_logits"]) == result["test_samples"] == N_TEST
    assert seen["page"]["accuracy"] == pytest.approx(result["test_acc"], abs=1e-12)
    assert seen["page"]["per_class"] == [result["per_class"][c]["recall"] for c in _small_data(data_dir).classes]
    # The two ranks' shards are put back in the test set's order: the checkpoint's own logits, image by image.
    trained = load_trained(cwd / "reported" / "last.pt", "cpu")
    expected = trained.logits(_small_data(data_dir).test_images)
    torch.testing.assert_close(seen["test_logits"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_no_collective_returns_while_gloo_still_holds_its_tensors(ranks):
    """A gloo worker that lets go of a tensor after the process has begun to exit aborts it (SIGABRT, "terminate
    called without an active exception"): 4 of 66 two-rank torchrun runs here did, after finishing their work."""
    r0, r1, _ = ranks
    zero = {"gather": 0, "sum": 0, "buffers": 0}
    assert r0["released"] == zero and r1["released"] == zero


def test_a_tensor_held_beyond_gloo_costs_one_bounded_wait_and_no_more(monkeypatch):
    """The wait after a gloo collective ends at RELEASE_WAIT_S; after one such ending, later collectives do not
    wait (another torch might keep its works: one bound in all, not one per collective)."""
    import torch.distributed as dist

    import cnnlab.train.distributed as distributed

    sleeps = []
    monkeypatch.setattr(distributed, "RELEASE_WAIT_S", 0.2)
    monkeypatch.setattr(distributed, "_waits_ran_out", False)
    monkeypatch.setattr(distributed.time, "sleep", lambda s: (sleeps.append(s), time.monotonic()))
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        plain, kept = torch.ones(2), []
        distributed.sum_over_ranks(plain)  # gloo lets go of it: no bound reached
        assert not distributed._waits_ran_out and torch.equal(plain, torch.ones(2))
        held = torch.ones(2)
        # A view made during the collective keeps its base: a hold that is not gloo's and does not end.
        distributed._collective(lambda: (dist.all_reduce(held), kept.append(held[:1])), [held])
        assert distributed._waits_ran_out and len(sleeps) > 0
        waited = len(sleeps)
        distributed._collective(lambda: (dist.all_reduce(held), kept.append(held[:1])), [held])
        assert len(sleeps) == waited
    finally:
        dist.destroy_process_group()


def test_helpers_are_identities_in_one_process():
    env = DistEnv()
    assert not env.enabled and env.is_main
    assert reduce_int(7, env, torch.device("cpu")) == 7
    assert broadcast_object({"a": 1}, env) == {"a": 1}


@pytest.mark.slow
def test_torchrun_cli_two_cpu_ranks(tmp_path, data_dir):
    """The real launcher, on loopback only: `python -m torch.distributed.run ... -m cnnlab train`."""
    # --standalone: the launcher's store takes a port the system picks, and keeps it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cnnlab",
           "train", "lenet-relu", "--device", "cpu", "--deterministic", "--epochs", "1", "--limit-train-batches", "3",
           "--limit-val-batches", "2", "--batch-size", "32", "--no-report", "--quiet"]
    env = {**os.environ, "CNNLAB_DATA": str(data_dir), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {DEADLINE_S}s")
    assert proc.returncode == 0, output[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and {p.name for p in runs[0].iterdir()} == RUN_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    result = json.loads((runs[0] / "result.json").read_text())
    assert (result["world_size"], result["global_batch_size"], result["test_samples"]) == (2, 64, 2 * 2 * 32)
    ckpt = torch.load(runs[0] / "last.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["history"][0]["epoch"] == 1


def test_a_time_budget_is_planned_and_ended_by_the_ranks_together(ranks):
    r0, r1, _ = ranks
    a, b = r0["budgeted"], r1["budgeted"]
    assert "error" not in a and "error" not in b, (a, b)
    assert a["step"] == b["step"] == a["budget_steps"] == b["budget_steps"] > 0  # one plan, one last step
    _assert_same_weights(a["weights"], b["weights"])
    result = a["result"]
    assert result["time_budget_s"] == 4.0 and result["steps"] == a["step"]
