import math

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import pyro

from pyro_lvm.checks import check_model_inputs
from pyro_lvm.infer import make_loss
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


TYPES = gmm.COVARIANCE_TYPES


def _precisions(covariances, covariance_type):
    """sklearn's ``precisions_init`` for our covariances of any type."""
    c = covariances.numpy()
    return np.linalg.inv(c) if covariance_type in ("full", "tied") else 1 / c


def _relative(ours, theirs):
    """Largest relative difference, the scale of each array its largest magnitude."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("covariance_type", TYPES)
def test_every_covariance_type_agrees_with_sklearn_from_the_same_start(covariance_type):
    """One EM step from the same parameters, EM run to convergence, then the density, the
    posterior, the hard assignments and both criteria at sklearn's parameters: to 1e-5
    relative in float64 (measured: 1e-14 or less, round-off of sums taken in other orders)."""
    x = digits_pca(6)
    init = gmm.initial_params(x, 5, covariance_type=covariance_type, seed=1)
    ours = gmm.fit_em(x, 5, covariance_type=covariance_type, init=init, max_iter=1)
    sk = GaussianMixture(5, covariance_type=covariance_type, max_iter=1, weights_init=init["weights"].numpy(),
                         means_init=init["means"].numpy(),
                         precisions_init=_precisions(init["covariances"], covariance_type))
    with pytest.warns(ConvergenceWarning):  # max_iter=1 never converges
        sk.fit(x.numpy())
    assert ours.covariance_type == covariance_type and ours.n_iter == 1
    for name, theirs in (("weights", sk.weights_), ("means", sk.means_), ("covariances", sk.covariances_)):
        assert getattr(ours, name).shape == theirs.shape
        assert _relative(getattr(ours, name), theirs) < 1e-5, name
    # Run to convergence: the same number of iterations and the same optimum.
    ours = gmm.fit_em(x, 5, covariance_type=covariance_type, init=init, max_iter=300, tol=1e-6)
    converged = GaussianMixture(5, covariance_type=covariance_type, max_iter=300, tol=1e-6,
                                weights_init=init["weights"].numpy(), means_init=init["means"].numpy(),
                                precisions_init=_precisions(init["covariances"], covariance_type)).fit(x.numpy())
    assert ours.converged and converged.converged_ and ours.n_iter == converged.n_iter_
    assert _relative(ours.covariances, converged.covariances_) < 1e-5
    assert ours.log_likelihood == pytest.approx(converged.score(x.numpy()), rel=1e-5)
    # At sklearn's parameters, through the functions, the fit's methods and the Pyro module's.
    params = {"weights": torch.tensor(sk.weights_), "means": torch.tensor(sk.means_),
              "covariances": torch.tensor(sk.covariances_)}
    fit = gmm.GMMFit(**params, covariance_type=covariance_type, log_likelihood=float("nan"))
    module = gmm.GMM(**params, covariance_type=covariance_type).double()
    assert _relative(gmm.log_likelihood(x, **params, covariance_type=covariance_type),
                     sk.score_samples(x.numpy())) < 1e-5
    assert _relative(gmm.responsibilities(x, **params, covariance_type=covariance_type),
                     sk.predict_proba(x.numpy())) < 1e-5
    for scores in (fit, module):
        assert _relative(scores.score_samples(x), sk.score_samples(x.numpy())) < 1e-5
        assert _relative(scores.responsibilities(x), sk.predict_proba(x.numpy())) < 1e-5
        assert np.array_equal(scores.predict(x).numpy(), sk.predict(x.numpy()))
        assert scores.num_parameters() == sk._n_parameters()
        assert scores.bic(x) == pytest.approx(sk.bic(x.numpy()), rel=1e-5)
        assert scores.aic(x) == pytest.approx(sk.aic(x.numpy()), rel=1e-5)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_the_enumerated_pyro_model_is_the_exact_log_likelihood_for_every_type(covariance_type):
    """TraceEnum_ELBO with the empty guide sums z out exactly: its loss is -sum_n log p(x_n)
    of the closed form (to round-off), and the module hands back the parameters it was given."""
    x = digits_pca(4, n=300)
    init = gmm.initial_params(x, 3, covariance_type=covariance_type, seed=0)
    model = gmm.GMM(**init, covariance_type=covariance_type).double()
    for key, value in model.params().items():  # the weights renormalised: k-means++ sums to 1 + 2e-12
        assert torch.allclose(value, init[key], rtol=1e-10, atol=0), key
    loss = make_loss("enum").loss(model.enumerated_model, gmm.empty_guide, x)
    exact = gmm.log_likelihood(x, **init, covariance_type=covariance_type).sum().item()
    assert loss == pytest.approx(-exact, rel=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sample_draws_each_type_with_its_covariances(covariance_type):
    """Component frequencies and the second moments of one component within 4 standard errors."""
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
    covariances = {"full": torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.5], [0.5, 1.0]]]),
                   "tied": torch.tensor([[2.0, 0.5], [0.5, 1.0]]),
                   "diag": torch.tensor([[1.0, 1.0], [2.0, 0.5]]),
                   "spherical": torch.tensor([1.0, 2.0])}[covariance_type].double()
    matrix = {"full": lambda c: c[1], "tied": lambda c: c, "diag": lambda c: torch.diag(c[1]),
              "spherical": lambda c: c[1] * torch.eye(2, dtype=torch.float64)}[covariance_type](covariances)
    x, z = gmm.sample(weights, means, covariances, 20000, generator=torch.Generator().manual_seed(0),
                      covariance_type=covariance_type)
    assert x.shape == (20000, 2) and z.shape == (20000,)
    assert abs((z == 1).double().mean() - 0.7) < 4 * (0.21 / 20000) ** 0.5
    second = x[z == 1] - means[1]
    assert torch.allclose(second.T @ second / len(second), matrix, atol=4 * 2.0 / len(second) ** 0.5)


@pytest.mark.parametrize("covariance_type", ["diag", "tied"])
def test_a_saved_gmm_reloads_with_its_covariance_type(covariance_type, tmp_path):
    x = digits_pca(3, n=100)
    model = gmm.GMM(**gmm.initial_params(x, 2, covariance_type=covariance_type), covariance_type=covariance_type)
    model.save(tmp_path / "gmm.pt")
    loaded = gmm.GMM.load(tmp_path / "gmm.pt")
    assert loaded.covariance_type == covariance_type
    assert torch.equal(loaded.score_samples(x), model.score_samples(x))


def _three_clusters(n=600):
    """A well-separated 3-component mixture in 2-D (unit spherical components 8 sd apart)."""
    means = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
    return gmm.sample(weights, means, torch.ones(3, dtype=torch.float64), n,
                      generator=torch.Generator().manual_seed(0), covariance_type="spherical")[0]


@pytest.mark.parametrize("covariance_type", TYPES)
def test_select_num_components_recovers_three_clusters_by_bic(covariance_type):
    x = _three_clusters()
    best, curve = gmm.select_num_components(x, 6, covariance_type=covariance_type, seed=0)
    assert list(curve) == [1, 2, 3, 4, 5, 6]
    assert min(curve, key=curve.get) == 3 and best.means.shape == (3, 2)
    assert best.covariance_type == covariance_type and best.bic(x) == curve[3]
    # The curve is each K's own fit, scored by its BIC.
    for k, value in curve.items():
        assert value == pytest.approx(gmm.fit_em(x, k, covariance_type=covariance_type, seed=0).bic(x), rel=1e-12)


def test_select_num_components_by_aic_gives_the_aic_curve():
    x = _three_clusters(300)
    best, curve = gmm.select_num_components(x, 4, covariance_type="diag", criterion="aic", n_init=2, seed=1)
    fits = {k: gmm.fit_em(x, k, covariance_type="diag", n_init=2, seed=1) for k in curve}
    assert curve == pytest.approx({k: fit.aic(x) for k, fit in fits.items()}, rel=1e-12)
    assert best.aic(x) == min(curve.values())


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


def test_both_guides_give_responsibilities_of_the_rows_of_x():
    x = digits_pca(3, n=50)
    init = gmm.responsibilities(x, **gmm.initial_params(x, 4, seed=0))
    meanfield = gmm.MeanFieldGuide(50, 4, init=init).double()
    floored = init.clamp(min=1e-6)  # the guide's logits are log(max(init, 1e-6))
    assert torch.allclose(meanfield.responsibilities(x), floored / floored.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="pass all N rows"):
        meanfield.responsibilities(x[:10])
    amortised = gmm.AmortisedGuide(3, 4).double()
    resp = amortised.responsibilities(x)
    assert resp.shape == (50, 4) and torch.allclose(resp.sum(1), torch.ones(50, dtype=x.dtype))
    assert torch.allclose(resp, torch.softmax(amortised.net(x), -1))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_em_is_scale_equivariant_up_to_the_float32_range(covariance_type):
    """x * s has the fit of x scaled by s and log p lowered by D log s per point: in float32 up
    to s = 1e18 (k-means++ and the covariances no longer overflow below the float32 range of the
    squared deviations), then a ValueError naming the overflow instead of a wrong cause."""
    x = digits_pca(2, n=300, dtype=torch.float32) / 10
    base = gmm.fit_em(x, 3, covariance_type, reg_covar=0.0, tol=1e-6, max_iter=300)
    for s in (1e6, 1e18):
        big = gmm.fit_em(x * s, 3, covariance_type, reg_covar=0.0, tol=1e-6, max_iter=300)
        # float32 rounding (~1e-7 relative per operation, sums of 300 terms) moves the converged
        # mean log-likelihood by far less than 2e-3 nats; a wrong fit would be off by > 0.1
        assert big.log_likelihood == pytest.approx(base.log_likelihood - 2 * math.log(s), abs=2e-3)
    with pytest.raises(ValueError, match="the covariances overflowed torch.float32.*float64"):
        gmm.fit_em(x * 1e20, 3, covariance_type)


def _params(**change):
    params = {"weights": torch.tensor([0.3, 0.7], dtype=torch.float64),
              "means": torch.tensor([[0.0, 0.0], [3.0, 3.0]], dtype=torch.float64),
              "covariances": torch.eye(2, dtype=torch.float64).repeat(2, 1, 1)}
    params.update(change)
    return params


def _x(n=5, d=2, dtype=torch.float64):
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(0))


def _ll(x=None, **change):
    return gmm.log_likelihood(_x() if x is None else x, **_params(**change))


F64 = torch.float64
BIG32 = _x(dtype=torch.float32) * 1e20

#: One bad argument per case, the words its ValueError must contain (argument and cause).
BAD_INPUTS = {
    # log_likelihood / responsibilities / sample: the data
    "x list": (lambda: _ll([[0.0, 0.0]]), "x must be a torch.Tensor, got list"),
    "x 0-dim": (lambda: _ll(torch.tensor(0.0, dtype=F64)), r"x must have 2 dimensions, got shape \(\)"),
    "x empty": (lambda: _ll(torch.zeros(0, 2, dtype=F64)), "x must have at least 1 rows"),
    "x NaN": (lambda: _ll(_x() * float("nan")), "x contains NaN"),
    "x int": (lambda: _ll(torch.ones(5, 2, dtype=torch.long)), "x must be a floating tensor"),
    "x width 3": (lambda: _ll(_x(d=3)), "x must have 2 columns"),
    "gmm float32 x, float64 params": (lambda: gmm.responsibilities(torch.randn(5, 2), **_params()),
                                      "x .*torch.float64"),
    "x 1e20 in float32": (lambda: gmm.log_likelihood(BIG32, **{k: v.float() for k, v in _params().items()}),
                          r"log p\(x_n\) .*overflowed torch.float32.*convert it to torch.float64 or rescale"),
    # the parameters
    "gmm weights sum to 2": (lambda: _ll(weights=torch.tensor([1.0, 1.0], dtype=F64)), "weights .*sum to 1"),
    "weights negative": (lambda: _ll(weights=torch.tensor([-0.5, 1.5], dtype=F64)),
                         "weights must be non-negative and sum to 1"),
    "weights list": (lambda: _ll(weights=[0.3, 0.7]), "weights must be a torch.Tensor, got list"),
    "weights (3,)": (lambda: _ll(weights=torch.ones(3, dtype=F64) / 3), r"weights must have shape \(2,\)"),
    "weights NaN": (lambda: _ll(weights=torch.tensor([float("nan"), 0.5], dtype=F64)), "weights contains NaN"),
    "weights float32": (lambda: _ll(weights=torch.tensor([0.3, 0.7])), "weights must be dtype torch.float64"),
    "means 0-dim": (lambda: _ll(means=torch.tensor(0.0, dtype=F64)), "means must have 2 dimensions"),
    "means empty": (lambda: _ll(means=torch.zeros(0, 2, dtype=F64)), "means must have at least 1 rows"),
    "means inf": (lambda: _ll(means=torch.tensor([[0.0, float("inf")], [3.0, 3.0]], dtype=F64)),
                  "means contains NaN or inf"),
    "covariances (2, 3, 3)": (lambda: _ll(covariances=torch.eye(3, dtype=F64).repeat(2, 1, 1)),
                              r"covariances must have shape \(2, 2, 2\) for means \(2, 2\)"),
    "gmm non-symmetric covariance": (
        lambda: _ll(covariances=torch.tensor([[[1.0, 0.0], [0.5, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=F64)),
        r"covariances of component\(s\) \[0\] are not symmetric"),
    "covariance not positive definite": (
        lambda: _ll(covariances=torch.tensor([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=F64)),
        r"covariance of component\(s\) \[0\] is not positive definite"),
    "covariances NaN": (lambda: _ll(covariances=torch.full((2, 2, 2), float("nan"), dtype=F64)),
                        "covariances contain NaN values"),
    "covariances overflowed float32": (
        lambda: gmm.log_likelihood(_x(dtype=torch.float32), **{k: v.float() for k, v in _params(
            covariances=torch.eye(2, dtype=F64).repeat(2, 1, 1) * 1e40).items()}),
        "covariances contain inf: they overflowed torch.float32.*float64"),
    # the covariance type: its name, and covariances of its shape, positive (definite)
    "covariance_type 'banana'": (lambda: _ll(covariance_type="banana"),
                                 r"covariance_type must be one of \('full', 'diag', 'spherical', 'tied'\), "
                                 "got 'banana'"),
    "covariance_type None": (lambda: _ll(covariance_type=None), "covariance_type must be one of"),
    "full covariances (2, 2)": (lambda: _ll(covariances=torch.ones(2, 2, dtype=F64)),
                                r"covariances must have shape \(2, 2, 2\) for means \(2, 2\) and "
                                r"covariance_type 'full', got \(2, 2\)"),
    "diag covariances (2, 2, 2)": (lambda: _ll(covariance_type="diag"),
                                   r"covariances must have shape \(2, 2\) for means \(2, 2\) and "
                                   r"covariance_type 'diag', got \(2, 2, 2\)"),
    "spherical covariances (2, 2)": (lambda: _ll(covariances=torch.ones(2, 2, dtype=F64), covariance_type="spherical"),
                                     r"covariances must have shape \(2,\) .*covariance_type 'spherical', got \(2, 2\)"),
    "tied covariances (2, 2, 2)": (lambda: _ll(covariance_type="tied"),
                                   r"covariances must have shape \(2, 2\) .*covariance_type 'tied', got \(2, 2, 2\)"),
    "tied covariances (3, 3)": (lambda: _ll(covariances=torch.eye(3, dtype=F64), covariance_type="tied"),
                                r"covariances must have shape \(2, 2\) .*'tied', got \(3, 3\)"),
    "diag variance 0": (lambda: _ll(covariances=torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=F64),
                                    covariance_type="diag"),
                        r"covariances with covariance_type 'diag': the covariance of component\(s\) \[1\] is "
                        r"not positive definite \(a variance <= 0\)"),
    "spherical variance negative": (lambda: _ll(covariances=torch.tensor([-1.0, 1.0], dtype=F64),
                                                covariance_type="spherical"),
                                    r"covariances with covariance_type 'spherical': the covariance of "
                                    r"component\(s\) \[0\] is not positive definite"),
    "tied not positive definite": (lambda: _ll(covariances=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64),
                                               covariance_type="tied"),
                                   "covariances with covariance_type 'tied': the covariance is not positive definite"),
    "tied not symmetric": (lambda: _ll(covariances=torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=F64),
                                       covariance_type="tied"),
                           r"covariances are not symmetric \(covariance_type 'tied'\)"),
    "diag covariances inf": (lambda: _ll(covariances=torch.tensor([[1.0, float("inf")], [1.0, 1.0]], dtype=F64),
                                         covariance_type="diag"), "covariances contain inf"),
    "responsibilities diag covariances (2, 2, 2)": (
        lambda: gmm.responsibilities(_x(), **_params(), covariance_type="diag"),
        r"covariances must have shape \(2, 2\) .*'diag'"),
    "sample spherical variance 0": (
        lambda: gmm.sample(n=2, covariance_type="spherical", **_params(covariances=torch.tensor([1.0, 0.0], dtype=F64))),
        r"covariances with covariance_type 'spherical': the covariance of component\(s\) \[1\]"),
    "sample tied (2, 2, 2)": (lambda: gmm.sample(n=2, covariance_type="tied", **_params()),
                              r"covariances must have shape \(2, 2\) .*'tied'"),
    "sample n=2.5": (lambda: gmm.sample(n=2.5, **_params()), "n must"),
    "sample n=0": (lambda: gmm.sample(n=0, **_params()), "n must be a positive integer, got 0"),
    "sample n=True": (lambda: gmm.sample(n=True, **_params()), "n must be a positive integer, got True"),
    "sample generator=0": (lambda: gmm.sample(n=2, generator=0, **_params()),
                           "generator must be a torch.Generator or None, got int"),
    # fit_em / initial_params
    "gmm fit_em num_components=2.5": (lambda: gmm.fit_em(torch.randn(20, 2), 2.5), "num_components"),
    "fit_em num_components=True": (lambda: gmm.fit_em(_x(20), True),
                                   "num_components must be an integer >= 0, got True"),
    "fit_em num_components=-1": (lambda: gmm.fit_em(_x(20), -1), "num_components must be an integer >= 0"),
    "fit_em max_iter=0": (lambda: gmm.fit_em(_x(20), 2, max_iter=0), "max_iter must be a positive integer"),
    "fit_em n_init=2.5": (lambda: gmm.fit_em(_x(20), 2, n_init=2.5), "n_init must be a positive integer"),
    "fit_em tol=-1": (lambda: gmm.fit_em(_x(20), 2, tol=-1.0), "tol must be a finite number >= 0"),
    "fit_em tol=nan": (lambda: gmm.fit_em(_x(20), 2, tol=float("nan")), "tol must be a finite number >= 0"),
    "fit_em reg_covar=inf": (lambda: gmm.fit_em(_x(20), 2, reg_covar=float("inf")),
                             "reg_covar must be a finite number >= 0"),
    "fit_em reg_covar='1e-6'": (lambda: gmm.fit_em(_x(20), 2, reg_covar="1e-6"), "reg_covar must be a finite"),
    "fit_em seed=-1": (lambda: gmm.fit_em(_x(20), 2, seed=-1), "seed must be an integer >= 0, got -1"),
    "fit_em seed=1.5": (lambda: gmm.fit_em(_x(20), 2, seed=1.5), "seed must be an integer >= 0"),
    "fit_em x list": (lambda: gmm.fit_em(_x(20).tolist(), 2), "x must be a torch.Tensor"),
    "fit_em x 3-dim": (lambda: gmm.fit_em(_x(20)[None], 2), "x must have 2 dimensions"),
    "fit_em init list": (lambda: gmm.fit_em(_x(20), 2, init=[1, 2, 3]), "init must be a dict with the keys"),
    "fit_em init missing key": (lambda: gmm.fit_em(_x(20), 2, init={"weights": torch.ones(2) / 2}),
                                "init must be a dict with the keys"),
    "fit_em init of lists": (lambda: gmm.fit_em(_x(20), 2, init={k: v.tolist() for k, v in _params().items()}),
                             r"init\['weights'\] must be a torch.Tensor, got list"),
    "fit_em init K=2 for num_components=3": (lambda: gmm.fit_em(_x(20), 3, init=_params()),
                                             r"init\['means'\] must be \(3, 2\)"),
    "fit_em 1e20 in float32": (lambda: gmm.fit_em(_x(50, dtype=torch.float32) * 1e20, 2),
                               "the covariances overflowed torch.float32.*convert it to torch.float64 or rescale"),
    "fit_em 1e200 in float64": (lambda: gmm.fit_em(_x(50) * 1e200, 2),
                                "the covariances overflowed torch.float64.*; rescale it"),
    "fit_em covariance_type 'Full'": (lambda: gmm.fit_em(_x(20), 2, covariance_type="Full"),
                                      "covariance_type must be one of"),
    "fit_em diag init of full covariances": (lambda: gmm.fit_em(_x(20), 2, covariance_type="diag", init=_params()),
                                             r"covariances must have shape \(2, 2\) .*'diag', got \(2, 2, 2\)"),
    "fit_em tied init not positive definite": (
        lambda: gmm.fit_em(_x(20), 2, covariance_type="tied",
                           init=_params(covariances=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64))),
        "covariances with covariance_type 'tied': the covariance is not positive definite"),
    "fit_em diag 1e20 in float32": (lambda: gmm.fit_em(_x(50, dtype=torch.float32) * 1e20, 2, covariance_type="diag"),
                                    "the covariances overflowed torch.float32"),
    "initial_params covariance_type 1": (lambda: gmm.initial_params(_x(20), 2, covariance_type=1),
                                         "covariance_type must be one of .* got 1"),
    # select_num_components
    "select max_components=0": (lambda: gmm.select_num_components(_x(20), 0),
                                "max_components must be between 1 and N=20, got 0"),
    "select max_components > N": (lambda: gmm.select_num_components(_x(5), 6),
                                  "max_components must be between 1 and N=5, got 6"),
    "select max_components=2.5": (lambda: gmm.select_num_components(_x(20), 2.5),
                                  "max_components must be an integer >= 0, got 2.5"),
    "select criterion 'loglik'": (lambda: gmm.select_num_components(_x(20), 2, criterion="loglik"),
                                  r"criterion must be one of \('bic', 'aic'\), got 'loglik'"),
    "select covariance_type 'diagonal'": (lambda: gmm.select_num_components(_x(20), 2, covariance_type="diagonal"),
                                          "covariance_type must be one of"),
    "select n_init=0": (lambda: gmm.select_num_components(_x(20), 2, n_init=0), "n_init must be a positive integer"),
    "select tol=-1": (lambda: gmm.select_num_components(_x(20), 2, tol=-1.0), "tol must be a finite number >= 0"),
    "select x NaN": (lambda: gmm.select_num_components(_x(20) * float("nan"), 2), "x contains NaN"),
    # the methods of a fit and of the module
    "GMMFit.score_samples width 3": (lambda: gmm.fit_em(_x(20), 2).score_samples(_x(d=3)), "x must have 2 columns"),
    "GMMFit.bic NaN": (lambda: gmm.fit_em(_x(20), 2, covariance_type="tied").bic(_x() * float("nan")),
                       "x contains NaN"),
    "GMM.predict float32": (lambda: gmm.GMM(**_params()).predict(_x(dtype=torch.float32)),
                            "x must be dtype torch.float64"),
    "GMM.aic list": (lambda: gmm.GMM(**_params()).aic([[0.0, 0.0]]), "x must be a torch.Tensor"),
    "initial_params num_components=2.5": (lambda: gmm.initial_params(_x(20), 2.5), "num_components"),
    "initial_params K > N": (lambda: gmm.initial_params(_x(5), 6), "num_components must be between 1 and N=5"),
    "initial_params reg_covar=nan": (lambda: gmm.initial_params(_x(20), 2, reg_covar=float("nan")),
                                     "reg_covar must be a finite number >= 0"),
    "initial_params 1e20 in float32": (lambda: gmm.initial_params(_x(50, dtype=torch.float32) * 1e20, 2),
                                       "the covariances overflowed torch.float32"),
    # constructors
    "GMM weights list": (lambda: gmm.GMM([0.3, 0.7], _params()["means"], _params()["covariances"]),
                         "weights must be a torch.Tensor"),
    "GMM covariance not positive definite": (
        lambda: gmm.GMM(**_params(covariances=-torch.eye(2, dtype=F64).repeat(2, 1, 1))), "not positive definite"),
    "GMM diag covariances (2, 2, 2)": (lambda: gmm.GMM(**_params(), covariance_type="diag"),
                                       r"covariances must have shape \(2, 2\) .*'diag'"),
    "GMM spherical variance negative": (
        lambda: gmm.GMM(**_params(covariances=torch.tensor([1.0, -1.0], dtype=F64)), covariance_type="spherical"),
        r"covariances with covariance_type 'spherical': the covariance of component\(s\) \[1\]"),
    "GMM covariance_type 'Tied'": (lambda: gmm.GMM(**_params(), covariance_type="Tied"),
                                   "covariance_type must be one of"),
    "GMM name=''": (lambda: gmm.GMM(**_params(), name=""), "name must be a non-empty string"),
    "GMM.model width 3": (lambda: gmm.GMM(**_params()).model(_x(d=3)), "x must have 2 columns"),
    "GMM.enumerated_model float32": (lambda: gmm.GMM(**_params()).enumerated_model(_x(dtype=torch.float32)),
                                     "x must be dtype torch.float64"),
    "MeanFieldGuide num_data=0": (lambda: gmm.MeanFieldGuide(0, 2), "num_data must be a positive integer, got 0"),
    "MeanFieldGuide num_data=2.5": (lambda: gmm.MeanFieldGuide(2.5, 2), "num_data must be a positive integer"),
    "MeanFieldGuide num_components=True": (lambda: gmm.MeanFieldGuide(5, True), "num_components must be a positive"),
    "MeanFieldGuide init list": (lambda: gmm.MeanFieldGuide(2, 2, init=[[0.5, 0.5]] * 2),
                                 "init must be a torch.Tensor"),
    "MeanFieldGuide init (2, 3)": (lambda: gmm.MeanFieldGuide(2, 2, init=torch.full((2, 3), 1 / 3)),
                                   r"init must have shape \(2, 2\), got \(2, 3\)"),
    "MeanFieldGuide init rows sum to 2": (lambda: gmm.MeanFieldGuide(2, 2, init=torch.ones(2, 2)),
                                          "init must be non-negative and sum to 1"),
    "MeanFieldGuide init NaN": (lambda: gmm.MeanFieldGuide(2, 2, init=torch.full((2, 2), float("nan"))),
                                "init contains NaN"),
    "MeanFieldGuide guide x 0-dim": (lambda: gmm.MeanFieldGuide(5, 2).guide(torch.tensor(1.0)),
                                     "x must have 2 dimensions"),
    "MeanFieldGuide guide 3 of 5 rows": (lambda: gmm.MeanFieldGuide(5, 2).guide(_x(3)), "pass all N rows"),
    "AmortisedGuide dim=0": (lambda: gmm.AmortisedGuide(0, 2), "dim must be a positive integer, got 0"),
    "AmortisedGuide num_components=2.5": (lambda: gmm.AmortisedGuide(2, 2.5), "num_components must be a positive"),
    "AmortisedGuide hidden_dims=64": (lambda: gmm.AmortisedGuide(2, 2, hidden_dims=64),
                                      r"hidden_dims must be a sequence \(tuple or list\) of positive integers"),
    "AmortisedGuide guide width 3": (lambda: gmm.AmortisedGuide(2, 2).guide(torch.zeros(4, 3)),
                                     "x must have 2 columns"),
    "AmortisedGuide responsibilities NaN": (
        lambda: gmm.AmortisedGuide(2, 2).responsibilities(torch.full((4, 2), float("nan"))), "x contains NaN"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_get_a_value_error_naming_argument_and_cause(case):
    call, words = BAD_INPUTS[case]
    with pyro.validation_enabled(False):  # the doors' checks do not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()


def test_the_doors_find_the_declared_inputs_through_the_enumerated_model():
    x = digits_pca(2, n=20)
    x[3, 1] = float("nan")
    model = gmm.GMM(**_params())
    with pyro.validation_enabled(False), pytest.raises(ValueError, match="x contains NaN"):
        check_model_inputs(model.enumerated_model, (x,))  # what fit and evaluate call
