"""imputation: inpaint, log p(x_obs), imputation and conditional log-likelihoods against
enumeration and quadrature on a tiny joint, and pixel scores against scikit-learn."""

import math

import numpy as np
import pytest
import torch

import pyro

from pyro_lvm import evaluate
from pyro_lvm.data import binarize
from pyro_lvm.imputation import (conditional_log_likelihood, estimate_log_marginal, impute, inpaint,
                                 pixel_log_prob, pixel_scores)
from pyro_lvm.models import VAE
from pyro_lvm.models.masks import make_mask, top_half_mask
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import ConditionalPixelGuide, MeanFieldPixelGuide

from missing_helpers import (HIDDEN, exact_elbo, exact_log_marginal, exact_posterior_mean, observed_guide,
                             quadrature, tiny)
from helpers import assert_refused


def test_estimates_of_log_p_observed_converge_to_the_enumerated_value():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    # The sum over completions equals the integral of the observed pixels alone.
    e, w = quadrature()
    observed_only = torch.distributions.Bernoulli(logits=vae.decoder(e[:, None])).log_prob(x[:, None]) * ~mask[:, None]
    assert torch.allclose(exact, torch.logsumexp(observed_only.sum(-1) + w.log(), -1), atol=1e-9)
    _, _, guide = inpaint(model, x, mask, "meanfield", steps=200, lr=0.1)
    proposals = {"guide": guide, "prior": None, "uniform": None,
                 "z-conditional": ConditionalPixelGuide(observed_guide(vae))}
    for proposal, proposal_guide in proposals.items():
        pyro.set_rng_seed(0)
        runs = torch.stack([estimate_log_marginal(model, x, mask, "guide" if proposal_guide else proposal,
                                                  guide=proposal_guide, num_samples=4000)
                            for _ in range(6)])
        se = runs.std(0) / math.sqrt(6)
        # Monte Carlo error (4 standard errors of 6 repeats) plus the O(1/K) bias of log-mean-exp.
        assert torch.all((runs.mean(0) - exact).abs() < 4 * se + 0.02), (proposal, runs.mean(0), exact)


