"""models.pixel_guides: q(z | x_obs) and the Bernoulli pixel posteriors, one family."""

import math

import pytest
import torch

import pyro
from pyro import poutine

from pyro_lvm.infer import IWAE, make_loss
from pyro_lvm.models import VAE
from pyro_lvm.models.masks import top_half_mask
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import (AmortisedPixelGuide, ConditionalPixelGuide,
                                          MeanFieldPixelGuide, ObservedGuide)
from pyro_lvm.models.saving import Saveable

from missing_helpers import exact_elbo, observed_guide, tiny
from helpers import assert_refused


def test_amortised_phi_starts_at_its_init_for_every_image(mnist_train):
    x = torch.bernoulli(mnist_train[0][:8], generator=torch.Generator().manual_seed(0))
    mask = top_half_mask(8)
    means = mnist_train[0].mean(0)
    phi = AmortisedPixelGuide(VAE(z_dim=4, hidden_dims=(32,)), hidden_dims=(32,), init=means).probs(x, mask)
    expected = torch.where(mask, means.clamp(1e-3, 1 - 1e-3).expand_as(x), x)
    assert torch.allclose(phi, expected, atol=1e-6)


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
        conditional.pixels[-1].bias.fill_(1.0)  # the residual r
    pyro.set_rng_seed(1)
    moved = estimator.log_weights(model.model, conditional.guide, x, mask).log_w
    assert (moved - summed).abs().max() > 0.1


def test_observed_guide_copied_from_the_vae_encodes_complete_images_as_the_vae_does():
    vae, x, mask = tiny()
    guide = ObservedGuide(vae, init_from_vae=True)
    for got, want in zip(guide.encode(x, torch.zeros_like(mask)), vae.encode(x)):
        assert torch.allclose(got, want, atol=1e-12)
    hidden = guide.encode(x, mask)[0]  # zero-filled: the VAE's encoder on x * observed
    assert torch.allclose(hidden, vae.encode(x * ~mask)[0], atol=1e-12)
    assert guide.encoder[0].weight.data_ptr() != vae.encoder[0].weight.data_ptr()  # a copy


def _z_site(guide, x, mask):
    return poutine.trace(guide.guide).get_trace(x, mask).nodes["z"]


