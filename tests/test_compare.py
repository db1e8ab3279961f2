"""compare_losses as a user calls it: loss names, tuple data, two tracegraph rows."""

import torch

import pyro
import pyro.distributions as dist

from pyro_lvm.compare import compare_losses
from pyro_lvm.infer import score_function_guide


def model(x, w):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, w), obs=x)


def guide(x, w):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.3)) * x, 0.8))


def test_compare_losses_takes_names_tuple_data_and_repeated_tracegraph_rows():
    x, w = torch.linspace(-2, 2, 8), torch.ones(8)
    rows = compare_losses(model, guide, (x, w), ["elbo", "tracegraph", "iwae"], num_particles=1,
                          num_draws=5, timing_steps=1)
    assert [r["loss"] for r in rows] == ["elbo", "tracegraph", "iwae"]
    # K = 1: all three estimate the ELBO, per point, for the same parameters
    assert abs(rows[0]["bound"] - rows[2]["bound"]) < 4 * (rows[0]["bound_se"] + rows[2]["bound_se"]) + 1e-6
    rows = compare_losses(model, guide, (x, w), {"tg": "tracegraph", "tg-sf": ("tracegraph", score_function_guide(guide))},
                          num_particles=3, num_draws=5, timing_steps=1)  # baselines of other shapes
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["bound"])) for r in rows)
