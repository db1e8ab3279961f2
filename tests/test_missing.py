"""Missing-pixel MNIST, checked on a tiny joint where every completion can be enumerated."""

import math

import numpy as np
import pytest
import torch

import pyro
import pyro.optim

from pyro_lvm import evaluate
from pyro_lvm.infer import IWAE, make_loss
from pyro_lvm.models import VAE
from pyro_lvm.models.missing import (AmortisedPixelGuide, ConditionalPixelGuide, MeanFieldPixelGuide,
                                     MissingPixelModel, ObservedGuide, check_mask,
                                     conditional_log_likelihood, estimate_log_marginal, impute,
                                     inpaint, make_mask, pixel_scores, top_half_mask)
from pyro_lvm.train import fit

HIDDEN = 10  # latent pixels of 16: 1024 completions per image


def tiny():
    """A 16-pixel Bernoulli VAE with a 1-d latent (so z integrates by quadrature) and
    three images with 10 hidden pixels each."""
    torch.manual_seed(3)
    vae = VAE(x_dim=16, z_dim=1, hidden_dims=(8,)).double()
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)  # a decoder whose pixels depend strongly on z
    x = torch.bernoulli(torch.full((3, 16), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, :HIDDEN] = True
    return vae, x, mask


def _quadrature(nodes=120):
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.tensor(e), torch.tensor(w / math.sqrt(2 * math.pi))


def _completions(x, mask):
    """Every completion of each image: (N, 2^h, 16)."""
    bits = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=x.dtype)] * HIDDEN)  # (2^h, h)
    full = x[:, None, :].expand(-1, len(bits), -1).clone()
    full[:, :, :HIDDEN] = bits
    return full


def exact_log_marginal(vae, x, mask):
    """log p(x_obs) = log sum over completions of the integral over z, by enumeration and
    Gauss-Hermite quadrature."""
    e, w = _quadrature()
    logits = vae.decoder(e[:, None])  # (J, 16)
    full = _completions(x, mask)  # (N, C, 16)
    log_lik = torch.distributions.Bernoulli(logits=logits).log_prob(full[:, :, None, :]).sum(-1)  # (N, C, J)
    return torch.logsumexp(log_lik + w.log(), (-1, -2))


def exact_elbo(vae, guide, x, mask):
    """The ELBO of a mean-field pixel guide: sum over completions, quadrature over z."""
    e, w = _quadrature(60)
    logits = guide.logits(x, mask)
    soft = torch.where(mask, torch.sigmoid(logits), x)
    loc, scale = vae.encode(soft)  # (N, 1)
    z = loc + scale * e  # (N, J)
    log_pz_minus_qz = (torch.distributions.Normal(0.0, 1.0).log_prob(z)
                       - torch.distributions.Normal(loc, scale).log_prob(z))  # (N, J)
    full = _completions(x, mask)
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(z[..., None])[:, None]).log_prob(
        full[:, :, None, :]).sum(-1)  # (N, C, J)
    log_q = (torch.distributions.Bernoulli(logits=logits[:, None, :]).log_prob(full) * mask[:, None]).sum(-1)  # (N, C)
    inner = ((log_lik + log_pz_minus_qz[:, None]) * w).sum(-1) - log_q
    return (log_q.exp() * inner).sum(-1)


def test_shapes_finite_losses_and_learning_with_missing_data(mnist_train):
    x = torch.bernoulli(mnist_train[0][:64], generator=torch.Generator().manual_seed(0))
    mask = top_half_mask(64)
    mask[32:] = False  # half the images complete
    vae = VAE(z_dim=4, hidden_dims=(32,))
    model = MissingPixelModel(vae, learn=True)
    guide = AmortisedPixelGuide(vae, hidden_dims=(32,), learn_encoder=True)
    for name, k in (("tracegraph", 1), ("elbo", 1), ("iwae", 3), ("vimco", 3)):
        assert math.isfinite(make_loss(name, k).loss(model.model, guide.guide, x, mask))
    before = [p.detach().clone() for p in vae.decoder.parameters()]
    fit(model.model, guide.guide, (x, mask), loss="tracegraph", num_epochs=2, batch_size=32, progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.decoder.parameters()))
    assert guide.probs(x, mask).shape == (64, 784)


def test_amortised_phi_starts_at_its_init_for_every_image(mnist_train):
    x = torch.bernoulli(mnist_train[0][:8], generator=torch.Generator().manual_seed(0))
    mask = top_half_mask(8)
    means = mnist_train[0].mean(0)
    phi = AmortisedPixelGuide(VAE(z_dim=4, hidden_dims=(32,)), hidden_dims=(32,), init=means).probs(x, mask)
    expected = torch.where(mask, means.clamp(1e-3, 1 - 1e-3).expand_as(x), x)
    assert torch.allclose(phi, expected, atol=1e-6)


