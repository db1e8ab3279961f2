"""CUDA in, CUDA out: every entry point keeps tensors on the GPU and agrees with the CPU.

Skipped where CUDA is absent.  CPU/GPU agreement is checked on deterministic quantities
(closed forms, EM) to float64 round-off; Monte Carlo quantities on shapes, devices and bounds.
"""

import math

import pytest
import torch

import pyro
from pyro_lvm import evaluate
from pyro_lvm.data import fixed_binarization, load_mnist, resolve_device
from pyro_lvm.diagnostics import psis_diagnostic
from pyro_lvm.infer import make_loss
from pyro_lvm.models import VAE, gmm, ppca
from pyro_lvm.imputation import estimate_log_marginal
from pyro_lvm.models.masks import top_half_mask
from pyro_lvm.models.missing import MissingPixelModel
from pyro_lvm.train import fit

from helpers import digits_pca, fitted_ppca

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")


def test_auto_device_is_cuda_and_mnist_loads_onto_it():
    assert resolve_device("auto").type == "cuda"
    images, labels = load_mnist(train=False, device="cuda")
    assert images.device.type == labels.device.type == "cuda"
    assert images.shape == (10000, 784) and images.dtype == torch.float32


def test_vae_trains_and_evaluates_on_cuda(mnist_train, mnist_test):
    x = fixed_binarization(mnist_train[0][:2048]).to(CUDA)
    test = fixed_binarization(mnist_test[0][:256]).to(CUDA)
    vae = VAE(z_dim=10, hidden_dims=(128,)).to(CUDA)
    history = fit(vae.model, vae.guide, x, loss="iwae", num_particles=3, num_epochs=3,
                  batch_size=256, lr=1e-3, progress=False)
    assert history.loss[-1] < history.loss[0]
    assert all(p.device.type == "cuda" for p in vae.parameters())
    elbo = evaluate.elbo(vae.model, vae.guide, test, num_particles=10)
    ll = evaluate.log_likelihood(vae.model, vae.guide, test, num_samples=200, batch_size=64)
    assert elbo.device.type == ll.device.type == "cuda" and ll.shape == (256,)
    # IWAE_200 >= ELBO on average; the Monte Carlo error of the mean ELBO (10 draws x 256
    # images, per-image sd below 5 nats) is far below the ~1 nat gap a 3-epoch VAE has.
    assert ll.mean() > elbo.mean()
    khat = psis_diagnostic(vae.model, vae.guide, test[:32], num_samples=200)
    assert khat.khat.shape == (32,)


@pytest.mark.parametrize("name", ["elbo", "tracegraph", "iwae", "dreg", "vimco"])
def test_every_loss_steps_on_cuda(name, mnist_train):
    x = fixed_binarization(mnist_train[0][:128]).to(CUDA)
    vae = VAE(z_dim=4, hidden_dims=(32,)).to(CUDA)
    loss = make_loss(name, 1 if name in ("elbo", "tracegraph") else 3)
    value = loss.loss_and_grads(vae.model, vae.guide, x)
    assert math.isfinite(float(value))
    assert all(p.grad is not None and p.grad.device.type == "cuda"
               for p in pyro.get_param_store().values() if p.requires_grad)


def test_gmm_em_on_cuda_matches_cpu():
    x = digits_pca(4, n=600)
    on_cpu = gmm.fit_em(x, 3, seed=0)
    on_gpu = gmm.fit_em(x.to(CUDA), 3, seed=0)
    assert on_gpu.means.device.type == "cuda" and on_gpu.means.dtype == torch.float64
    # Same initialisation and float64 arithmetic: the fits agree to round-off.
    assert on_gpu.log_likelihood == pytest.approx(on_cpu.log_likelihood, abs=1e-8)
    resp = gmm.responsibilities(x.to(CUDA), **on_gpu.params())
    assert resp.device.type == "cuda" and torch.allclose(resp.sum(-1), torch.ones(600, device=CUDA, dtype=torch.float64))


def test_ppca_closed_forms_on_cuda_match_cpu():
    x = digits_pca(10, n=500)
    fit_cpu = ppca.fit_closed_form(x, 3)
    fit_gpu = ppca.fit_closed_form(x.to(CUDA), 3)
    ll_cpu = ppca.log_likelihood(x, fit_cpu.W, fit_cpu.mean, fit_cpu.noise_scale)
    ll_gpu = ppca.log_likelihood(x.to(CUDA), fit_gpu.W, fit_gpu.mean, fit_gpu.noise_scale)
    assert ll_gpu.device.type == "cuda" and ll_gpu.dtype == torch.float64
    assert torch.allclose(ll_gpu.cpu(), ll_cpu, atol=1e-8)
    loc, cov = ppca.posterior(x.to(CUDA), fit_gpu.W, fit_gpu.mean, fit_gpu.noise_scale)
    assert loc.device.type == cov.device.type == "cuda"


def test_ppca_exact_guide_gives_log_p_on_cuda():
    x = digits_pca(6, n=200).to(CUDA)
    model = fitted_ppca(x, 2).to(CUDA)
    ll = evaluate.log_likelihood(model.model, model.exact_guide, x, num_samples=5)
    # The exact posterior as proposal makes every weight equal p(x): zero variance.
    assert torch.allclose(ll, model.log_likelihood(x), atol=1e-6)


def test_missing_pixel_estimates_on_cuda(mnist_test):
    x = fixed_binarization(mnist_test[0][:16]).to(CUDA)
    model = MissingPixelModel(VAE(z_dim=4, hidden_dims=(32,)).to(CUDA))
    est = estimate_log_marginal(model, x, top_half_mask(16, device=CUDA), "prior", num_samples=20)
    assert est.device.type == "cuda" and est.shape == (16,) and torch.isfinite(est).all()
