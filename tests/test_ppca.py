import pytest
import torch
from sklearn.decomposition import PCA
from torch.distributions import MultivariateNormal

import pyro

from pyro_lvm import evaluate
from pyro_lvm.models import ppca

from helpers import digits, fitted_ppca


def test_closed_form_matches_and_beats_sklearn_pca_score():
    x = digits()
    for q in (2, 10):
        fit = ppca.fit_closed_form(x, q)
        sk = PCA(n_components=q).fit(x.numpy()).score(x.numpy())
        # sklearn uses the divisor N-1 and so sits just off the maximum: never above it, and close.
        assert fit.log_likelihood >= sk
        assert fit.log_likelihood - sk < 1e-3
        assert fit.W.dtype == torch.float64 and fit.W.shape == (64, q)


def test_log_likelihood_equals_dense_reference():
    torch.manual_seed(0)
    x, W, mean = torch.randn(50, 12, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    cov = 0.7**2 * W @ W.T + 0.3**2 * torch.eye(12, dtype=torch.float64)
    dense = MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)
    fast = ppca.log_likelihood(x, W, mean, 0.3, latent_scale=0.7)
    assert fast.dtype == torch.float64 and fast.shape == (50,)
    assert torch.allclose(fast, dense, atol=1e-5, rtol=0)


def test_gradient_fit_reaches_the_closed_form_optimum():
    x = digits()[:300]
    closed = ppca.fit_closed_form(x, 5)
    grad = ppca.fit_gradient(x, 5)
    assert abs(grad.log_likelihood - closed.log_likelihood) < 1e-3
    assert grad.log_likelihood <= closed.log_likelihood + 1e-9  # the closed form is the maximum


def test_posterior_equals_gaussian_conditioning_of_the_joint():
    torch.manual_seed(1)
    W, mean, x = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    sigma, nu = 0.5, 1.5
    # Joint of (z, x): cov_zz = nu^2 I, cov_xz = nu^2 W, cov_xx = nu^2 W W^T + sigma^2 I.
    cov_xx = nu**2 * W @ W.T + sigma**2 * torch.eye(6, dtype=torch.float64)
    gain = nu**2 * W.T @ torch.linalg.inv(cov_xx)
    loc, cov = ppca.posterior(x, W, mean, sigma, latent_scale=nu)
    assert torch.allclose(loc, (x - mean) @ gain.T, atol=1e-10)
    assert torch.allclose(cov, nu**2 * torch.eye(2, dtype=torch.float64) - gain @ W * nu**2, atol=1e-10)


def test_exact_posterior_guide_gives_elbo_equal_to_log_likelihood():
    x = digits()[:200]
    model = fitted_ppca(x, 4)
    guide = ppca.exact_posterior_guide(model)
    exact = model.log_likelihood(x).detach()
    # log p(x, z) - log q(z | x) = log p(x) for every z when q is the exact posterior.
    elbo = evaluate.elbo(model.model, guide.guide, x, num_particles=3)
    assert torch.allclose(elbo, exact, atol=1e-6, rtol=0)
    assert torch.allclose(ppca.kl_to_posterior(guide.distribution(x), x, model), torch.zeros(200, dtype=torch.float64), atol=1e-8)


def test_meanfield_elbo_is_below_by_exactly_the_closed_form_kl():
    x = digits()[:100]
    model = fitted_ppca(x, 3)
    guide = ppca.MeanFieldGuide(100, 3).double()
    with torch.no_grad():  # a deliberately imperfect q: posterior means shifted, scales too wide
        loc, cov = model.posterior(x)
        guide.loc.copy_(loc + 0.3)
        guide.raw_scale.fill_(0.5)
    kl = ppca.kl_to_posterior(guide.distribution(), x, model).detach()
    exact = model.log_likelihood(x).detach()
    samples = evaluate.log_weights(model.model, guide.guide, x, num_samples=400)  # (400, N)
    gap = exact - samples.mean(0)  # per point, 400 single-sample ELBO draws
    se = samples.std(0) / 400**0.5
    # Monte Carlo error only: each point's gap within 4 standard errors of its KL.
    assert torch.all((gap - kl).abs() < 4 * se + 1e-9)
    assert kl.min() > 0.5  # the test has teeth: the gap is far from zero


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda x: ppca.fit_closed_form(x, 64), "latent_dim"),
        (lambda x: ppca.fit_closed_form(x, 0), "latent_dim"),
        (lambda x: ppca.fit_closed_form(x[:, :1].expand(-1, 3).contiguous(), 2), "rank"),
        (lambda x: ppca.fit_closed_form(torch.cat([x[:5], torch.full((1, 64), float("nan"), dtype=x.dtype)]), 2), "NaN"),
        (lambda x: ppca.log_likelihood(x, torch.zeros(63, 2, dtype=x.dtype), x.mean(0), 1.0), "W must be"),
        (lambda x: ppca.log_likelihood(x, torch.zeros(64, 2, dtype=x.dtype), x.mean(0), -1.0), "positive"),
        (lambda x: ppca.fit_closed_form(x[0], 2), "2 dimensions"),
    ],
)
def test_bad_input_is_rejected(call, words):
    with pytest.raises(ValueError, match=words):
        call(digits())


