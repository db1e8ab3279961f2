import pytest
import torch
from sklearn.decomposition import PCA
from torch.distributions import MultivariateNormal

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
