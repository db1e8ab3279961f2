import pytest
import torch

import pyro
from pyro import poutine

from pyro_lvm import evaluate
from pyro_lvm.models import VAE


def _traces(vae, x, **kwargs):
    guide_trace = poutine.trace(vae.guide).get_trace(x, **kwargs)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, **kwargs)
    return model_trace, guide_trace


def test_model_and_guide_trace_shapes():
    vae = VAE(x_dim=784, z_dim=7, hidden_dims=(32,))
    x = torch.rand(5, 784).round()
    model_trace, guide_trace = _traces(vae, x)
    assert guide_trace.nodes["z"]["value"].shape == (5, 7)
    assert model_trace.nodes["z"]["fn"].batch_shape == (5,)
    assert model_trace.nodes["z"]["fn"].event_shape == (7,)
    assert model_trace.nodes["x"]["fn"].batch_shape == (5,)
    assert model_trace.nodes["x"]["fn"].event_shape == (784,)
    # Vectorised particles: one encoder pass, K samples broadcast in front.
    with pyro.plate("particles", 3, dim=-2):
        model_trace, guide_trace = _traces(vae, x)
    assert guide_trace.nodes["z"]["value"].shape == (3, 5, 7)
    model_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (3, 5)


def test_subsampled_plate_scales_to_the_full_data_set():
    vae = VAE(x_dim=10, z_dim=2, hidden_dims=(8,))
    x = torch.rand(4, 10).round()
    model_trace, _ = _traces(vae, x, num_data=100)
    assert model_trace.nodes["x"]["scale"] == pytest.approx(25.0)
    model_trace.compute_log_prob()
    site = model_trace.nodes["x"]
    assert torch.allclose(site["log_prob"], 25.0 * site["unscaled_log_prob"])
    with pytest.raises(ValueError, match="num_data"):
        vae.model(x, num_data=3)


def test_elbo_finite_and_importance_sampling_above_it():
    torch.manual_seed(0)
    vae = VAE(x_dim=784, z_dim=4, hidden_dims=(16,))
    x = torch.rand(200, 784).round()
    elbo = evaluate.elbo(vae.model, vae.guide, x, num_particles=10)
    log_px = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=100)
    assert elbo.shape == log_px.shape == (200,)
    assert torch.isfinite(elbo).all() and torch.isfinite(log_px).all()
    # Per point, IWAE_100 - ELBO is the positive Jensen gap plus Monte Carlo noise; on average it
    # must exceed zero by many standard errors.
    gap = log_px - elbo
    assert gap.mean() > 5 * gap.std() / 200**0.5


def test_gaussian_decoder_takes_real_valued_data():
    vae = VAE(x_dim=6, z_dim=2, hidden_dims=(8,), likelihood="normal")
    x = torch.randn(30, 6) * 5
    assert torch.isfinite(evaluate.elbo(vae.model, vae.guide, x)).all()
    with pytest.raises(ValueError, match="in \\[0.0, 1.0\\]"):
        VAE(x_dim=6, z_dim=2, hidden_dims=(8,)).model(x)


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.rand(4, 783), "shape \\(B, 784\\)"),
        (torch.rand(784), "shape \\(B, 784\\)"),
        (torch.full((2, 784), float("nan")), "NaN"),
        (torch.full((2, 784), 1.5), "must lie in \\[0.0, 1.0\\]"),
        (torch.full((2, 784), -0.1), "must lie in \\[0.0, 1.0\\]"),
    ],
)
def test_bad_input_is_rejected(x, words):
    vae = VAE(hidden_dims=(8,), z_dim=2)
    with pytest.raises(ValueError, match=words):
        vae.model(x)


def test_bad_construction_is_rejected():
    with pytest.raises(ValueError, match="likelihood"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="positive"):
        VAE(z_dim=0)
