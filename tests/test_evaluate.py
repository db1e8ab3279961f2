"""evaluate.log_weight_chunks: the weights chunk by chunk, with the guide's draws."""

import pytest
import torch

import pyro
from torch.distributions import Bernoulli, Normal

from pyro_lvm import evaluate
from pyro_lvm.checks import check_values
from pyro_lvm.models import VAE


def _vae_and_data():
    torch.manual_seed(0)
    vae = VAE(x_dim=6, z_dim=2, hidden_dims=(4,)).double()
    x = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    return vae, x


# 3 rows x 6 pixels x 4 particles per pass: row blocks of 3, 3, 2 and particle chunks of
# 4, 4, 1 for K = 9 (a chunk of one particle, where Pyro has no particle plate).
CHUNKING = {"num_samples": 9, "batch_size": 3, "max_elements": 3 * 6 * 4}


def test_chunks_are_the_log_weights_and_each_draw_explains_its_weight():
    vae, x = _vae_and_data()
    pyro.set_rng_seed(2)
    every = evaluate.log_weights(vae.model, vae.guide, x, **CHUNKING)
    pyro.set_rng_seed(2)
    chunks = list(evaluate.log_weight_chunks(vae.model, vae.guide, x, return_sites=("z",), **CHUNKING))
    assert [(c.rows, c.log_w.shape[0]) for c in chunks] == [
        (rows, k) for rows in (slice(0, 3), slice(3, 6), slice(6, 8)) for k in (4, 4, 1)]
    gathered = torch.cat([torch.cat([c.log_w for c in chunks[i:i + 3]]) for i in (0, 3, 6)], 1)
    assert torch.equal(gathered, every)  # the same draws as log_weights
    for rows, log_w, values in chunks:
        z = values["z"]
        assert z.shape == (log_w.shape[0], rows.stop - rows.start, 2)
        loc, scale = vae.encode(x[rows])
        recomputed = (Normal(0.0, 1.0).log_prob(z).sum(-1)
                      + Bernoulli(logits=vae.decoder(z)).log_prob(x[rows]).sum(-1)
                      - Normal(loc, scale).log_prob(z).sum(-1))
        assert torch.allclose(log_w, recomputed, atol=1e-10, rtol=0)  # values[j] is log_w[j]'s


def test_the_loop_body_runs_in_the_callers_state():
    vae, x = _vae_and_data()
    pyro.param("mine", torch.ones(2))
    with pyro.validation_enabled(True):
        for _ in evaluate.log_weight_chunks(vae.model, vae.guide, x, **CHUNKING):
            assert set(pyro.get_param_store().keys()) == {"mine"}  # not the evaluation's store
            assert torch.is_grad_enabled() and check_values()


BAD_INPUT = {
    "return_sites a string": ({"return_sites": "z"}, "return_sites must be a tuple of site names"),
    "return_sites of numbers": ({"return_sites": (0,)}, "return_sites must be a tuple of site names"),
    "num_samples=0": ({"num_samples": 0}, "num_samples must be a positive integer"),
    "max_elements=2.5": ({"max_elements": 2.5}, "max_elements must be a positive integer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_at_the_call(case):
    vae, x = _vae_and_data()
    kwargs, words = BAD_INPUT[case]
    with pyro.validation_enabled(False), pytest.raises(ValueError, match=words):
        evaluate.log_weight_chunks(vae.model, vae.guide, x, **kwargs)  # not iterated


def test_a_site_the_guide_does_not_sample_is_named():
    vae, x = _vae_and_data()
    with pytest.raises(ValueError, match="return_sites names 'x', which is not a sample site of the guide"):
        next(evaluate.log_weight_chunks(vae.model, vae.guide, x, return_sites=("x",)))
