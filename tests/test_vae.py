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


def test_an_activation_that_is_not_a_module_class_is_refused_at_construction():
    # A factory would build the layers but could not be named in a saved model file.
    with pytest.raises(ValueError, match="activation must be an nn.Module class"):
        VAE(z_dim=2, hidden_dims=(8,), activation=lambda: torch.nn.ReLU())


def _small():
    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


NAN6 = torch.full((3, 6), 0.5)
NAN6[1, 2] = float("nan")

#: One bad argument per case, the words its ValueError must contain (argument and cause).
BAD_INPUTS = {
    # construction
    "x_dim=0": (lambda: VAE(x_dim=0), "x_dim must be a positive integer, got 0"),
    "x_dim=-1": (lambda: VAE(x_dim=-1), "x_dim must be a positive integer, got -1"),
    "x_dim=2.5": (lambda: VAE(x_dim=2.5), "x_dim must be a positive integer, got 2.5"),
    "x_dim=True": (lambda: VAE(x_dim=True), "x_dim must be a positive integer, got True"),
    "z_dim=2.5": (lambda: VAE(z_dim=2.5), "z_dim"),
    "z_dim=0": (lambda: VAE(z_dim=0), "z_dim must be a positive integer, got 0"),
    "hidden_dims=400": (lambda: VAE(hidden_dims=400),
                        r"hidden_dims must be a sequence \(tuple or list\) of positive integers, got 400"),
    "hidden_dims='400'": (lambda: VAE(hidden_dims="400"), "hidden_dims must be a sequence"),
    "hidden_dims=(2.5,)": (lambda: VAE(hidden_dims=(2.5,)), "hidden_dims"),
    "hidden_dims=(8, 0)": (lambda: VAE(hidden_dims=(8, 0)),
                           r"hidden_dims\[1\] must be a positive integer, got 0"),
    "hidden_dims=(True,)": (lambda: VAE(hidden_dims=(True,)),
                            r"hidden_dims\[0\] must be a positive integer, got True"),
    "likelihood='poisson'": (lambda: VAE(likelihood="poisson"),
                             r"likelihood must be one of \('bernoulli', 'normal'\), got 'poisson'"),
    "likelihood=None": (lambda: VAE(likelihood=None), "likelihood must be one of"),
    "activation instance": (lambda: VAE(activation=torch.nn.Tanh()),
                            "activation must be an nn.Module class .*got Tanh()"),
    "activation function": (lambda: VAE(activation=torch.tanh), "activation must be an nn.Module class"),
    "activation not a module": (lambda: VAE(activation=int), "activation must be an nn.Module class"),
    "name=''": (lambda: VAE(name=""), "name must be a non-empty string"),
    "name=3": (lambda: VAE(name=3), "name must be a non-empty string"),
    # data: shapes and dtypes in every body, values at the public doors
    "model x list": (lambda: _small().model([[0.0] * 6]), r"x must have shape \(B, 6\), got list"),
    "guide x 0-dim": (lambda: _small().guide(torch.tensor(0.5)), r"x must have shape \(B, 6\), got shape \(\)"),
    "guide x empty": (lambda: _small().guide(torch.zeros(0, 6)), "x must have at least 1 rows"),
    "guide x int": (lambda: _small().guide(torch.ones(3, 6, dtype=torch.long)),
                    "x must be a floating tensor of dtype torch.float32"),
    "guide x float64": (lambda: _small().guide(torch.ones(3, 6, dtype=torch.float64)),
                        r"x must be dtype torch.float32, got dtype torch.float64; convert it"),
    "guide x 3-dim": (lambda: _small().guide(torch.ones(2, 3, 6)), r"x must have shape \(B, 6\)"),
    "reconstruct NaN": (lambda: _small().reconstruct(NAN6), "x contains NaN"),
    "reconstruct 1.5": (lambda: _small().reconstruct(torch.full((2, 6), 1.5)),
                        r"x must lie in \[0.0, 1.0\]"),
    "sample n=0": (lambda: _small().sample(0), "n must be a positive integer, got 0"),
    "sample n=2.5": (lambda: _small().sample(2.5), "n must be a positive integer, got 2.5"),
    "sample n=True": (lambda: _small().sample(True), "n must be a positive integer, got True"),
    "sample generator='seed'": (lambda: _small().sample(2, generator="seed"),
                                "generator must be a torch.Generator or None, got str"),
    "model num_data=inf": (lambda: _small().model(torch.ones(2, 6), num_data=float("inf")),
                           "num_data must be a positive integer, got inf"),
    "guide num_data='10'": (lambda: _small().guide(torch.ones(2, 6), num_data="10"),
                            "num_data must be a positive integer, got '10'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_get_a_value_error_naming_argument_and_cause(case):
    call, words = BAD_INPUTS[case]
    with pyro.validation_enabled(False):  # the doors' checks do not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()