def test_evaluate_takes_several_data_tensors_and_gives_data_set_estimates_with_global_latents():
    import pyro
    import pyro.distributions as dist

    x = digits()[:40, :3]
    y = torch.ones(40, dtype=x.dtype)

    def model(x, weight):  # a global mean: the points share it
        mu = pyro.sample("mu", dist.Normal(torch.zeros(3, dtype=x.dtype), 10.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 4.0 * weight[:, None]).to_event(1), obs=x)

    # the exact posterior of mu (conjugate): every estimate equals log p(x_1..N) exactly
    prec = 1 / 100 + 40 / 16
    post_mean = (x.sum(0) / 16) / prec

    def guide(x, weight):
        pyro.sample("mu", dist.Normal(post_mean, prec ** -0.5).to_event(1))

    cov = 100 * torch.ones(40, 40, dtype=x.dtype) + 16 * torch.eye(40, dtype=x.dtype)
    exact = dist.MultivariateNormal(torch.zeros(40, dtype=x.dtype), cov).log_prob(x.T).sum()
    ll = evaluate.log_likelihood(model, guide, x, y, num_samples=10)
    elbo = evaluate.elbo(model, guide, x, y, num_particles=3)
    assert ll.shape == () and elbo.shape == ()
    assert ll.item() == pytest.approx(exact.item(), rel=1e-8)
    assert elbo.item() == pytest.approx(exact.item(), rel=1e-8)
    with pytest.raises(ValueError, match="global latents.*batch_size >= N = 40"):
        evaluate.log_likelihood(model, guide, x, y, num_samples=10, batch_size=10)


