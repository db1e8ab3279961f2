import math

import numpy as np
import pytest
import torch

import pyro
from pyro import poutine

from pyro_lvm import evaluate
from pyro_lvm.infer import log_mean_exp
from pyro_lvm.models import DLGM, VAE
from pyro_lvm.models.common import gaussian_head
from pyro_lvm.models.dlgm import active_units


def _traces(m, x, **kwargs):
    guide_trace = poutine.trace(m.guide).get_trace(x, **kwargs)
    model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, **kwargs)
    return model_trace, guide_trace


def test_two_layer_shapes_plates_and_scaling():
    m = DLGM(x_dim=20, z_dims=(6, 3), hidden_dims=((16, 16), (8,)))
    assert m.sites == ["z1", "z2"]
    x = torch.rand(5, 20).round()
    with pyro.plate("particles", 4, dim=-2):
        model_trace, guide_trace = _traces(m, x)
    model_trace.compute_log_prob()
    for site, z_dim in zip(m.sites, m.z_dims):
        assert guide_trace.nodes[site]["value"].shape == (4, 5, z_dim)
        assert model_trace.nodes[site]["fn"].event_shape == (z_dim,)
        assert model_trace.nodes[site]["log_prob"].shape == (4, 5)
        assert "data" in [f.name for f in model_trace.nodes[site]["cond_indep_stack"]]
    assert model_trace.nodes["x"]["log_prob"].shape == (4, 5)
    model_trace, _ = _traces(m, x, num_data=50)
    assert all(model_trace.nodes[s]["scale"] == pytest.approx(10.0) for s in ["x", *m.sites])
    assert m.sample(3).shape == (3, 20)
    with pytest.raises(ValueError, match="hidden_dims per stochastic layer"):
        DLGM(z_dims=(10, 5), hidden_dims=((20,),))
    with pytest.raises(ValueError, match="positive"):
        DLGM(z_dims=(10, 0), hidden_dims=((20,), (4,)))
    with pytest.raises(ValueError, match="1 or 2"):
        DLGM.burda(3)
    with pytest.raises(ValueError, match=r"shape \(B, 20\)"):
        m.model(torch.rand(5, 19).round())


def test_burda_architectures():
    one, two = DLGM.burda(1), DLGM.burda(2)
    widths = [layer.out_features for layer in one.encoder if isinstance(layer, torch.nn.Linear)]
    assert widths == [200, 200, 100] and one.z_dims == (50,)  # 784-200-200-(loc, scale) of 50
    assert isinstance(one.encoder[1], torch.nn.Tanh)
    assert two.z_dims == (100, 50)
    assert [layer.out_features for layer in two.up[0] if isinstance(layer, torch.nn.Linear)] == [100, 100, 100]
    assert [layer.out_features for layer in two.down[0] if isinstance(layer, torch.nn.Linear)] == [100, 100, 200]
    for layer in two.modules():  # Glorot-uniform weights, zero biases
        if isinstance(layer, torch.nn.Linear):
            bound = (6 / (layer.in_features + layer.out_features)) ** 0.5
            assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
            assert (layer.bias == 0).all()
    mean = torch.full((784,), 0.2)
    one.init_output_bias(mean)
    assert torch.allclose(torch.sigmoid(one.decoder[-1].bias), mean, atol=1e-6)
    with pytest.raises(ValueError, match="x_mean of shape"):
        one.init_output_bias(mean[:10])


def test_one_layer_is_the_vae():
    """Same weights, same random numbers: the one-layer DLGM's log weights are the VAE's."""
    torch.manual_seed(1)
    vae = VAE(x_dim=12, z_dim=3, hidden_dims=(7, 5), activation=torch.nn.Tanh)
    dlgm = DLGM(x_dim=12, z_dims=(3,), hidden_dims=((7, 5),))
    dlgm.load_state_dict(vae.state_dict())
    x = torch.rand(9, 12).round()
    pyro.set_rng_seed(3)
    w_vae = evaluate.log_weights(vae.model, vae.guide, x, num_samples=20)
    pyro.set_rng_seed(3)
    w_dlgm = evaluate.log_weights(dlgm.model, dlgm.guide, x, num_samples=20)
    assert torch.allclose(w_vae, w_dlgm)