def test_estimates_of_log_p_observed_converge_to_the_enumerated_value():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    # The sum over completions equals the integral of the observed pixels alone.
    e, w = _quadrature()
    observed_only = torch.distributions.Bernoulli(logits=vae.decoder(e[:, None])).log_prob(x[:, None]) * ~mask[:, None]
    assert torch.allclose(exact, torch.logsumexp(observed_only.sum(-1) + w.log(), -1), atol=1e-9)
    _, _, guide = inpaint(model, x, mask, "meanfield", steps=200, lr=0.1)
    for proposal in ("guide", "prior", "uniform"):
        pyro.set_rng_seed(0)
        runs = torch.stack([estimate_log_marginal(model, x, mask, proposal, guide=guide, num_samples=4000)
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


def test_score_function_gradient_wrt_phi_is_unbiased():
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    init = torch.sigmoid(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
    guide = MeanFieldPixelGuide(vae, 3, init=init).double()
    exact = torch.autograd.grad(-exact_elbo(vae, guide, x, mask).sum(), guide.pixels.logits)[0][mask]
    reps = 50  # copies of the data per draw, with phi repeated and gradients averaged back
    copies = MeanFieldPixelGuide(vae, 3 * reps).double()
    loss = make_loss("tracegraph", baseline="decaying_avg")
    draws = []
    pyro.set_rng_seed(0)
    for _ in range(200):
        with torch.no_grad():
            copies.pixels.logits.copy_(guide.pixels.logits.repeat(reps, 1))
        copies.pixels.logits.grad = None
        loss.loss_and_grads(model.model, copies.guide, x.repeat(reps, 1), mask.repeat(reps, 1))
        draws.append(copies.pixels.logits.grad.reshape(reps, 3, 16).mean(0)[mask])
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert torch.all((mean - exact).abs() < 4 * se + 1e-6), ((mean - exact) / se).abs().max()


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
def test_bad_input_is_rejected(x, mask, words):
    with pytest.raises(ValueError, match=words):
        check_mask(x, mask, 784)
    vae = VAE(z_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=words):
        estimate_log_marginal(MissingPixelModel(vae), x, mask, "uniform", num_samples=2)


# --- Learning from incomplete images and imputation (MIWAE), against quadrature. ---

def exact_posterior_mean(vae, x, mask, nodes=120):
    """E[x_i | x_obs] = sum_j p(z_j | x_obs) sigmoid(f(z_j))_i by Gauss-Hermite quadrature
    (hidden pixels sum out: p(z | x_obs) ∝ p(z) prod_{observed} p(x_i | z))."""
    e, w = _quadrature(nodes)
    logits = vae.decoder(e[:, None])  # (J, 16)
    log_obs = (torch.distributions.Bernoulli(logits=logits).log_prob(x[:, None]) * ~mask[:, None]).sum(-1)
    post = torch.softmax(log_obs + w.log(), -1)  # (N, J)
    return post @ torch.sigmoid(logits)


def observed_guide(vae):
    torch.manual_seed(5)
    return ObservedGuide(vae, hidden_dims=(8,)).double()


def test_summed_out_bound_is_below_log_p_observed_and_tightens_with_k():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    exact = exact_log_marginal(vae, x, mask).detach()
    repeats, gaps, ses = 30, [], []
    for k in (1, 10, 100, 3000):
        runs = torch.stack([evaluate.log_likelihood(model.observed_model, guide.guide, (x, mask), num_samples=k)
                            for _ in range(repeats)])
        gaps.append(exact - runs.mean(0))
        ses.append(runs.std(0) / math.sqrt(repeats))
        assert torch.all(gaps[-1] > -4 * ses[-1]), (k, gaps[-1], ses[-1])  # a bound in expectation
    assert torch.all(gaps[0] > 0.1), gaps[0]  # K = 1 (the ELBO) is clearly loose
    assert torch.all(gaps[1] < gaps[0] - 0.1), gaps
    for i in range(1, 3):  # non-decreasing in K, up to 4 standard errors of the difference
        assert torch.all(gaps[i + 1] < gaps[i] + 4 * (ses[i] ** 2 + ses[i + 1] ** 2).sqrt()), gaps
    assert torch.all(gaps[-1].abs() < 4 * ses[-1] + 0.01), gaps[-1]  # and tight at K = 3000


def test_conditional_guide_at_the_decoder_gives_exactly_the_summed_out_weights():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    conditional = ConditionalPixelGuide(guide, residual_dims=(8,)).double()
    estimator = IWAE(num_particles=50, max_plate_nesting=2)
    pyro.set_rng_seed(1)
    joint = estimator.log_weights(model.model, conditional.guide, x, mask).log_w
    pyro.set_rng_seed(1)
    summed = estimator.log_weights(model.observed_model, guide.guide, x, mask).log_w
    assert torch.allclose(joint, summed, atol=1e-10, rtol=0)
    with torch.no_grad():  # away from the decoder the completions' weights vary
        conditional.residual[-1].bias.fill_(1.0)
    pyro.set_rng_seed(1)
    moved = estimator.log_weights(model.model, conditional.guide, x, mask).log_w
    assert (moved - summed).abs().max() > 0.1


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


def test_conditional_log_likelihood_matches_quadrature_within_its_standard_error():
    vae, x, mask = tiny()
    model, guide = MissingPixelModel(vae), observed_guide(vae)
    e, w = _quadrature()
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(e[:, None])).log_prob(x[:, None]).sum(-1)
    log_px = torch.logsumexp(log_lik + w.log(), -1)  # log p(x) of the complete images
    exact = (log_px - exact_log_marginal(vae, x, mask)).detach()
    pyro.set_rng_seed(0)
    estimate, se = conditional_log_likelihood(model, guide, x, mask, num_samples=5000)
    assert torch.all(se > 0) and torch.all(se < 0.1), se
    # 4 delta-method standard errors plus the O(1/K) bias of the two log-mean-exps.
    assert torch.all((estimate - exact).abs() < 4 * se + 0.01), (estimate, exact, se)


def test_make_mask_kinds_and_their_fractions():
    g = torch.Generator().manual_seed(0)
    n, d = 600, 784
    assert torch.equal(make_mask("top_half", n, g), top_half_mask(n))
    for kind, p in (("mcar50", 0.5), ("mcar90", 0.9)):
        mask = make_mask(kind, n, g)
        assert mask.dtype == torch.bool and mask.shape == (n, d)
        assert abs(mask.float().mean() - p) < 4 * math.sqrt(p * (1 - p) / (n * d))  # binomial
    mix = make_mask("mix", n, g)
    top = (mix == top_half_mask(n)).all(1)
    share = mix.float().mean(1)
    assert abs(top.float().mean() - 1 / 3) < 4 * math.sqrt(2 / 9 / n)
    mcar = share[~top]
    near_half, near_ninety = (mcar - 0.5).abs() < 0.08, (mcar - 0.9).abs() < 0.08
    assert torch.all(near_half | near_ninety) and near_half.any() and near_ninety.any()


def test_miwae_training_on_incomplete_mnist_changes_the_decoder(mnist_train):
    x = torch.bernoulli(mnist_train[0][:64], generator=torch.Generator().manual_seed(0))
    mask = make_mask("mix", 64, torch.Generator().manual_seed(1))
    vae = VAE(z_dim=4, hidden_dims=(32,))
    model, guide = MissingPixelModel(vae, learn=True), ObservedGuide(vae, hidden_dims=(32,))
    before = [p.detach().clone() for p in vae.decoder.parameters()]
    history = fit(model.observed_model, guide.guide, (x, mask), loss="dreg", num_particles=5,
                  num_epochs=2, batch_size=32, progress=False)
    assert all(math.isfinite(v) for v in history.loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.decoder.parameters()))


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
    with pytest.raises(ValueError, match="boolean"):
        guide.encode(x, mask.double())
    with pytest.raises(ValueError, match="mask kind"):
        make_mask("bottom_half", 4)
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


def test_observed_guide_copied_from_the_vae_encodes_complete_images_as_the_vae_does():
    vae, x, mask = tiny()
    guide = ObservedGuide(vae, init_from_vae=True)
    for got, want in zip(guide.encode(x, torch.zeros_like(mask)), vae.encode(x)):
        assert torch.allclose(got, want, atol=1e-12)
    hidden = guide.encode(x, mask)[0]  # zero-filled: the VAE's encoder on x * observed
    assert torch.allclose(hidden, vae.encode(x * ~mask)[0], atol=1e-12)
    assert guide.encoder[0].weight.data_ptr() != vae.encoder[0].weight.data_ptr()  # a copy


def test_amortised_is_the_only_spelling_of_the_guide_option():
    model = MissingPixelModel(VAE(x_dim=784, z_dim=2, hidden_dims=(4,)))
    x = torch.bernoulli(torch.full((2, 784), 0.5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"guide must be 'meanfield', 'amortised' \(British spelling\)"
                                         r" or a pixel guide, got 'amortized'"):
        inpaint(model, x, top_half_mask(2), "amortized", steps=1)
