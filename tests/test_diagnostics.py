"""pyro_lvm.diagnostics: PSIS against exact and narrow guides, arviz draws against the exact
posterior, anomaly scores on MNIST, and bad input refused at every door."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro import poutine

from pyro_lvm import diagnostics, evaluate
from pyro_lvm.data import binarize, fixed_binarization
from pyro_lvm.models import VAE, ppca
from pyro_lvm.train import fit

from helpers import assert_refused, digits, fitted_ppca, imperfect_guide


def test_encode_equals_the_guide_parameters():
    vae = VAE(z_dim=5, hidden_dims=(16,))
    x = torch.rand(7, 784).round()
    loc, scale = vae.encode(x)
    site = poutine.trace(vae.guide).get_trace(x).nodes["z"]["fn"].base_dist
    assert loc.shape == scale.shape == (7, 5)
    assert torch.equal(loc, site.loc) and torch.equal(scale, site.scale)
    model = fitted_ppca(digits()[:300], 3)
    guide = ppca.exact_posterior_guide(model)
    loc, scale = guide.encode(digits()[:4])
    exact_loc, cov = model.posterior(digits()[:4])
    assert torch.allclose(loc, exact_loc) and torch.allclose(scale, cov.diagonal().sqrt().expand(4, 3))


def test_psis_with_exact_posterior_is_perfect_and_with_a_narrow_guide_fails():
    x = digits()[:40]
    model = fitted_ppca(digits()[:500], 3)
    exact = diagnostics.psis_diagnostic(model.model, ppca.exact_posterior_guide(model).guide, x, 500)
    assert exact.khat.shape == exact.ess.shape == (40,)
    assert torch.all(exact.khat < 0.5)
    assert torch.allclose(exact.ess, torch.full((40,), 500.0, dtype=exact.ess.dtype))  # constant weights
    assert exact.share_above == 0.0
    narrow = diagnostics.psis_diagnostic(model.model, imperfect_guide(model, x, shift=0.0, widen=0.3).guide, x, 500)
    assert narrow.share_above > 0.8  # q far narrower than p(z|x): heavy-tailed weights
    assert narrow.ess.median() < 100


def test_psis_rejects_too_few_samples():
    with pytest.raises(ValueError, match="K >= 2"):
        diagnostics.psis_from_log_weights(torch.zeros(1, 5))


def test_to_inference_data_holds_guide_draws_matching_the_exact_posterior():
    x = digits()[:3]
    model = fitted_ppca(digits()[:500], 2)
    idata = diagnostics.to_inference_data(model.model, ppca.exact_posterior_guide(model).guide, x,
                                          num_samples=4000)
    z = torch.as_tensor(idata.posterior["z"].values)  # (chain, draw, N, q)
    assert z.shape == (1, 4000, 3, 2)
    loc, cov = model.posterior(x)
    # Means of 4000 exact draws: within 4 standard errors sd/sqrt(4000).
    se = cov.diagonal().sqrt() / 4000**0.5
    assert torch.all((z[0].mean(0) - loc).abs() < 4 * se)
    with pytest.raises(ValueError, match="not sample sites"):
        diagnostics.to_inference_data(model.model, ppca.exact_posterior_guide(model).guide, x,
                                      sites=("w",), num_samples=10)


def test_anomaly_scores_rank_random_images_below_real_digits(mnist_train, mnist_test):
    torch.manual_seed(0)
    vae = VAE(z_dim=8, hidden_dims=(64,))
    fit(vae.model, vae.guide, mnist_train[0][:3000], num_epochs=3, batch_size=100, lr=3e-3,
        transform=binarize, progress=False)
    real = fixed_binarization(mnist_test[0][:300])
    noise = torch.bernoulli(real.mean(1, keepdim=True).expand(-1, 784), generator=torch.Generator().manual_seed(0))
    real_scores = diagnostics.anomaly_scores(vae.model, vae.guide, real, 20)
    noise_scores = diagnostics.anomaly_scores(vae.model, vae.guide, noise, 20)
    assert real_scores.shape == noise_scores.shape == (300,)
    # Every random image is less probable (higher -log p) than the median real digit, and on
    # average by far.
    assert noise_scores.min() > real_scores.median()
    assert noise_scores.mean() > real_scores.mean() + 50


# --- PSIS on exact weights (moved from tests/test_reliability_state.py) -------------------

def test_psis_of_an_exact_posterior_guide_is_good_when_log_p_is_in_the_hundreds():
    # Before: float32 rounding of log w ~ -100 exceeded the absolute 1e-6 tolerance: k-hat = inf.
    torch.manual_seed(0)
    d, q = 64, 5
    W, mean = torch.randn(d, q), torch.randn(d)
    model = ppca.PPCA(d, q, W=W, mean=mean, noise_scale=0.3)
    x = torch.randn(50, q) @ W.T + mean + 0.8 * torch.randn(50, d)  # |log p(x)| ~ 100
    log_w = evaluate.log_weights(model.model, ppca.exact_posterior_guide(model).guide, x, num_samples=200)
    assert log_w.dtype == torch.float32 and log_w.abs().min() > 50
    result = diagnostics.psis_from_log_weights(log_w)
    assert (result.khat < 0.5).all() and result.share_above == 0.0
    assert torch.equal(result.ess, torch.full((50,), 200.0))


def test_psis_still_fits_a_tail_when_the_weights_vary():
    torch.manual_seed(0)
    log_w = -100.0 + 0.5 * torch.randn(400, 20)  # spread ~3 nats: far above rounding
    result = diagnostics.psis_from_log_weights(log_w)
    assert torch.isfinite(result.khat).all() and (result.ess < 400).all()
    log_w[0, 0] = -torch.inf  # one zero weight among constant ones: not a perfect proposal
    log_w[1:, 0] = -100.0
    assert diagnostics.psis_from_log_weights(log_w).khat[0] > -torch.inf


# --- degenerate weights: a point the guide cannot reach ---------------------------------

def unit_interval_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Uniform(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def far_guide(x):
    """q(z_n) = N(0.5, 0.1) inside the model's support (0, 1), except for point 0: N(5, 0.1),
    every draw of which has prior density 0 (10 standard deviations away from 1)."""
    loc = torch.where(torch.arange(len(x)) == 0, 5.0, 0.5)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, 0.1))


def test_psis_of_a_point_whose_weights_are_all_zero_names_it_and_the_cause():
    # Before: arviz gave khat = inf and NaN smoothed weights for it, returned without a word.
    x = torch.linspace(0.1, 0.9, 5)
    with pyro.validation_enabled(False):  # Pyro's own check would refuse z outside (0, 1) first
        log_w = evaluate.log_weights(unit_interval_model, far_guide, x, num_samples=50)
        assert torch.isinf(log_w[:, 0]).all() and torch.isfinite(log_w[:, 1:]).all()
        with pytest.raises(ValueError, match=r"data point\(s\) \[0\] \(1 of 5\) are all zero.*"
                                             "the guide puts no mass where the model has any"):
            diagnostics.psis_diagnostic(unit_interval_model, far_guide, x, num_samples=50)
    many = torch.zeros(10, 30)
    many[:, ::2] = -math.inf  # 15 points: the message lists ten and the count
    with pytest.raises(ValueError, match=r"\[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, '...'\] \(15 of 30\)"):
        diagnostics.psis_from_log_weights(many)


# --- bad input at every door --------------------------------------------------------------

def small_vae():
    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


def binary(n=8, d=6):
    return torch.bernoulli(torch.full((n, d), 0.5), generator=torch.Generator().manual_seed(0))


def on_vae(name, x=..., **kwargs):
    vae = small_vae()
    return getattr(diagnostics, name)(vae.model, vae.guide, binary() if x is ... else x, **kwargs)


def psis(log_w):
    return diagnostics.psis_from_log_weights(log_w)


def nan_at(x, at=(1, 2)):
    x = x.clone()
    x[at] = float("nan")
    return x


BAD_DATA = {
    "list of rows": ([[0.0] * 6] * 8, "x must be a tensor .* got a list"),
    "0-dim": (torch.tensor(1.0), "x must have a leading data dimension"),
    "empty": (torch.zeros(0, 6), "x must have at least 1 rows"),
    "NaN": (nan_at(binary()), "x contains NaN"),
    "int": (binary().long(), "x .*floating"),
    "width 5": (binary(8, 5), r"x must have shape \(B, 6\)"),
    "grey levels 0-3 for a Bernoulli": (binary() * 3, r"x must lie in \[0.0, 1.0\]"),
    "None": (None, "x must be a tensor .* got NoneType"),
}
BAD_COUNTS = {"0": 0, "-1": -1, "2.5": 2.5, "True": True, "'3'": "3", "None": None}
ALL_ZERO = torch.zeros(5, 3)
ALL_ZERO[:, 1] = -math.inf

CASES = {
    # moved from tests/test_errors.py
    "psis_diagnostic num_samples=2.5": (lambda: on_vae("psis_diagnostic", num_samples=2.5),
                                        "num_samples"),
    "anomaly_scores num_samples=1.5": (lambda: on_vae("anomaly_scores", num_samples=1.5),
                                       "num_samples"),
    "psis_from_log_weights NaN": (lambda: psis(torch.tensor([[0.0, float("nan")], [1.0, 2.0]])),
                                  "log_w"),
    "to_inference_data num_samples=0": (lambda: on_vae("to_inference_data", num_samples=0),
                                        "num_samples"),
    # psis_from_log_weights
    "psis list": (lambda: psis([[0.0, 1.0], [1.0, 2.0]]), "log_w must be a torch.Tensor, got list"),
    "psis None": (lambda: psis(None), "log_w must be a torch.Tensor, got NoneType"),
    "psis 1-dim": (lambda: psis(torch.zeros(5)), r"log_w must have 2 dimensions, got shape \(5,\)"),
    "psis 0-dim": (lambda: psis(torch.tensor(0.0)), "log_w must have 2 dimensions"),
    "psis 3-dim": (lambda: psis(torch.zeros(5, 3, 2)), "log_w must have 2 dimensions"),
    "psis K=1": (lambda: psis(torch.zeros(1, 5)), r"\(K >= 2, N\)"),
    "psis empty": (lambda: psis(torch.zeros(5, 0)), "log_w is empty"),
    "psis +inf": (lambda: psis(torch.tensor([[0.0, math.inf], [1.0, 2.0]])), r"log_w .*\+inf"),
    "psis int": (lambda: psis(torch.zeros(5, 3, dtype=torch.long)), "log_w must be a floating"),
    "psis all weights of a point zero": (lambda: psis(ALL_ZERO),
                                         r"point\(s\) \[1\] .* guide puts no mass"),
    # to_inference_data's sites
    "sites a string": (lambda: on_vae("to_inference_data", sites="z", num_samples=3),
                       "sites must be a non-empty list or tuple of site names, got 'z'"),
    "sites empty": (lambda: on_vae("to_inference_data", sites=[], num_samples=3), "sites"),
    "sites [1]": (lambda: on_vae("to_inference_data", sites=[1], num_samples=3), "sites"),
    "sites None": (lambda: on_vae("to_inference_data", sites=None, num_samples=3), "sites"),
}
for _name in ("psis_diagnostic", "anomaly_scores", "to_inference_data"):
    for _what, (_x, _words) in BAD_DATA.items():
        CASES[f"{_name} x={_what}"] = (lambda n=_name, x=_x: on_vae(n, x, num_samples=3), _words)
    for _what, _value in BAD_COUNTS.items():
        CASES[f"{_name} num_samples={_what}"] = (
            lambda n=_name, v=_value: on_vae(n, num_samples=v), "num_samples must be")
    CASES[f"{_name} model not callable"] = (
        lambda n=_name: getattr(diagnostics, n)(3, small_vae().guide, binary(), num_samples=3),
        "model must be callable, got int")
CASES["psis_diagnostic num_samples=1"] = (lambda: on_vae("psis_diagnostic", num_samples=1),
                                          "num_samples must be an integer >= 2, got 1")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*CASES[case])