def _tiny_dlgm():
    """Two stochastic layers of one unit each, 6 binary pixels, float64.  The model's weights
    are doubled so that the posterior is far from the guide (large gaps between the bounds);
    the guide's scales are fixed at softplus(1) = 1.31, wider than the posterior, so that the
    importance weights have a finite variance (relative s.d. about 1.4) and their standard
    errors can be trusted."""
    torch.manual_seed(0)
    m = DLGM(x_dim=6, z_dims=(1, 1), hidden_dims=((5,), (4,))).double()
    with torch.no_grad():
        for p in [*m.decoder.parameters(), *m.down.parameters()]:
            p.mul_(2.0)
        for last in (m.encoder[-1], m.up[0][-1]):  # outputs: (loc, raw scale)
            last.weight[1].zero_()
            last.bias[1] = 1.0
    return m


def _quadrature_log_px(m, x, n=301):
    """log p(x) = log E_{z2 ~ N(0,1)} E_{z1 ~ p(z1|z2)} p(x | z1) by nested trapezoid rules on
    n standard-normal nodes in [-9, 9] (z1 = loc(z2) + scale(z2) t): for smooth integrands
    with Gaussian tails the rule converges geometrically, which the test checks."""
    t = torch.linspace(-9.0, 9.0, n, dtype=torch.float64)
    log_w = -0.5 * t**2 - 0.5 * math.log(2 * math.pi) + math.log(t[1] - t[0])
    with torch.no_grad():
        loc, scale = gaussian_head(m.down[0](t[:, None]))  # the model's p(z1 | z2)
        z1 = (loc + scale * t[None, :]).reshape(-1, 1)  # (n*n, 1): z2 node i, z1 node j
        log_lik = m.likelihood_dist(z1[:, None, :]).log_prob(x)  # (n*n, N)
    log_nodes = (log_w[:, None] + log_w[None, :]).reshape(-1, 1)
    return torch.logsumexp(log_nodes + log_lik, 0)


