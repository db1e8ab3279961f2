"""models.missing: the VAE joint with hidden pixels latent (model) or summed out
(observed_model), checked against enumeration and quadrature on a tiny joint."""

import math

import pytest
import torch

from pyro_lvm import evaluate
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE
from pyro_lvm.models.masks import make_mask, top_half_mask
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import AmortisedPixelGuide, ObservedGuide
from pyro_lvm.train import fit

from missing_helpers import exact_log_marginal, observed_guide, tiny
from helpers import assert_refused


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


def test_the_prior_guide_weight_is_the_likelihood_of_the_observed_pixels():
    # Importance weights of model against prior_guide: log p(x_obs | z_k) for the prior's z_k,
    # whatever the hidden pixels drawn; the same z replayed in observed_model gives it too.
    vae, x, mask = tiny()
    model = MissingPixelModel(vae)
    chunks = list(evaluate.log_weight_chunks(model.model, model.prior_guide, x, mask,
                                             num_samples=7, return_sites=("z",)))
    (_, log_w, values), = chunks
    logits = vae.decoder(values["z"].squeeze(-2))  # (7, 3, 16)
    expected = (torch.distributions.Bernoulli(logits=logits).log_prob(x) * ~mask).sum(-1)
    assert torch.allclose(log_w, expected, atol=1e-10, rtol=0)


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


def _model(**kwargs):
    return MissingPixelModel(VAE(hidden_dims=(4,), z_dim=2), **kwargs)


def _binary(n=2, d=784, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=dtype), generator=torch.Generator().manual_seed(0))


_SOME_HIDDEN = top_half_mask(2)

#: One bad argument per case: (call, words the ValueError must contain).
BAD_INPUT = {
    "vae not a VAE": (lambda: MissingPixelModel("vae"), "vae of MissingPixelModel must be a pyro_lvm.models.VAE"),
    "Gaussian VAE": (lambda: MissingPixelModel(VAE(hidden_dims=(4,), z_dim=2, likelihood="normal")),
                     "Bernoulli pixels"),
    "model float mask": (lambda: _model().model(_binary(), torch.ones(2, 784)), "mask must be a boolean"),
    "model float64 x": (lambda: _model().model(_binary(dtype=torch.float64), _SOME_HIDDEN),
                        "x .*torch.float32"),
    "observed_model 783 pixels": (lambda: _model().observed_model(_binary(d=783), _SOME_HIDDEN[:, 1:]),
                                  "x must have 784 columns"),
    "observed_model mask of another shape": (lambda: _model().observed_model(_binary(), _SOME_HIDDEN[:1]),
                                             "mask must have the shape of x"),
    "prior_guide x a list": (lambda: _model().prior_guide([[0.0] * 784] * 2, _SOME_HIDDEN),
                             "x must be a torch.Tensor"),
    "prior_guide 1-d x": (lambda: _model().prior_guide(_binary()[0], _SOME_HIDDEN[0]), "x must have 2 dimensions"),
    "check_inputs NaN": (lambda: _model().check_inputs(torch.full((2, 784), float("nan")), _SOME_HIDDEN,
                                                       values=True), "x contains NaN"),
    "check_inputs grey observed pixels": (lambda: _model().check_inputs(torch.full((2, 784), 0.5), _SOME_HIDDEN,
                                                                        values=True), "observed pixels of x must be binary"),
    "check_inputs every pixel hidden": (lambda: _model().check_inputs(_binary(), torch.ones(2, 784, dtype=torch.bool),
                                                                      values=True), "hides every pixel"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*BAD_INPUT[case])