def test_the_z_part_is_the_z_guides_or_the_vae_encoder_on_the_image_completed_with_phi():
    vae, x, mask = tiny()
    z_guide = observed_guide(vae)
    init = torch.sigmoid(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
    for guide in (MeanFieldPixelGuide(vae, 3, init=init, z_guide=z_guide).double(),
                  AmortisedPixelGuide(vae, hidden_dims=(8,), z_guide=z_guide).double(),
                  ConditionalPixelGuide(z_guide)):
        pyro.set_rng_seed(4)
        z = _z_site(guide, x, mask)["value"]
        pyro.set_rng_seed(4)
        assert torch.equal(z, z_guide.guide(x, mask)), type(guide).__name__
    seeds = MeanFieldPixelGuide(vae, 3, init=init).double()  # the seeds' z part
    loc = _z_site(seeds, x, mask)["fn"].base_dist.loc
    completed = torch.where(mask, init.double(), x)
    assert torch.allclose(loc.squeeze(-2), vae.encode(completed)[0], atol=1e-6)  # phi clamped at 1e-4


def test_only_the_guides_own_parameters_and_with_learn_encoder_its_z_part_are_registered():
    vae, x, mask = tiny()
    z_guide = observed_guide(vae)
    cases = [(MeanFieldPixelGuide(vae, 3, name="mf"), {"mf"}),
             (MeanFieldPixelGuide(vae, 3, trainable=False, name="fixed"), set()),
             (MeanFieldPixelGuide(vae, 3, learn_encoder=True, name="mf_enc"), {"mf_enc", f"{vae.name}_encoder"}),
             (AmortisedPixelGuide(vae, (8,), z_guide=z_guide, learn_encoder=True, name="am"), {"am", z_guide.name}),
             (ConditionalPixelGuide(z_guide, name="cond"), set()),
             (ConditionalPixelGuide(z_guide, (8,), name="res"), {"res"})]
    for guide, owners in cases:
        pyro.clear_param_store()
        guide.double().guide(x, mask)
        assert {name.split("$$$")[0] for name in pyro.get_param_store()} == owners, type(guide).__name__


def test_every_guide_of_the_family_round_trips_through_a_file(tmp_path):
    vae, x, mask = tiny()
    z_guide = observed_guide(vae)
    init = torch.sigmoid(torch.randn(16, generator=torch.Generator().manual_seed(2)))
    cases = [MeanFieldPixelGuide(vae, 3, init=init, mask=mask, z_guide=z_guide),
             MeanFieldPixelGuide(vae, 3, trainable=False),
             AmortisedPixelGuide(vae, hidden_dims=(8,), init=init),
             ConditionalPixelGuide(z_guide, residual_dims=(8,)),
             ObservedGuide(vae, init_from_vae=True)]
    for guide in cases:
        with torch.no_grad():
            for p in guide.parameters():
                p.add_(0.1)  # weights that differ from a fresh build
        guide.double().save(tmp_path / "guide.pt")
        loaded = Saveable.load(tmp_path / "guide.pt").double()
        assert type(loaded) is type(guide)
        if isinstance(guide, ObservedGuide):
            assert all(torch.equal(a, b) for a, b in zip(guide.encode(x, mask), loaded.encode(x, mask)))
        else:
            z = torch.randn(3, 1, dtype=torch.float64)
            assert torch.equal(guide.probs(x, mask, z), loaded.probs(x, mask, z)), type(guide).__name__


def _vae(**kwargs):
    return VAE(hidden_dims=(4,), z_dim=2, **kwargs)


_X = torch.zeros(2, 784)
_MASK = top_half_mask(2)

#: One bad argument per case: (call, words the ValueError must contain).
BAD_INPUT = {
    "MeanFieldPixelGuide vae None": (lambda: MeanFieldPixelGuide(None, 2), "vae of MeanFieldPixelGuide must be"),
    "MeanFieldPixelGuide num_images=2.5": (lambda: MeanFieldPixelGuide(_vae(), 2.5), "num_images must be a positive"),
    "MeanFieldPixelGuide init above 1": (lambda: MeanFieldPixelGuide(_vae(), 2, init=torch.full((784,), 1.5)),
                                         r"init must lie in \[0.0, 1.0\]"),
    "MeanFieldPixelGuide init of another shape": (lambda: MeanFieldPixelGuide(_vae(), 2, init=torch.full((3, 784), 0.5)),
                                                  r"init must have shape \(2, 784\) or \(784,\)"),
    "MeanFieldPixelGuide init a string": (lambda: MeanFieldPixelGuide(_vae(), 2, init="half"), "init must be probabilities"),
    "MeanFieldPixelGuide mask of other images": (lambda: MeanFieldPixelGuide(_vae(), 3, mask=_MASK),
                                                 r"mask must be None or a boolean tensor \(3, 784\)"),
    "MeanFieldPixelGuide z_guide a VAE": (lambda: MeanFieldPixelGuide(_vae(), 2, z_guide=_vae()),
                                          "z_guide must be an ObservedGuide or None"),
    "MeanFieldPixelGuide z_guide of another VAE": (
        lambda: MeanFieldPixelGuide(_vae(), 2, z_guide=ObservedGuide(VAE(hidden_dims=(4,), z_dim=3), (4,))),
        "z_guide was built for a VAE with x_dim, z_dim = 784, 3; this guide.s has 784, 2"),
    "AmortisedPixelGuide Gaussian VAE": (lambda: AmortisedPixelGuide(_vae(likelihood="normal")), "Bernoulli pixels"),
    "AmortisedPixelGuide hidden_dims=400": (lambda: AmortisedPixelGuide(_vae(), hidden_dims=400),
                                            "hidden_dims must be a tuple of layer widths"),
    "AmortisedPixelGuide hidden_dims=(0,)": (lambda: AmortisedPixelGuide(_vae(), hidden_dims=(0,)),
                                             r"hidden_dims\[0\] must be a positive integer"),
    "AmortisedPixelGuide init per image": (lambda: AmortisedPixelGuide(_vae(), (4,), init=torch.full((2, 784), 0.5)),
                                           r"init must have shape \(784,\)"),
    "ConditionalPixelGuide z_guide a VAE": (lambda: ConditionalPixelGuide(_vae()), "z_guide must be an ObservedGuide"),
    "ConditionalPixelGuide residual_dims=(2.5,)": (
        lambda: ConditionalPixelGuide(ObservedGuide(_vae(), (4,)), residual_dims=(2.5,)),
        r"residual_dims\[0\] must be a positive integer"),
    "ObservedGuide Gaussian VAE": (lambda: ObservedGuide(_vae(likelihood="normal")), "vae of ObservedGuide"),
    "ObservedGuide hidden_dims=8": (lambda: ObservedGuide(_vae(), hidden_dims=8), "hidden_dims must be a tuple"),
    "ObservedGuide.encode float mask": (lambda: ObservedGuide(_vae(), (4,)).encode(_X, _MASK.double()),
                                        "mask must be a boolean"),
    "ObservedGuide.encode NaN": (lambda: ObservedGuide(_vae(), (4,)).encode(torch.full((2, 784), math.nan), _MASK),
                                 "x contains NaN"),
    "ObservedGuide.guide 16 pixels": (lambda: ObservedGuide(_vae(), (4,)).guide(_X[:, :16], _MASK[:, :16]),
                                      "x must have 784 columns"),
    "MeanFieldPixelGuide.guide other rows": (lambda: MeanFieldPixelGuide(_vae(), 3).guide(_X, _MASK),
                                             "holds local parameters for 3 rows but got 2"),
    "MeanFieldPixelGuide.probs another mask": (lambda: MeanFieldPixelGuide(_vae(), 2, mask=_MASK).probs(_X, ~_MASK),
                                               "mask is another mask than the one the mean-field pixel guide was fitted for"),
    "AmortisedPixelGuide.probs grey observed pixels": (
        lambda: AmortisedPixelGuide(_vae(), (4,)).probs(torch.full((2, 784), 0.5), _MASK), "observed pixels of x must be binary"),
    "AmortisedPixelGuide.guide float64 x": (lambda: AmortisedPixelGuide(_vae(), (4,)).guide(_X.double(), _MASK),
                                            "x must be dtype torch.float32"),
    "ConditionalPixelGuide.probs without z": (
        lambda: ConditionalPixelGuide(ObservedGuide(_vae(), (4,))).probs(_X, _MASK), r"z must be a tensor \(\.\.\., 2, 2\)"),
    "ConditionalPixelGuide.logits z of other images": (
        lambda: ConditionalPixelGuide(ObservedGuide(_vae(), (4,))).logits(_X, _MASK, torch.zeros(3, 2)), "z must be a tensor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*BAD_INPUT[case])