def _rank_two_data():
    """Rank-2 data in 6 dimensions, rotated so that rounding leaves the four zero
    eigenvalues of its covariance at ~1e-16 instead of exactly 0."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0][:, :2]
    return torch.randn(50, 2, generator=g, dtype=torch.float64) @ basis.T * 1e3 + 5.0


def _x(n=10, d=4, dtype=torch.float64):
    return torch.randn(n, d, dtype=dtype, generator=torch.Generator().manual_seed(0))


def _params(**change):
    params = {"W": torch.ones(4, 1, dtype=torch.float64), "mean": torch.zeros(4, dtype=torch.float64),
              "noise_scale": 0.5}
    params.update(change)
    return params


def _ll(x=None, **change):
    return ppca.log_likelihood(_x() if x is None else x, **_params(**change))


def _ppca(**kwargs):
    return ppca.PPCA(4, 1, **kwargs)


F64 = torch.float64
CONSTANT = torch.full((20, 5), 3.0, dtype=F64)
LINE = torch.arange(20, dtype=F64)[:, None] * torch.tensor([[1.0, -2.0, 0.5, 3.0, 1.0]], dtype=F64)

#: One bad argument per case, the words its ValueError must contain (argument and cause).
BAD_INPUTS = {
    # degenerate data: the maximum-likelihood fits have no maximum
    "ppca rank defeated by rounding": (lambda: ppca.fit_closed_form(_rank_two_data(), 2), "rank <= latent_dim"),
    "fit_closed_form constant": (lambda: ppca.fit_closed_form(CONSTANT, 2), "x is constant"),
    "fit_gradient constant": (lambda: ppca.fit_gradient(CONSTANT, 2), "x is constant"),
    "fit_closed_form constant float32": (lambda: ppca.fit_closed_form(CONSTANT.float(), 1), "x is constant"),
    "fit_closed_form rank 1, q=1": (lambda: ppca.fit_closed_form(LINE, 1),
                                    r"x has rank <= latent_dim=1 \(its values vary in only 1 direction"),
    "fit_gradient rank 1, q=2": (lambda: ppca.fit_gradient(LINE, 2), r"x has rank <= latent_dim=2"),
    "fit_gradient rank 2, q=2": (lambda: ppca.fit_gradient(_rank_two_data(), 2),
                                 "vary in only 2 direction.*use latent_dim < 2"),
    "fit_closed_form 1e20 in float32": (lambda: ppca.fit_closed_form(_x(dtype=torch.float32) * 1e20, 2),
                                        "the sample covariance of x overflowed torch.float32.*float64"),
    # the fits' other arguments
    "ppca latent_dim=1.5": (lambda: ppca.fit_closed_form(torch.randn(10, 4, dtype=F64), 1.5), "latent_dim"),
    "fit_closed_form latent_dim=True": (lambda: ppca.fit_closed_form(_x(), True),
                                        "latent_dim must be a positive integer, got True"),
    "fit_closed_form latent_dim=-1": (lambda: ppca.fit_closed_form(_x(), -1), "latent_dim must be a positive"),
    "fit_closed_form latent_dim=D": (lambda: ppca.fit_closed_form(_x(), 4), "latent_dim must be between 1 and D-1=3"),
    "fit_closed_form x list": (lambda: ppca.fit_closed_form(_x().tolist(), 2), "x must be a torch.Tensor, got list"),
    "fit_closed_form x 0-dim": (lambda: ppca.fit_closed_form(torch.tensor(1.0), 2), "x must have 2 dimensions"),
    "fit_closed_form x empty": (lambda: ppca.fit_closed_form(torch.zeros(0, 4, dtype=F64), 2),
                                "x must have at least 2 rows"),
    "fit_closed_form one row": (lambda: ppca.fit_closed_form(_x(1), 2), "x must have at least 2 rows"),
    "fit_closed_form inf": (lambda: ppca.fit_closed_form(_x() / 0, 2), "x contains NaN or inf"),
    "fit_closed_form int": (lambda: ppca.fit_closed_form(torch.ones(10, 4, dtype=torch.long), 2),
                            "x must be a floating tensor"),
    "fit_gradient max_iter=0": (lambda: ppca.fit_gradient(_x(), 2, max_iter=0), "max_iter must be a positive"),
    "fit_gradient max_iter=2.5": (lambda: ppca.fit_gradient(_x(), 2, max_iter=2.5), "max_iter must be a positive"),
    "fit_gradient seed=-1": (lambda: ppca.fit_gradient(_x(), 2, seed=-1), "seed must be an integer >= 0, got -1"),
    # log_likelihood / posterior
    "ppca posterior negative noise": (lambda: ppca.posterior(_x(), **_params(noise_scale=-0.5)), "noise_scale"),
    "log_likelihood W list": (lambda: _ll(W=[[1.0]] * 4), "W must be a torch.Tensor, got list"),
    "log_likelihood W (3, 1)": (lambda: _ll(W=torch.ones(3, 1, dtype=F64)), r"W must be \(D, q\) with D=4"),
    "log_likelihood W NaN": (lambda: _ll(W=torch.full((4, 1), float("nan"), dtype=F64)), "W contains NaN"),
    "log_likelihood mean (3,)": (lambda: _ll(mean=torch.zeros(3, dtype=F64)), "mean must have 4 columns"),
    "log_likelihood mean float32": (lambda: _ll(mean=torch.zeros(4)), "mean must be dtype torch.float64"),
    "log_likelihood x float32": (lambda: _ll(_x(dtype=torch.float32)), "x must be dtype torch.float64"),
    "log_likelihood x empty": (lambda: _ll(torch.zeros(0, 4, dtype=F64)), "x must have at least 1 rows"),
    "log_likelihood noise 0": (lambda: _ll(noise_scale=0.0), "noise_scale must be a positive finite scalar, got 0.0"),
    "log_likelihood noise NaN": (lambda: _ll(noise_scale=float("nan")), "noise_scale must be a positive finite"),
    "log_likelihood noise None": (lambda: _ll(noise_scale=None), "noise_scale must be a positive finite scalar, got None"),
    "log_likelihood noise True": (lambda: _ll(noise_scale=True), "noise_scale must be a positive finite scalar, got True"),
    "posterior noise '1'": (lambda: ppca.posterior(_x(), **_params(noise_scale="1")), "noise_scale must be a positive"),
    "log_likelihood latent_scale=-1": (lambda: _ll(latent_scale=-1.0), "latent_scale must be a positive finite"),
    "log_likelihood noise (2,)": (lambda: _ll(noise_scale=torch.ones(2)), "noise_scale must be a positive finite scalar"),
    # PPCA
    "PPCA x_dim=2.5": (lambda: ppca.PPCA(2.5, 1), "x_dim must be a positive integer, got 2.5"),
    "PPCA latent_dim=0": (lambda: ppca.PPCA(4, 0), "latent_dim must be a positive integer, got 0"),
    "PPCA latent_dim=x_dim": (lambda: ppca.PPCA(4, 4), "latent_dim must be between 1 and x_dim-1=3"),
    "PPCA latent_scale=0": (lambda: _ppca(latent_scale=0.0), "latent_scale must be a finite number > 0, got 0.0"),
    "PPCA noise_scale=-1": (lambda: _ppca(noise_scale=-1.0), "noise_scale must be a finite number > 0"),
    "PPCA noise_scale=nan": (lambda: _ppca(noise_scale=float("nan")), "noise_scale must be a finite number > 0"),
    "PPCA noise_scale='1'": (lambda: _ppca(noise_scale="1"), "noise_scale must be a finite number > 0"),
    "PPCA W list": (lambda: _ppca(W=[[0.0]] * 4), "W must be a torch.Tensor, got list"),
    "PPCA W (4, 2)": (lambda: _ppca(W=torch.zeros(4, 2)), r"W must have shape \(x_dim, latent_dim\) = \(4, 1\)"),
    "PPCA W 1-dim": (lambda: _ppca(W=torch.zeros(4)), "W must have 2 dimensions"),
    "PPCA W inf": (lambda: _ppca(W=torch.full((4, 1), float("inf"))), "W contains NaN or inf"),
    "PPCA mean (3,)": (lambda: _ppca(mean=torch.zeros(3)), "mean must have 4 columns"),
    "PPCA mean dtype other than W's": (lambda: _ppca(W=torch.zeros(4, 1, dtype=F64), mean=torch.zeros(4)),
                                       "mean must be dtype torch.float64"),
    "PPCA name=''": (lambda: _ppca(name=""), "name must be a non-empty string"),
    "PPCA.model width 3": (lambda: _ppca().model(torch.zeros(2, 3)), "x must have 4 columns"),
    "PPCA.exact_guide float64": (lambda: _ppca().exact_guide(torch.zeros(2, 4, dtype=F64)),
                                 "x must be dtype torch.float32"),
    "PPCA.log_likelihood x list": (lambda: _ppca().log_likelihood([[0.0] * 4]), "x must be a torch.Tensor"),
    # guides
    "AmortisedLinearGuide covariance='diag'": (lambda: ppca.AmortisedLinearGuide(4, 1, "diag"),
                                               r"covariance must be one of \('full', 'diagonal'\), got 'diag'"),
    "AmortisedLinearGuide x_dim=0": (lambda: ppca.AmortisedLinearGuide(0, 1), "x_dim must be a positive integer"),
    "AmortisedLinearGuide latent_dim=2.5": (lambda: ppca.AmortisedLinearGuide(4, 2.5),
                                            "latent_dim must be a positive integer, got 2.5"),
    "AmortisedLinearGuide guide width 3": (lambda: ppca.AmortisedLinearGuide(4, 1).guide(torch.zeros(2, 3)),
                                           "x must have 4 columns"),
    "AmortisedLinearGuide encode NaN": (lambda: ppca.AmortisedLinearGuide(4, 1).encode(torch.full((2, 4), float("nan"))),
                                        "x contains NaN"),
    "MeanFieldGuide num_data=0": (lambda: ppca.MeanFieldGuide(0, 1), "num_data must be a positive integer, got 0"),
    "MeanFieldGuide latent_dim=2.5": (lambda: ppca.MeanFieldGuide(5, 2.5), "latent_dim must be a positive"),
    "MeanFieldGuide guide 3 of 5 rows": (lambda: ppca.MeanFieldGuide(5, 1).guide(torch.zeros(3, 4)),
                                         "pass all N rows"),
    "exact_posterior_guide not a PPCA": (lambda: ppca.exact_posterior_guide("ppca"),
                                         "ppca must be a pyro_lvm.models.ppca.PPCA, got str"),
    "kl_to_posterior q not a distribution": (lambda: ppca.kl_to_posterior(torch.zeros(2, 1), torch.zeros(2, 4), _ppca()),
                                             "q must be a Gaussian distribution .* got Tensor"),
    "kl_to_posterior q of 3 points for 2": (
        lambda: ppca.kl_to_posterior(ppca.MeanFieldGuide(3, 1).distribution(), torch.zeros(2, 4), _ppca()),
        r"q must be a Gaussian distribution with batch shape \(2,\) and event shape \(1,\).*got batch shape \(3,\)"),
    "kl_to_posterior ppca not a PPCA": (lambda: ppca.kl_to_posterior(None, torch.zeros(2, 4), "ppca"),
                                        "ppca must be a pyro_lvm.models.ppca.PPCA"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_get_a_value_error_naming_argument_and_cause(case):
    call, words = BAD_INPUTS[case]
    with pyro.validation_enabled(False):  # the doors' checks do not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()


def test_defaults_take_the_dtype_of_the_given_initial_values():
    model = ppca.PPCA(4, 1, W=torch.ones(4, 1, dtype=torch.float64))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    x = _x()
    assert torch.isfinite(model.log_likelihood(x)).all()  # usable without .double()