def test_fitted_phi_beats_one_half_and_the_best_mean_field_elbo_stays_below_log_p():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    half = MeanFieldPixelGuide(vae, 3).double()
    elbo_half = exact_elbo(vae, half, x, mask).detach()
    _, _, fitted = inpaint(model, x, mask, "meanfield", steps=300, lr=0.1)
    fitted.double()
    elbo_fitted = exact_elbo(vae, fitted, x, mask).detach()
    assert torch.all(elbo_fitted > elbo_half + 0.1), (elbo_fitted, elbo_half)
    best = MeanFieldPixelGuide(vae, 3).double()  # the optimal member, by L-BFGS on the exact ELBO
    optimizer = torch.optim.LBFGS(best.pixels.parameters(), max_iter=60, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -exact_elbo(vae, best, x, mask).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    elbo_best = exact_elbo(vae, best, x, mask).detach()
    assert torch.all(elbo_best < exact - 1e-3), (elbo_best, exact)
    assert torch.all(elbo_best >= elbo_fitted - 1e-6)
    assert torch.all(elbo_fitted > elbo_best - 0.5)  # SVI with score-function gradients gets close


def test_inpaint_passes_observed_pixels_through_and_samples_hidden_ones_from_phi():
    vae, x, mask = tiny()
    phi, samples, guide = inpaint(MissingPixelModel(vae), x, mask, "amortised", steps=2, num_samples=3)
    assert torch.equal(phi, guide.probs(x, mask)) and torch.equal(phi[~mask], x[~mask])
    assert samples.shape == (3, 3, 16) and torch.equal(samples[:, ~mask], x[~mask].expand(3, -1))
    assert set(samples[:, mask].unique().tolist()) <= {0.0, 1.0}
    again, _, same = inpaint(MissingPixelModel(vae), x, mask, guide, steps=1)  # applied as it is
    assert same is guide and torch.equal(again, phi)


def test_a_fresh_pixel_guide_after_inpaint_keeps_its_own_probabilities():
    # Before: inpaint's guide stayed in the store as "pixels_meanfield", and a new mean-field
    # guide evaluated afterwards took its fitted phi instead of its own 0.5.
    torch.manual_seed(0)
    vae = VAE(x_dim=784, z_dim=2, hidden_dims=(8,), name="joint")
    model = MissingPixelModel(vae)
    x = binarize(torch.rand(4, 784, generator=torch.Generator().manual_seed(1)))
    mask = torch.zeros(4, 784, dtype=torch.bool)
    mask[:, :392] = True
    pyro.get_param_store().clear()
    phi, _, fitted = inpaint(model, x, mask, steps=3, lr=0.5)
    assert set(pyro.get_param_store().keys()) == set()  # inpaint trains on a store of its own
    assert not torch.allclose(fitted.pixels.logits, torch.zeros(()))
    fresh = MeanFieldPixelGuide(vae, 4)
    estimate_log_marginal(model, x, mask, proposal="guide", guide=fresh, num_samples=2)
    assert torch.equal(fresh.pixels.logits, torch.zeros(4, 784))
    assert fresh.name != fitted.name


@pytest.mark.parametrize(
    "x, mask, words",
    [
        (torch.ones(2, 784), torch.ones(2, 784), "boolean"),
        (torch.ones(2, 784), torch.zeros(2, 783, dtype=torch.bool), "shape of x"),
        (torch.ones(2, 784), torch.ones(2, 784, dtype=torch.bool), "every pixel"),
        (torch.full((2, 784), 0.5), torch.zeros(2, 784, dtype=torch.bool), "binary"),
        (torch.full((2, 784), float("nan")), torch.zeros(2, 784, dtype=torch.bool), "NaN"),
    ],
)
def test_bad_images_or_masks_are_rejected_by_estimate_log_marginal(x, mask, words):
    vae = VAE(z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=words):
        estimate_log_marginal(MissingPixelModel(vae), x, mask, "uniform", num_samples=2)


def test_self_normalised_imputation_converges_to_the_exact_conditional_mean():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    exact = exact_posterior_mean(vae, x, mask).detach()
    errors = {}
    for k in (10, 20000):
        pyro.set_rng_seed(0)
        runs = torch.stack([impute(model, guide, x, mask, num_samples=k) for _ in range(8)])
        errors[k] = (runs.mean(0) - exact)[mask].abs().max()
        if k == 20000:
            se = runs.std(0) / math.sqrt(8)
            # 4 standard errors of 8 repeats, plus the O(1/K) self-normalisation bias.
            assert torch.all((runs.mean(0) - exact)[mask].abs() < 4 * se[mask] + 2e-3)
        assert torch.equal(runs[0][~mask], x[~mask])  # observed pixels passed through
    assert errors[20000] < errors[10] / 3, errors
    # Multiple imputation by resampling: each hidden pixel is 1 with the conditional mean's
    # probability (4 binomial standard errors of 4000 draws).
    pyro.set_rng_seed(0)
    draws = impute(model, guide, x, mask, num_samples=20000, method="sample", num_imputations=4000)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    freq, sd = draws.mean(0), (exact * (1 - exact) / 4000).sqrt()
    assert torch.all((freq - exact)[mask].abs() < 4 * sd[mask] + 3e-3)


def test_imputation_over_many_particle_chunks_is_one_self_normalised_estimate():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    small = 3 * 16 * 25  # 3 images x 16 pixels x 25 particles per pass: K = 2000 in 80 chunks
    pyro.set_rng_seed(0)
    chunked = impute(model, guide, x, mask, num_samples=2000, max_elements=small)
    pyro.set_rng_seed(0)  # the same particles, gathered: one softmax over all 2000
    chunks = list(evaluate.log_weight_chunks(model.observed_model, guide.guide, x, mask,
                                             num_samples=2000, max_elements=small, return_sites=("z",)))
    assert len(chunks) == 80
    log_w = torch.cat([c.log_w for c in chunks])
    probs = torch.sigmoid(vae.decoder(torch.cat([c.values["z"] for c in chunks]).squeeze(-2)))
    one_pass = torch.einsum("kb,kbd->bd", torch.softmax(log_w, 0), probs)
    assert torch.allclose(chunked[mask], one_pass[mask], atol=1e-12, rtol=0)
    assert torch.equal(chunked[~mask], x[~mask])


def test_resampling_over_many_particle_chunks_draws_from_all_of_them():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    with torch.no_grad():  # a wide proposal, q(z | x_obs) = N(0, 3^2): few particles count
        guide.encoder[-1].weight.zero_()
        guide.encoder[-1].bias.copy_(torch.tensor([0.0, 2.95]))
    exact = exact_posterior_mean(vae, x, mask).detach()
    pyro.set_rng_seed(0)
    draws = impute(model, guide, x, mask, num_samples=2000, method="sample", num_imputations=4000,
                   max_elements=3 * 16 * 25)  # 80 chunks of 25 particles
    freq, sd = draws.mean(0), (exact * (1 - exact) / 4000).sqrt()
    # 4 binomial standard errors of 4000 draws, plus 1e-2 for the error of one set of K = 2000
    # particles (measured: 0.002 sd across sets, 0.001 bias); the last chunk's 25 particles
    # alone miss by 0.057 here.
    assert torch.all((freq - exact)[mask].abs() < 4 * sd[mask] + 1e-2)
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and torch.equal(draws[:, ~mask], x[~mask].expand(4000, -1))


def test_conditional_log_likelihood_matches_quadrature_within_its_standard_error():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    e, w = quadrature()
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(e[:, None])).log_prob(x[:, None]).sum(-1)
    log_px = torch.logsumexp(log_lik + w.log(), -1)  # log p(x) of the complete images
    exact = (log_px - exact_log_marginal(vae, x, mask)).detach()
    pyro.set_rng_seed(0)
    estimate, se = conditional_log_likelihood(model, guide, x, mask, num_samples=5000)
    assert torch.all(se > 0) and torch.all(se < 0.1), se
    # 4 delta-method standard errors plus the O(1/K) bias of the two log-mean-exps.
    assert torch.all((estimate - exact).abs() < 4 * se + 0.01), (estimate, exact, se)