def test_bound_ordering_against_quadrature():
    """ELBO <= IWAE_5 <= IWAE_50 <= log p(x) per point, log p(x) by quadrature; the generic
    evaluator agrees with it.  Tolerances: 4 Monte Carlo standard errors (one-sided tail 3e-5),
    each from K = 5e4 weights; the strict gaps must exceed 4 standard errors too."""
    m = _tiny_dlgm()
    x = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 1], [1, 0, 1, 0, 1, 1], [0, 1, 0, 1, 0, 0]],
                     dtype=torch.float64)
    exact = _quadrature_log_px(m, x)
    assert torch.allclose(exact, _quadrature_log_px(m, x, n=451), atol=1e-7)  # converged

    k_total = 50_000
    pyro.set_rng_seed(0)
    log_w = evaluate.log_weights(m.model, m.guide, x, num_samples=k_total)  # (K, N)
    elbo, elbo_se = log_w.mean(0), log_w.std(0) / k_total**0.5
    bounds = {}
    for k in (5, 50):
        per_rep = log_mean_exp(log_w.reshape(k_total // k, k, -1), 1)
        bounds[k] = (per_rep.mean(0), per_rep.std(0) / (k_total // k) ** 0.5)
    w = torch.exp(log_w - log_w.max(0).values)
    is_se = w.std(0) / w.mean(0) / k_total**0.5  # delta method for log of the mean weight

    def gap(hi, lo):
        return (hi[0] - lo[0]) / (hi[1] ** 2 + lo[1] ** 2).sqrt()

    assert (gap(bounds[5], (elbo, elbo_se)) > 4).all()
    assert (gap(bounds[50], bounds[5]) > 4).all()
    assert (gap((exact, torch.zeros_like(exact)), bounds[50]) > -4).all()
    assert (exact - elbo > 0.05).all()  # the guide is imperfect: the test has something to see

    pyro.set_rng_seed(1)
    log_px = evaluate.log_likelihood(m.model, m.guide, x, num_samples=k_total)
    assert ((log_px - exact).abs() < 4 * is_se).all()


def test_active_units_finds_the_dead_ones():
    """Units whose guide mean ignores the input have A_u = 0 and are inactive; the others are
    active; A_u of z1 equals the variance of the encoder means computed directly."""
    torch.manual_seed(0)
    m = DLGM(x_dim=8, z_dims=(3, 2), hidden_dims=((10,), (6,)))
    with torch.no_grad():
        m.encoder[-1].weight[0].zero_()  # loc of z1 unit 0: a constant
        m.encoder[-1].weight[1:3].mul_(5.0)
        m.up[0][-1].weight[0].zero_()  # loc of z2 unit 0: a constant
        m.up[0][-1].weight[1].mul_(10.0)
    x = torch.rand(500, 8).round()
    out = active_units(m.guide, x, num_samples=200)
    assert out["z1"][1].tolist() == [False, True, True]
    assert out["z2"][1].tolist() == [False, True]
    assert out["z1"][0][0] == 0 and out["z2"][0][0] < 1e-12
    direct = m.encode(x)[0].detach().numpy().var(0)
    assert np.allclose(out["z1"][0].numpy(), direct, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 2 rows"):
        active_units(m.guide, x[:1])


@pytest.mark.parametrize("loss", ["elbo", "iwae", "dreg", "vimco"])
def test_every_parameter_gets_a_gradient_from_each_loss(loss):
    """Every site is in the data plate, so each K-particle loss takes the DLGM unchanged; every
    network, the upper layers' included, is registered with Pyro and gets a finite, non-zero
    gradient."""
    from pyro_lvm.infer import make_loss

    torch.manual_seed(0)
    m = DLGM(x_dim=30, z_dims=(4, 2), hidden_dims=((16,), (8,)))
    x = torch.rand(64, 30).round()
    value = make_loss(loss, 3).differentiable_loss(m.model, m.guide, x)
    value.backward()
    assert torch.isfinite(value)
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    names = set(pyro.get_param_store().keys())
    assert {f"{m.name}_{net}$$${n}" for net in ("encoder", "decoder", "up", "down")
            for n, _ in getattr(m, net).named_parameters()} <= names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dlgm_runs_on_cuda():
    torch.manual_seed(0)
    m = DLGM(x_dim=20, z_dims=(4, 2), hidden_dims=((8,), (6,))).cuda()
    x = torch.rand(10, 20, device="cuda").round()
    log_w = evaluate.log_weights(m.model, m.guide, x, num_samples=5)
    assert log_w.shape == (5, 10) and log_w.device.type == "cuda" and torch.isfinite(log_w).all()
    units = active_units(m.guide, x, num_samples=10)
    assert all(a.device.type == "cuda" for a, _ in units.values())
    assert m.sample(3).device.type == "cuda"


def _binary(n=4, d=6):
    return torch.bernoulli(torch.full((n, d), 0.5), generator=torch.Generator().manual_seed(0))


def _small(**kwargs):
    return DLGM(x_dim=6, z_dims=(2, 1), hidden_dims=((4,), (3,)), **kwargs)


#: One bad argument per case, the words its ValueError must contain (argument and cause).
BAD_INPUTS = {
    # construction (int() truncated 2.5 and a bare 400 ended in a TypeError)
    "z_dims=()": (lambda: DLGM(z_dims=(), hidden_dims=()),
                  r"z_dims must be a non-empty sequence \(tuple or list\) of positive integers, got \(\)"),
    "z_dims=50": (lambda: DLGM(z_dims=50), "z_dims must be a non-empty sequence .* of positive integers, got 50"),
    "z_dims=(50, 2.5)": (lambda: DLGM(z_dims=(50, 2.5), hidden_dims=((8,), (8,))),
                         r"z_dims\[1\] must be a positive integer, got 2.5"),
    "z_dims=(True,)": (lambda: DLGM(z_dims=(True,)), r"z_dims\[0\] must be a positive integer, got True"),
    "z_dims=(-1,)": (lambda: DLGM(z_dims=(-1,)), r"z_dims\[0\] must be a positive integer, got -1"),
    "hidden_dims=400": (lambda: DLGM(hidden_dims=400), "need one tuple of hidden_dims per stochastic layer"),
    "hidden_dims=(400,)": (lambda: DLGM(hidden_dims=(400,)),
                           r"hidden_dims\[0\] must be a sequence \(tuple or list\) of positive integers, got 400"),
    "hidden_dims=((200, 2.5),)": (lambda: DLGM(hidden_dims=((200, 2.5),)),
                                  r"hidden_dims\[0\]\[1\] must be a positive integer, got 2.5"),
    "hidden_dims too many": (lambda: DLGM(z_dims=(5,), hidden_dims=((4,), (4,))),
                             r"z_dims \(5,\) needs 1, got hidden_dims=\(\(4,\), \(4,\)\)"),
    "x_dim=2.5": (lambda: DLGM(x_dim=2.5), "x_dim must be a positive integer, got 2.5"),
    "likelihood='poisson'": (lambda: DLGM(likelihood="poisson"), "likelihood must be one of"),
    "activation instance": (lambda: DLGM(activation=torch.nn.Tanh()), "activation must be an nn.Module class"),
    "name=''": (lambda: DLGM(name=""), "name must be a non-empty string"),
    "burda(3)": (lambda: DLGM.burda(3), "1 or 2 stochastic layers, got 3"),
    "burda(True)": (lambda: DLGM.burda(True), "num_layers must be a positive integer, got True"),
    "burda(1.0)": (lambda: DLGM.burda(1.0), "num_layers must be a positive integer, got 1.0"),
    "burda(0)": (lambda: DLGM.burda(0), "num_layers must be a positive integer, got 0"),
    # init_output_bias
    "x_mean list": (lambda: _small().init_output_bias([0.5] * 6), "x_mean must be a torch.Tensor, got list"),
    "x_mean (5,)": (lambda: _small().init_output_bias(torch.full((5,), 0.5)), r"x_mean of shape \(6,\)"),
    "x_mean 0-dim": (lambda: _small().init_output_bias(torch.tensor(0.5)), r"x_mean of shape \(6,\)"),
    "x_mean 1.5": (lambda: _small().init_output_bias(torch.full((6,), 1.5)), r"x_mean must lie in \[0.0, 1.0\]"),
    "x_mean NaN": (lambda: _small().init_output_bias(torch.full((6,), float("nan"))), "x_mean contains NaN"),
    "x_mean float64": (lambda: _small().init_output_bias(torch.full((6,), 0.5, dtype=torch.float64)),
                       "x_mean must be dtype torch.float32"),
    "x_mean normal likelihood": (lambda: _small(likelihood="normal").init_output_bias(torch.full((6,), 0.5)),
                                 "needs the bernoulli likelihood"),
    # bodies and sampling
    "model width 5": (lambda: _small().model(_binary(4, 5)), r"x must have shape \(B, 6\)"),
    "guide x list": (lambda: _small().guide([[0.0] * 6]), r"x must have shape \(B, 6\), got list"),
    "sample n=2.5": (lambda: _small().sample(2.5), "n must be a positive integer, got 2.5"),
    "sample n=0": (lambda: _small().sample(0), "n must be a positive integer, got 0"),
    "sample generator=0": (lambda: _small().sample(2, generator=0), "generator must be a torch.Generator or None, got int"),
    "model num_data=2.5": (lambda: _small().model(_binary(), num_data=2.5), "num_data must be a positive integer, got 2.5"),
    "active_units x 0-dim": (lambda: active_units(_small().guide, torch.tensor(1.0)),
                             "x must have a leading data dimension"),
    # active_units
    "active_units num_samples=2.5": (lambda: active_units(VAE(6, 2, (4,)).guide, _binary(), num_samples=2.5),
                                     "num_samples"),
    "active_units one row": (lambda: active_units(VAE(6, 2, (4,)).guide, _binary(1)),
                             "x must have at least 2 rows"),
    "active_units batch_size=0": (lambda: active_units(_small().guide, _binary(), batch_size=0),
                                  "batch_size must be a positive integer, got 0"),
    "active_units threshold=-1": (lambda: active_units(_small().guide, _binary(), threshold=-1.0),
                                  "threshold must be a finite number >= 0, got -1.0"),
    "active_units threshold=inf": (lambda: active_units(_small().guide, _binary(), threshold=float("inf")),
                                   "threshold must be a finite number >= 0"),
    "active_units threshold='0.01'": (lambda: active_units(_small().guide, _binary(), threshold="0.01"),
                                      "threshold must be a finite number >= 0"),
    "active_units guide not callable": (lambda: active_units("guide", _binary()), "guide must be callable"),
    "active_units x list": (lambda: active_units(_small().guide, [[0.0] * 6] * 2), "x must be a torch.Tensor"),
    "active_units NaN": (lambda: active_units(_small().guide, _binary() * float("nan")), "x contains NaN"),
    "active_units width 5": (lambda: active_units(_small().guide, _binary(4, 5)), r"x must have shape \(B, 6\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_get_a_value_error_naming_argument_and_cause(case):
    call, words = BAD_INPUTS[case]
    with pyro.validation_enabled(False):  # the doors' checks do not depend on Pyro's switch
        with pytest.raises(ValueError, match=words):
            call()
