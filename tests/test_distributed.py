"""fit under ``torchrun --nproc_per_node=2`` (gloo, CPU) on 2,000 MNIST digits; the worker
script is tests/ddp_worker.py.  Two launches (~10 s of CPU each): a 3-epoch run whose rank 1 is
killed at step 10 of epoch 3, then its resume from the epoch-2 checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.data import binarize
from pyro_lvm.distributed import Context, init
from pyro_lvm.models import VAE
from pyro_lvm.train import fit

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parents[1]


def torchrun(data, out, epochs, resume, kill=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(data), str(out), str(epochs), str(int(resume)), *map(str, kill)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(mnist_train, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data, out = tmp / "x.pt", tmp / "run"
    torch.save(mnist_train[0][:2000].clone(), data)
    # 20 steps per epoch: rank 1 dies as it draws its 50th batch (epoch 3, step 10).
    killed = torchrun(data, out, 3, False, kill=(1, 50))
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    resumed = torchrun(data, out, 3, True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    grads = {name: [(out / name / f"grads{r}.txt").read_text().split() for r in (0, 1)]
             for name in ("ranks-0", "ranks-1")}
    return dict(out=out, data=data, killed=killed, resumed=resumed, checkpoint=checkpoint,
                killed_grads=grads["ranks-0"], resumed_grads=grads["ranks-1"],
                ranks=[torch.load(out / "ranks-1" / f"rank{r}.pt") for r in (0, 1)])


@pytest.mark.slow
def test_only_rank_0_writes_and_shows_progress(runs):
    rank0, rank1 = runs["ranks"]
    assert rank0["writes"] == [0] and rank1["writes"] == []  # the resumed run's epoch 3
    assert sorted(p.name for p in runs["out"].iterdir()) == ["checkpoint.pt", "ranks-0", "ranks-1"]
    # The per-epoch line is printed once, by rank 0.
    assert [runs["killed"].stdout.count(f"epoch {e}: loss") for e in (1, 2, 3)] == [1, 1, 0]
    assert runs["resumed"].stdout.count("epoch 3: loss") == 1


@pytest.mark.slow
def test_gradients_and_parameters_are_identical_across_ranks(runs):
    # Each rank sees other rows; only DDP's all-reduce can make the optimizer's gradients
    # bitwise equal (SHA-256 of the flattened gradients) at every step: 49 steps before the
    # kill, the resumed 20 after it.
    assert len(runs["killed_grads"][0]) == 49 and runs["killed_grads"][0] == runs["killed_grads"][1]
    assert len(runs["resumed_grads"][0]) == 20 and runs["resumed_grads"][0] == runs["resumed_grads"][1]
    assert len(set(runs["resumed_grads"][0])) == 20  # the digests do change from step to step
    rank0, rank1 = runs["ranks"]
    assert torch.equal(rank0["params"], rank1["params"])
    assert rank0["loss"] == rank1["loss"]  # the epoch loss is averaged over ranks


@pytest.mark.slow
def test_loss_within_noise_of_one_process(runs):
    """Same global batch (100), seed, initialisation and learning rate in one process.  The
    noise scale is the Monte Carlo spread of the epoch loss itself: its standard deviation over
    five one-process runs with seeds 1..5 (binarization, z draws and permutation all vary).  The
    two-process run must lie within 4 such standard deviations (times sqrt(1 + 1/5) for the
    reference mean's own error) of the reference mean, epoch by epoch."""
    x = torch.load(runs["data"])
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker; two threads crawl on a busy machine
    try:
        for seed in range(1, 6):
            torch.manual_seed(0)
            vae = VAE(z_dim=8, hidden_dims=(64,))
            losses.append(fit(vae.model, vae.guide, x, num_epochs=3, batch_size=100, seed=seed,
                              lr=3e-3, transform=binarize, progress=False).loss)
    finally:
        torch.set_num_threads(threads)
    ref = torch.tensor(losses, dtype=torch.float64)
    two = torch.tensor(runs["ranks"][0]["loss"], dtype=torch.float64)  # epochs 1-2 before the kill
    tolerance = 4 * ref.std(0) * (1 + 1 / 5) ** 0.5
    assert ((two - ref.mean(0)).abs() < tolerance).all(), (two, ref.mean(0), tolerance)
    assert (ref[:, 0] - ref[:, 2] > 100).all()  # the runs do learn: the test is not vacuous


@pytest.mark.slow
def test_killed_rank_stops_the_job_and_resume_continues_it_exactly(runs):
    killed = runs["killed"]
    assert killed.returncode != 0
    # torchrun names the process that died and how.
    assert "rank      : 1" in killed.stderr and "Signal 9 (SIGKILL)" in killed.stderr
    assert runs["checkpoint"]["epoch"] == 2  # the last complete epoch, intact
    assert len(runs["checkpoint"]["rng_per_rank"]) == 2
    assert runs["ranks"][0]["epoch"] == [1, 2, 3]
    assert runs["ranks"][0]["loss"][:2] == runs["checkpoint"]["history"]["loss"]
    # Epoch 3's first 9 steps ran before the kill and again after the resume: with every
    # rank's RNG stream, the parameters and Adam's state restored they are bitwise the same.
    assert runs["resumed_grads"][0][:9] == runs["killed_grads"][0][40:49]


@pytest.mark.slow
def test_local_parameter_guide_is_a_clear_error_under_ddp(runs):
    message = (runs["out"] / "ranks-1" / "local_error.txt").read_text()
    assert "local parameters" in message and "under DDP" in message


def test_shards_of_a_global_batch_cover_it_once_in_order():
    idx = torch.randperm(103)
    for world in (1, 2, 3, 8):
        shards = [Context(rank=r, world_size=world, backend="gloo").shard(idx) for r in range(world)]
        assert torch.equal(torch.cat(shards), idx)  # every row once, none twice
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # as even as can be


def test_one_process_context_changes_nothing(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    ctx = init("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    perm = torch.randperm(10)
    assert ctx.same_on_all(perm) is perm and ctx.shard(perm) is perm and ctx.mean(2.5, "cpu") == 2.5


def test_a_split_fit_refuses_local_parameter_guides_and_batches_smaller_than_the_world():
    from pyro_lvm.models import gmm, pixel_guides, ppca

    two = Context(rank=1, world_size=2, backend="gloo")
    vae = VAE(z_dim=2, hidden_dims=(4,))
    local = [gmm.MeanFieldGuide(10, 3), ppca.MeanFieldGuide(10, 2), pixel_guides.MeanFieldPixelGuide(vae, 10)]
    for guide in local:
        with pytest.raises(ValueError, match="holds local parameters for 10 rows, but under DDP"):
            two.check_split(guide.guide, batch_size=10)
        Context().check_split(guide.guide, batch_size=10)  # one process: the rows are all there
    two.check_split(vae.guide, batch_size=2)  # an amortised guide splits
    with pytest.raises(ValueError, match=r"batch_size \(1\) is the global batch"):
        two.check_split(vae.guide, batch_size=1)
