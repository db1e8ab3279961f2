import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from pyro_lvm.models import gmm
from pyro_lvm.train import fit

from helpers import digits_pca


def _sklearn_from(init, **kwargs):
    return GaussianMixture(
        len(init["weights"]), covariance_type="full", weights_init=init["weights"].numpy(),
        means_init=init["means"].numpy(), precisions_init=np.linalg.inv(init["covariances"].numpy()),
        **kwargs)


def test_em_matches_sklearn_from_the_same_start():
    x = digits_pca(6)
    init = gmm.initial_params(x, 8, seed=1)
    ours = gmm.fit_em(x, 8, init=init, max_iter=300, tol=1e-6, reg_covar=1e-6)
    sk = _sklearn_from(init, max_iter=300, tol=1e-6, reg_covar=1e-6).fit(x.numpy())
    assert ours.converged and sk.converged_ and ours.n_iter == sk.n_iter_
    assert abs(ours.log_likelihood - sk.score(x.numpy())) < 1e-4
    assert np.allclose(ours.weights.numpy(), sk.weights_, atol=1e-6)
    assert np.allclose(ours.means.numpy(), sk.means_, atol=1e-5)
    assert np.allclose(ours.covariances.numpy(), sk.covariances_, atol=1e-5)
    # Exact posterior and density agree with sklearn's at the shared parameters.
    params = {"weights": torch.tensor(sk.weights_), "means": torch.tensor(sk.means_),
              "covariances": torch.tensor(sk.covariances_)}
    assert np.allclose(gmm.responsibilities(x, **params).numpy(), sk.predict_proba(x.numpy()), atol=1e-8)
    assert np.allclose(gmm.log_likelihood(x, **params).numpy(), sk.score_samples(x.numpy()), atol=1e-8)


def test_em_history_never_decreases_and_n_init_keeps_the_best():
    x = digits_pca(4, n=600)
    runs = [gmm.fit_em(x, 6, n_init=1, seed=s, tol=1e-8, max_iter=200) for s in range(3)]
    for run in runs:
        steps = np.diff(run.history)
        assert np.all(steps >= -1e-10 * abs(run.history[-1]))
        assert run.history[-1] == pytest.approx(run.log_likelihood)
    best = gmm.fit_em(x, 6, n_init=3, seed=0, tol=1e-8, max_iter=200)
    assert best.log_likelihood >= max(r.log_likelihood for r in runs[:1]) - 1e-12


def test_functions_keep_dtype_and_sample_has_the_right_moments():
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    covs = torch.stack([torch.eye(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]])]).double()
    x, z = gmm.sample(weights, means, covs, 20000, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float64 and x.shape == (20000, 2) and z.shape == (20000,)
    # Component frequencies and second moments within 4 standard errors.
    share = (z == 1).double().mean()
    assert abs(share - 0.7) < 4 * (0.21 / 20000) ** 0.5
    second = x[z == 1] - means[1]
    emp = second.T @ second / len(second)
    assert torch.allclose(emp, covs[1], atol=4 * 2.0 / len(second) ** 0.5)
    resp = gmm.responsibilities(x, weights, means, covs)
    assert resp.dtype == torch.float64 and torch.allclose(resp.sum(1), torch.ones(20000, dtype=torch.float64))
    assert gmm.log_likelihood(x.float(), weights.float(), means.float(), covs.float()).dtype == torch.float32


def test_svi_with_enumeration_reaches_the_em_log_likelihood():
    x = digits_pca(5, n=500)
    init = gmm.initial_params(x, 4, seed=0)
    em = gmm.fit_em(x, 4, init=init, max_iter=500, tol=1e-8)
    model = gmm.GMM(**init).double()
    history = fit(model.enumerated_model, gmm.empty_guide, x, loss="enum", lr=0.05, num_epochs=600,
                  batch_size=len(x), progress=False)
    # The enumerated loss is the exact negative log-likelihood (per point after division by N).
    assert history.loss[-1] == pytest.approx(-gmm.log_likelihood(x, **model.params()).mean().item(), abs=1e-3)
    svi_ll = gmm.log_likelihood(x, **model.params()).mean().item()
    assert svi_ll > em.log_likelihood - 0.05


def test_meanfield_guide_trains_with_score_function_gradients():
    x = digits_pca(3, n=300)
    init = gmm.initial_params(x, 3, seed=0)
    model = gmm.GMM(**init).double()
    guide = gmm.MeanFieldGuide(len(x), 3).double()
    from pyro_lvm import evaluate

    before = evaluate.elbo(model.model, guide.guide, x, num_particles=50).mean().item()
    fit(model.model, guide.guide, x, loss="tracegraph", lr=0.05, num_epochs=200, batch_size=len(x),
        progress=False)
    after = evaluate.elbo(model.model, guide.guide, x, num_particles=50).mean().item()
    exact = gmm.log_likelihood(x, **model.params()).mean().item()
    assert after > before + 0.5
    assert after <= exact + 0.05  # still a bound (Monte Carlo error of 50 draws x 300 points << 0.05)
    with pytest.raises(ValueError, match="pass all N rows"):
        guide.guide(x[:10])


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda x: gmm.fit_em(x, 0), "between 1 and N"),
        (lambda x: gmm.fit_em(x[:5], 6), "between 1 and N"),
        (lambda x: gmm.fit_em(x[0], 2), "2 dimensions"),
        (lambda x: gmm.fit_em(torch.cat([x, x[:1] * float("nan")]), 2), "NaN"),
        (lambda x: gmm.fit_em(torch.cat([x[:, :1], x[:, :1]], 1), 2, reg_covar=0.0), "singular"),
        (lambda x: gmm.log_likelihood(x, torch.ones(2, dtype=x.dtype) / 2, torch.zeros(2, 3, dtype=x.dtype),
                                      torch.eye(3, dtype=x.dtype).expand(2, 3, 3)), "columns"),
        (lambda x: gmm.log_likelihood(x, torch.ones(3, dtype=x.dtype) / 3, torch.zeros(2, 4, dtype=x.dtype),
                                      torch.eye(4, dtype=x.dtype).expand(2, 4, 4)), "weights"),
    ],
)
def test_bad_input_is_rejected(call, words):
    with pytest.raises(ValueError, match=words):
        call(digits_pca(4, n=100))