def test_bad_input_to_imputation_is_rejected():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    with pytest.raises(ValueError, match="another VAE"):
        impute(model, observed_guide(tiny()[0]), x, mask)
    with pytest.raises(ValueError, match="ObservedGuide"):
        impute(model, MeanFieldPixelGuide(vae, 3), x, mask)
    with pytest.raises(ValueError, match="method"):
        impute(model, guide, x, mask, method="median")
    with pytest.raises(ValueError, match="shape of x"):
        impute(model, guide, x, mask[:, :8])
    with pytest.raises(ValueError, match="binary"):
        conditional_log_likelihood(model, guide, torch.where(mask, 0.5, x), mask)
    # a mean-field phi fitted for one mask, asked about another
    _, _, fitted = inpaint(model, x, mask, "meanfield", steps=2)
    with pytest.raises(ValueError, match="another mask"):
        estimate_log_marginal(model, x, mask.roll(1, -1), "guide", guide=fitted, num_samples=2)


def test_pixel_scores_agree_with_scikit_learn():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import accuracy_score, brier_score_loss

    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 784, generator=g)
    x = torch.bernoulli(probs ** 1.5, generator=g)  # miscalibrated on purpose
    mask = make_mask("mcar50", 50, g)
    scores = pixel_scores(probs, x, mask)
    truth, p = x[mask].numpy(), probs[mask].numpy()
    observed, predicted = calibration_curve(truth, p, n_bins=10, strategy="uniform")
    assert np.allclose(scores["observed"], observed) and np.allclose(scores["predicted"], predicted)
    assert math.isclose(scores["brier"], brier_score_loss(truth, p), rel_tol=1e-6)
    assert math.isclose(scores["accuracy"], accuracy_score(truth, p > 0.5), rel_tol=1e-9)
    with pytest.raises(ValueError, match="share one shape"):
        pixel_scores(probs[:, :10], x, mask)


def test_pixel_log_prob_is_the_bernoulli_log_likelihood_of_the_hidden_pixels():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 20, generator=g, dtype=torch.float64)
    x = torch.bernoulli(probs, generator=g)
    mask = torch.rand(5, 20, generator=g) < 0.5
    expected = torch.where(mask, x * probs.log() + (1 - x) * (1 - probs).log(), 0.0).sum(-1)
    assert torch.allclose(pixel_log_prob(probs, x, mask), expected, atol=1e-12)
    # a confident wrong pixel costs at most -log(1e-6) = 13.8 nats
    wrong = pixel_log_prob(torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2), torch.tensor([[True, False]]))
    assert math.isclose(wrong.item(), math.log(1e-6), rel_tol=1e-4)


def _tiny_model():
    vae, x, mask = tiny()
    return MissingPixelModel(vae), x, mask


def _impute(**kwargs):
    model, x, mask = _tiny_model()
    return impute(model, observed_guide(model.vae), x, mask, **kwargs)


def _inpaint(**kwargs):
    model, x, mask = _tiny_model()
    return inpaint(model, x, mask, **kwargs)


def _estimate(**kwargs):
    model, x, mask = _tiny_model()
    return estimate_log_marginal(model, x, mask, **kwargs)


def _cll(**kwargs):
    model, x, mask = _tiny_model()
    return conditional_log_likelihood(model, observed_guide(model.vae), x, mask, **kwargs)


def _binary(n=2, d=6):
    return torch.bernoulli(torch.full((n, d), 0.5), generator=torch.Generator().manual_seed(0))


_ALL_HIDDEN = torch.ones(2, 6, dtype=torch.bool)
_SOME_HIDDEN = torch.tensor([[True, False] * 3] * 2)

