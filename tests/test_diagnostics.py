import pytest
import torch
from pyro import poutine

from pyro_lvm import diagnostics, evaluate
from pyro_lvm.data import binarize, fixed_binarization
from pyro_lvm.models import VAE, ppca
from pyro_lvm.train import fit

from helpers import digits, fitted_ppca, imperfect_guide


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


def test_cluster_accuracy_matches_clusters_to_labels():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert evaluate.cluster_accuracy(labels, torch.tensor([2, 2, 0, 0, 1, 1])) == 1.0
    assert evaluate.cluster_accuracy(labels, torch.tensor([0, 0, 0, 0, 1, 1])) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="two non-empty \\(N,\\)"):
        evaluate.cluster_accuracy(labels, torch.tensor([0, 1]))
