"""pyro_lvm.infer.structure.mask_problems on traces of one and of K vectorised particles:
each mistake named once per element, in both directions; masked pairs of the library and
masks given as a masked distribution pass."""

import functools

import pytest
import torch

import pyro
import pyro.distributions as dist

from helpers import M2_DATA, m2_guide, m2_model
from pyro_lvm.infer import IWAE
from pyro_lvm.infer.structure import mask_problems, trace_pair
from pyro_lvm.models import VAE, SemiSupervisedVAE
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.models.pixel_guides import AmortisedPixelGuide


def _traces(model, guide, data, k):
    """The traces fit's door reads (one particle, :func:`trace_pair`) or evaluate's first
    pass (K vectorised particles)."""
    if k == 1:
        return trace_pair(model, guide, *data)
    with torch.no_grad():
        return IWAE(num_particles=k).traces(model, guide, *data)


@pytest.mark.parametrize("k", [1, 7])
def test_each_wrong_element_is_counted_once_in_each_direction(k):
    unmasked = mask_problems(*_traces(m2_model, functools.partial(m2_guide, mask=True), M2_DATA, k))
    assert len(unmasked) == 1 and unmasked[0].startswith(
        "site 'y_unobserved' is scored by the guide on 4 element(s) where the model masks it out")
    inverted = mask_problems(*_traces(m2_model, functools.partial(m2_guide, mask=M2_DATA[2]),
                                      M2_DATA, k))
    assert [line.split(" where")[0] for line in inverted] == [
        "site 'y_unobserved' is scored by the guide on 4 element(s)",
        "site 'y_unobserved' is scored by the model on 4 element(s)"]
    assert mask_problems(*_traces(m2_model, m2_guide, M2_DATA, k)) == []


def _distribution_masked_guide(x, labels, labelled, num_data=None, mask=None):
    """The M2 guide with its rows given by ``Distribution.mask`` instead of ``poutine.mask``."""
    probs = torch.stack([torch.sigmoid(-x), torch.sigmoid(x)], -1)
    with pyro.plate("data", len(x)):
        pyro.sample("y_unobserved", dist.Categorical(probs).mask(~labelled if mask is None else mask))


@pytest.mark.parametrize("k", [1, 7])
def test_a_masked_distribution_is_read_as_a_mask(k):
    assert mask_problems(*_traces(m2_model, _distribution_masked_guide, M2_DATA, k)) == []
    wrong = functools.partial(_distribution_masked_guide, mask=torch.ones(8, dtype=torch.bool))
    assert "on 4 element(s)" in " ".join(mask_problems(*_traces(m2_model, wrong, M2_DATA, k)))


@pytest.mark.parametrize("k", [1, 7])
def test_the_library_pairs_have_no_mask_problem(k):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((5, 16), 0.5), generator=torch.Generator().manual_seed(1))
    mask = torch.rand(5, 16, generator=torch.Generator().manual_seed(2)) < 0.5
    vae = VAE(x_dim=16, z_dim=2, hidden_dims=(8,))
    missing, pixels = MissingPixelModel(vae), AmortisedPixelGuide(vae, hidden_dims=(8,))
    for model, guide in ((missing.model, missing.prior_guide), (missing.model, pixels.guide)):
        assert mask_problems(*_traces(model, guide, (x, mask), k)) == []
    m2 = SemiSupervisedVAE(x_dim=16, z_dim=2, num_classes=3, hidden_dims=(8,), classifier_dims=(8,))
    labels, labelled = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([True, False, True, False, False])
    model_trace, guide_trace = trace_pair(m2.model, m2.guide, x, labels, labelled)
    assert mask_problems(model_trace, guide_trace) == []