#: One bad argument per case: (call, words the ValueError must contain).
BAD_INPUT = {
    "inpaint steps=2.5": (lambda: _inpaint(steps=2.5), "steps"),
    "inpaint lr=inf": (lambda: _inpaint(lr=math.inf), "lr must be a finite number > 0"),
    "inpaint num_particles=0": (lambda: _inpaint(num_particles=0), "num_particles must be a positive"),
    "inpaint seed=-1": (lambda: _inpaint(seed=-1), "seed must be an integer >= 0"),
    "inpaint American spelling": (lambda: _inpaint(guide="amortized"), "guide must be 'meanfield', 'amortised'"),
    "inpaint a z-conditional guide": (
        lambda: _inpaint(guide=ConditionalPixelGuide(observed_guide(tiny()[0]))), "depends on z: use impute"),
    "inpaint a model function": (lambda: inpaint(_tiny_model()[0].model, *_tiny_model()[1:]),
                                 "model must be a MissingPixelModel"),
    "estimate unknown proposal": (lambda: _estimate(proposal="posterior"), "proposal must be one of"),
    "estimate guide missing": (lambda: _estimate(proposal="guide"), "guide must be a trained pixel guide"),
    "estimate num_samples=0": (lambda: _estimate(proposal="prior", num_samples=0), "num_samples must be a positive"),
    "estimate guide of other images": (
        lambda: _estimate(proposal="guide", guide=MeanFieldPixelGuide(tiny()[0], 4)), "local parameters for 4 rows"),
    "impute num_samples=2.5": (lambda: _impute(num_samples=2.5), "num_samples must be a positive"),
    "impute num_imputations=0": (lambda: _impute(method="sample", num_imputations=0), "num_imputations"),
    "impute max_elements=0": (lambda: _impute(max_elements=0), "max_elements must be a positive"),
    "impute guide None": (lambda: impute(*_tiny_model()[:1], None, *_tiny_model()[1:]),
                          "guide must be an ObservedGuide .*got NoneType"),
    "impute float64 model, float32 x": (
        lambda: impute(_tiny_model()[0], observed_guide(tiny()[0]), _tiny_model()[1].float(), _tiny_model()[2]),
        "x must be dtype torch.float64"),
    "conditional_log_likelihood complete_guide a VAE": (
        lambda: _cll(complete_guide=tiny()[0]), "complete_guide must be an ObservedGuide"),
    "conditional_log_likelihood num_samples=0": (lambda: _cll(num_samples=0), "num_samples must be a positive"),
    "pixel_scores NaN probs": (lambda: pixel_scores(torch.full((2, 6), float("nan")), _binary(), _ALL_HIDDEN), "probs"),
    "pixel_scores bins=0": (lambda: pixel_scores(torch.full((2, 6), 0.5), _binary(), _ALL_HIDDEN, bins=0), "bins"),
    "pixel_scores nothing hidden": (lambda: pixel_scores(torch.full((2, 6), 0.5), _binary(), torch.zeros(2, 6, dtype=torch.bool)),
                                    "mask hides no pixel"),
    "pixel_scores 1-d probs": (lambda: pixel_scores(torch.full((6,), 0.5), _binary(), _SOME_HIDDEN),
                               "probs must have 2 dimensions"),
    "pixel_log_prob probs above 1": (lambda: pixel_log_prob(torch.full((2, 6), 1.5), _binary(), _SOME_HIDDEN),
                                     r"probs must lie in \[0.0, 1.0\]"),
    "pixel_log_prob grey truth": (lambda: pixel_log_prob(torch.full((2, 6), 0.5), torch.full((2, 6), 0.5), _SOME_HIDDEN),
                                  "pixels of x must be binary"),
    "pixel_log_prob probs of other images": (
        lambda: pixel_log_prob(torch.full((3, 6), 0.5), _binary(), _SOME_HIDDEN), "probs, x and mask must share one shape"),
    "pixel_log_prob integer mask": (lambda: pixel_log_prob(torch.full((2, 6), 0.5), _binary(), _SOME_HIDDEN.long()),
                                    "mask must be a boolean tensor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*BAD_INPUT[case])


def test_an_image_whose_weights_are_all_zero_is_named():
    vae, x, mask = tiny()
    with torch.no_grad():  # the observed pixels are 1 for every z, up to exp(-1e308)
        vae.decoder[-1].weight[HIDDEN:] = 0.0
        vae.decoder[-1].bias[HIDDEN:] = 1e308
    x[:, HIDDEN:] = 1.0
    x[1, HIDDEN:] = 0.0  # so p(x_obs | z) underflows to 0 for image 1: log w = -inf
    for method in ("mean", "sample"):
        with pytest.raises(ValueError, match=r"weights of image\(s\) \[1\] in a pass of 4 particles "
                                             r"are all zero: under every z"):
            impute(MissingPixelModel(vae), observed_guide(vae), x, mask, num_samples=4, method=method)


def test_amortised_is_the_only_spelling_of_the_guide_option():
    model = MissingPixelModel(VAE(x_dim=784, z_dim=2, hidden_dims=(4,)))
    x = torch.bernoulli(torch.full((2, 784), 0.5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"guide must be 'meanfield', 'amortised' or a trained"):
        inpaint(model, x, top_half_mask(2), "amortized", steps=1)
