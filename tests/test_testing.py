"""pyro_lvm.testing: each assertion passes on the library's correct estimators (at
several seeds, false-alarm rate 1e-3 each) and fails on a deliberately broken one."""

import math

import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta
from pyro.ops.indexing import Vindex

from pyro_lvm import testing, train
from pyro_lvm.infer import IWAE, VIMCO, log_mean_exp, score_function_guide

from helpers import assert_refused, digits, fitted_ppca, imperfect_guide

# z_n ~ N(0, 1), x_n ~ N(z_n, 1): log p(x_n) = log N(x_n; 0, 2).  Spread-out points make
# pooling weights across points visibly wrong.
X = torch.linspace(-3.0, 3.0, 12, dtype=torch.float64)
LOG_P = dist.Normal(0.0, math.sqrt(2.0)).log_prob(X).sum()
DRAWS = 60  # per estimator and check; the tolerances are Student-t at 59 degrees of freedom


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    """q(z_n) = N(a x_n, s), at a = 0.2, s = 1 (the posterior is a = 0.5, s = 0.71)."""
    a = pyro.param("a", torch.tensor(0.2, dtype=torch.float64))
    s = pyro.param("s", torch.tensor(1.0, dtype=torch.float64))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, s))


def exact_elbo(a, s, x=X):
    """ELBO in closed form: E_q[log N(z; 0, 1) + log N(x; z, 1) - log q(z)] summed over points."""
    m = a * x
    return (-math.log(2 * math.pi) - 0.5 * (m**2 + s**2) - 0.5 * ((x - m) ** 2 + s**2)
            + 0.5 * torch.log(2 * math.pi * s**2) + 0.5).sum()


class PooledIWAE(IWAE):
    """Broken: averages the weights of all points before the log (B log mean_{k,n} w_nk)."""

    def surrogate(self, weights):
        loss = -weights.scale * weights.log_w.shape[1] * log_mean_exp(weights.log_w.reshape(-1), 0)
        return loss, loss


class SelfBaselineVIMCO(VIMCO):
    """Broken: each particle's baseline is its own log-weight, which depends on its draw."""

    def learning_signal(self, log_w, bound):
        return bound - log_w


def test_check_pair_passes_on_library_pairs_and_lists_every_problem():
    testing.check_pair(model, guide, X)
    x = digits()[:20]
    ppca_model = fitted_ppca(digits()[:300], 3)
    testing.check_pair(ppca_model.model, imperfect_guide(ppca_model, x).guide, x, per_point=True)

    def bad_guide(x):
        pyro.sample("u", dist.Normal(0.0, 1.0))  # not in the model; 'z' is missing

    with pytest.raises(AssertionError, match=r"(?s)2 problem.*guide but not model.*\{'u'\}.*model but not guide.*\{'z'\}"):
        testing.check_pair(model, bad_guide, X)

    def beta_model(x):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        pyro.sample("x", dist.Bernoulli(p).expand([len(x)]), obs=x)  # no plate: undeclared dim

    def normal_guide(x):
        pyro.sample("p", dist.Normal(pyro.param("m", torch.tensor(0.5)), 0.1))

    with pytest.raises(AssertionError, match=r"2 problem\(s\):\n.*support Real\(\) differs from the model's Interval.*\n.*\"x\", invalid log_prob shape"):
        testing.check_pair(beta_model, normal_guide, torch.ones(4))

    def subsampled_model(x):
        with pyro.plate("data", 10, subsample_size=4) as rows:
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(rows)]))

    def global_loc_guide(x):
        loc = pyro.param("loc", torch.zeros(10))  # per-point, but not declared local
        with pyro.plate("data", 10, subsample_size=4):
            pyro.sample("z", dist.Normal(loc[:4], 1.0))

    with pytest.raises(AssertionError, match=r"parameter 'loc' \(10,\).*event_dim"):
        testing.check_pair(subsampled_model, global_loc_guide, X)

    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    testing.check_pair(global_model, global_guide, X)  # fine for every loss ...
    with pytest.raises(AssertionError, match="one common data plate"):  # ... not per point
        testing.check_pair(global_model, global_guide, X, per_point=True)


# --- check_pair on a user's own pairs: each mistake named, each valid idiom passes --------

_g = torch.Generator().manual_seed(0)
FEATURES = torch.randn(30, 3, generator=_g)
TARGETS = FEATURES @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(30, generator=_g)


def regression(x, y, unsqueeze=False):
    """Bayesian linear regression, w ~ N(0, I), y_n ~ N(x_n . w, 1)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        mean = (x * (w.unsqueeze(-2) if unsqueeze else w)).sum(-1)  # the mistake: (K, 1, 1, 3)
        pyro.sample("y", dist.Normal(mean, 1.0), obs=y)


def regression_guide(x, y, unsqueeze=False):
    pyro.sample("w", dist.Normal(pyro.param("w_loc", torch.zeros(3)), 0.3).to_event(1))


def local_model(x, left=False, num_data=None):
    """z_n ~ N(0, 1) as a (B, 1) latent, x_n ~ N(z_n, 1)."""
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 1), 1.0).to_event(1))
        # the mistake: z[:, 0] is (B,) with one particle but (K, 1), point 0's z, with K
        pyro.sample("x", dist.Normal(z[:, 0] if left else z[..., 0], 1.0), obs=x)


def local_guide(x, left=False, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("z", dist.Normal(0.5 * x[:, None], 0.8).to_event(1))


def unscaled_model(x, num_data=None):
    with pyro.plate("data", len(x)):  # the mistake: takes num_data but ignores it
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def scaled_guide(x, num_data=None):
    with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
        pyro.sample("z", dist.Normal(0.5 * x, 0.8))


# M2 (Kingma et al. 2014) on rows of which some are labelled: y observed there (obs_mask),
# latent elsewhere; the guide's q(y | x) must be scored on the unlabelled rows only.
LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
LABELLED = torch.tensor([True, True, False, False, True, False, True, False])
POINTS = torch.tensor([-1.0, 2.0, 1.5, -0.5, 1.0, -2.0, 0.0, 3.0])


def m2_model(x, labels, labelled):
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(torch.tensor([0.5, 0.5])), obs=labels,
                        obs_mask=labelled)
        pyro.sample("x", dist.Normal(2.0 * y - 1.0, 1.0), obs=x)


def m2_guide(x, labels, labelled, masked=True):
    probs = torch.stack([torch.sigmoid(-x), torch.sigmoid(x)], -1)
    with pyro.plate("data", len(x)), poutine.mask(mask=~labelled if masked else True):
        pyro.sample("y_unobserved", dist.Categorical(probs))


def m2_unmasked_guide(x, labels, labelled):  # the mistake: q(y | x) on every row
    m2_guide(x, labels, labelled, masked=False)


MISTAKES = {
    "a global latent unsqueezed from the left": (
        lambda: testing.check_pair(regression, regression_guide, FEATURES, TARGETS, unsqueeze=True),
        r"site 'y' has a log-density of shape \(3, 3, 30\) with 3 particles, expected \(3, 30\)"),
    "a local latent indexed from the left": (
        lambda: testing.check_pair(local_model, local_guide, X.float(), left=True),
        r"site 'x': its log-density at particle \d of K=3 vectorised particles is .* for the same "
        r"draw scored alone: the code mixes particles"),
    "a data plate that ignores num_data": (
        lambda: testing.check_pair(unscaled_model, scaled_guide, X),
        r"model site 'x' carries scale 1 on a batch of 6 rows with num_data=12, expected "
        r"num_data / batch = 2: the model ignores num_data"),
    "a guide scoring labels the model observes": (
        lambda: testing.check_pair(m2_model, m2_unmasked_guide, POINTS, LABELS, LABELLED),
        r"site 'y_unobserved' is scored by the guide on 4 element\(s\) where the model masks it "
        r"out \(there it is observed"),
    "a latent missing from the guide": (
        lambda: testing.check_pair(unscaled_model, lambda x, num_data=None: None, X),
        r"Found vars in model but not guide: \{'z'\}"),
    "a guide sampling what the model observes": (
        lambda: testing.check_pair(model, lambda x: guide(x) or pyro.sample(
            "x", dist.Normal(torch.zeros_like(x), 1.0).to_event(1)), X),
        r"guide but not model.*\{'x'\}"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_check_pair_names_each_mistake_of_a_user_pair(mistake):
    call, message = MISTAKES[mistake]
    with pytest.raises(AssertionError, match=message):
        call()


def test_the_same_pairs_written_correctly_pass_check_pair():
    testing.check_pair(regression, regression_guide, FEATURES, TARGETS)
    testing.check_pair(local_model, local_guide, X.float())
    testing.check_pair(m2_model, m2_guide, POINTS, LABELS, LABELLED)
    # With num_data given and fewer rows, the rows given are the batch: the scale is 12 / 4.
    testing.check_pair(local_model, local_guide, X.float()[:4], num_data=12)
    with pytest.raises(AssertionError, match="scale 1 on a batch of 4 rows with num_data=12"):
        testing.check_pair(unscaled_model, scaled_guide, X[:4], num_data=12)
    # A pair for single-particle losses only may leave the vectorised run out.
    testing.check_pair(local_model, local_guide, X.float(), left=True, num_particles=1)


def _tutorial_mixture(data, num_data=None):
    """Pyro's GMM tutorial model, written to broadcast over particles (component means as one
    vector-valued site, picked with Vindex from the right)."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", num_data or len(data), subsample=torch.arange(len(data))):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., assignment], scale), obs=data)


def test_check_pair_reports_no_problem_on_valid_pyro_idioms():
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    mixture = config_enumerate(_tutorial_mixture)  # assignments enumerated in the model
    testing.check_pair(mixture, AutoDelta(poutine.block(mixture, hide=["assignment"])), data)

    def positive_model(x):  # a point mass for a constrained prior, written by hand
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, s), obs=x)

    def point_guide(x):
        pyro.sample("s", dist.Delta(pyro.param("s_map", torch.tensor(1.0),
                                               constraint=constraints.positive)))

    testing.check_pair(positive_model, point_guide, X)

    def negative_guide(x):
        pyro.sample("s", dist.Delta(torch.tensor(-1.0, dtype=x.dtype)))

    with pyro.validation_enabled(False), pytest.raises(  # (validation: Normal's scale refused)
            AssertionError, match="site 's': the guide's point mass lies outside the model's "
                                  r"support GreaterThan\(lower_bound=0.0\)"):
        testing.check_pair(positive_model, negative_guide, X)

    def masked_model(x, mask):  # pixels latent where mask is False (obs_mask), in two plates
        with pyro.plate("data", len(x), dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 1), 1.0))
            with pyro.plate("features", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x, obs_mask=mask)

    def masked_guide(x, mask):
        with pyro.plate("data", len(x), dim=-2):
            z = pyro.sample("z", dist.Normal(x.mean(-1, keepdim=True), 1.0))
            with pyro.plate("features", x.shape[1], dim=-1), poutine.mask(mask=~mask):
                pyro.sample("x_unobserved", dist.Normal(z.expand(z.shape[:-1] + x.shape[-1:]), 1.0))

    pixels = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    testing.check_pair(masked_model, masked_guide, pixels, pixels > 0)


def _left_indexed_mixture(data):
    """Pyro's GMM tutorial model as the tutorial writes it: locs[assignment] indexes from the
    left, which TraceEnum_ELBO takes but K vectorised particles do not."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], 1.0), obs=data)


def test_a_pair_for_single_particle_losses_is_told_how_to_index_for_k_particles():
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    mixture = config_enumerate(_left_indexed_mixture)
    guide = AutoDelta(poutine.block(mixture, hide=["assignment"]))
    testing.check_pair(mixture, guide, data, num_particles=1)
    with pytest.raises(AssertionError, match=r"(?s)1 problem.*with K=3 vectorised particles .*Shape "
                                             r"mismatch inside plate\('data'\).*index from the "
                                             r"right \(Vindex\(locs\)\[\.\.\., assignment\]"):
        testing.check_pair(mixture, guide, data)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_ordered_passes_for_the_library_estimators(seed):
    bounds = testing.assert_bounds_ordered(model, guide, X, losses=("elbo", "iwae", "dreg", "vimco"),
                                           num_particles=(1, 5, 50), log_likelihood=LOG_P, seed=seed)
    assert bounds["iwae(K=50)"][0] > bounds["elbo(K=1)"][0]  # the chain is not trivially flat
    testing.assert_bounds_ordered(model, guide, X, seed=seed)  # log p(x) by a large-K estimate


def test_bounds_ordered_fails_for_an_iwae_that_pools_weights_before_the_log():
    with pytest.raises(AssertionError, match=r"PooledIWAE = .* is above log p\(x\) exact"):
        testing.assert_bounds_ordered(model, guide, X, losses=("elbo", PooledIWAE(num_particles=50)),
                                      log_likelihood=LOG_P)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_agree_for_estimators_of_one_objective(seed):
    sf_guide = score_function_guide(guide)
    testing.assert_gradients_agree(model, guide, X, losses=("elbo", ("tracegraph", sf_guide)),
                                   num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=("iwae", "dreg"), num_particles=5,
                                   num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=(("iwae", sf_guide), ("vimco", sf_guide)),
                                   num_particles=3, num_draws=DRAWS, seed=seed)
    testing.assert_gradients_agree(model, guide, X, losses=("iwae", Trace_ELBO()), num_draws=DRAWS,
                                   seed=seed)


def test_gradients_agree_fails_for_a_baseline_that_depends_on_the_draw():
    sf_guide = score_function_guide(guide)
    with pytest.raises(AssertionError, match=r"gradients of vimco\(K=3\) and SelfBaselineVIMCO disagree"):
        testing.assert_gradients_agree(model, guide, X, losses=(
            ("vimco", sf_guide), (SelfBaselineVIMCO(num_particles=3), sf_guide)), num_particles=3,
            num_draws=DRAWS)


def _exact_grad():
    a = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    ga, gs = torch.autograd.grad(-exact_elbo(a, s), (a, s))
    return exact_elbo(a, s).item(), {"a": ga, "s": gs}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["elbo", "meanfield", "tracegraph", "iwae", "dreg"])
def test_unbiased_passes_for_every_elbo_estimator(name, seed):
    value, grad = _exact_grad()
    testing.assert_unbiased(model, guide, X, loss=name, exact_value=value, exact_grad=grad,
                            num_draws=DRAWS, seed=seed)


def test_unbiased_fails_for_another_objective_or_a_wrong_gradient():
    value, grad = _exact_grad()
    with pytest.raises(AssertionError, match=r"iwae\(K=5\) is biased.*\n  value: estimate"):
        testing.assert_unbiased(model, guide, X, loss="iwae", num_particles=5, exact_value=value)
    with pytest.raises(AssertionError, match=r"grad a: estimate"):
        testing.assert_unbiased(model, guide, X, loss="elbo", exact_grad={"a": 0.0})  # the optimum's


def test_gradient_draws_average_to_the_exact_gradient_and_leave_no_grad_behind():
    _, grad = _exact_grad()
    draws = testing.gradient_draws("elbo", model, guide, X, num_draws=DRAWS)
    assert draws.values.shape == (DRAWS,) and sorted(draws.grads) == ["a", "s"]
    for name, exact in grad.items():
        g = draws.grads[name]
        assert g.shape == (DRAWS,) and g.dtype == torch.float64
        # the mean of DRAWS reparameterised draws is within 4 standard errors of the closed form
        assert abs(g.mean() - exact) < 4 * g.std() / math.sqrt(DRAWS) + 1e-9
    store = pyro.get_param_store()
    assert all(store.get_param(n).unconstrained().grad is None for n in store.keys())
    only_a = testing.gradient_draws("elbo", model, guide, X, num_draws=3, names=["a"])
    assert list(only_a.grads) == ["a"]


# --- parameter ownership: every assertion on a store of its own ----------------------------

class NetGuide:
    """q(z_n) = N(net(x_n), 1), registered the way Pyro's tutorials do: pyro.module under a
    fixed name (so two instances share a name in the store)."""

    def __init__(self, seed):
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(1, 1).double()

    def guide(self, x):
        pyro.module("net", self.net)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.net(x[:, None])[:, 0], 1.0))


def _store():
    store = pyro.get_param_store()
    return {name: store._params[name] for name in store.keys()}


def _draws(guide_fn, **kwargs):
    pyro.set_rng_seed(4)
    return testing.gradient_draws("elbo", model, guide_fn, X, num_draws=5, **kwargs).grads


@pytest.mark.parametrize("order", ["fresh model first", "trained model first"])
def test_assertions_read_a_fixed_name_module_from_itself_not_from_the_store(order):
    # Before: a fresh module with the name of one trained before got the trained one's
    # weights in the global store (its gradients came out zero or the old module's).
    trained, fresh = NetGuide(1), NetGuide(2)
    if order == "fresh model first":
        expected = _draws(fresh.guide)
    pyro.get_param_store().clear()
    svi = pyro.infer.SVI(model, trained.guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(3):
        svi.step(X)
    before = _store()
    got = _draws(fresh.guide)
    assert _store() == before  # nothing added, removed or replaced in the caller's store
    if order == "trained model first":
        pyro.get_param_store().clear()
        expected = _draws(fresh.guide)
        assert _store() == {}
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    before = _store()
    testing.assert_gradients_agree(model, fresh.guide, X, losses=("elbo", "iwae"), num_draws=DRAWS)
    assert _store() == before


@pytest.mark.parametrize("order", ["empty store first", "trained value first"])
def test_assertions_take_bare_parameters_at_their_stored_values_and_leave_them(order):
    a, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    if order == "empty store first":
        testing.gradient_draws("elbo", model, guide, X, num_draws=3)
        assert _store() == {}  # its initial values did not stay behind
    pyro.param("a", a.clone())
    pyro.param("s", s.clone(), constraint=constraints.positive)
    before = {name: value.detach().clone() for name, value in _store().items()}
    exact = -exact_elbo(a, s).item()
    testing.assert_unbiased(model, guide, X, loss="elbo", exact_value=-exact, num_draws=DRAWS)
    for name, value in _store().items():  # the very tensors, unchanged and without gradients
        assert torch.equal(value, before[name]) and value.grad is None, name
    if order == "trained value first":
        pyro.clear_param_store()
        testing.gradient_draws("elbo", model, guide, X, num_draws=3)
        assert _store() == {}


@pytest.mark.parametrize("ks", [(1, 5), (5, 1)], ids=["K=1 then K=5", "K=5 then K=1"])
def test_tracegraph_baselines_of_one_call_never_reach_the_next(ks):
    # Before: "Expected baseline at site z to be (5, 12) instead got (12,)" in the second
    # call, from the baseline the first left in the global store.
    sf_guide = score_function_guide(guide)
    for k in ks:
        testing.assert_gradients_agree(model, sf_guide, X, losses=("tracegraph", "tracegraph"),
                                       num_particles=k, num_draws=DRAWS)
        assert not any(name.startswith("__baseline") for name in _store())
    # A baseline a user's own training left in the store is not carried in either.
    train.fit(lambda x, num_data=None: model(x), lambda x, num_data=None: sf_guide(x), X,
              loss="tracegraph", num_epochs=2, batch_size=12, progress=False)
    assert any(name.startswith("__baseline") for name in _store())
    testing.assert_gradients_agree(model, sf_guide, X, losses=("tracegraph", "elbo"),
                                   num_particles=5, num_draws=DRAWS)


# --- bad input at every door ----------------------------------------------------------------

def weighted_model(x, w):
    model(x * w)


def weighted_guide(x, w):
    guide(x * w)


BAD_DATA = {
    "a list": ([X.tolist()], "data must be a torch.Tensor, got list"),
    "a list of tensors": ([list(X)], "data must be a torch.Tensor, got list"),
    "0-dim": ([torch.tensor(1.0)], "data must have a leading data dimension"),
    "empty": ([torch.zeros(0, dtype=torch.float64)], "data must have at least 1 rows"),
    "NaN": ([torch.tensor([0.0, float("nan")])], "data contains NaN"),
    "inf": ([torch.tensor([math.inf, 0.0])], "data contains NaN or inf"),
    "None": ([None], "data must be a torch.Tensor, got NoneType"),
    "none for a pair that takes x": ([], "model cannot be called with the 0 data tensor.*'x'"),
    "two for a pair that takes one": ([X, X], "model cannot be called with the 2 data tensor"),
}
BAD_COUNTS = {"0": 0, "-1": -1, "2.5": 2.5, "True": True, "'3'": "3", "None": None,
              "nan": float("nan")}
BAD_FALSE_ALARMS = {"0": 0.0, "1": 1.0, "'0.1'": "0.1", "nan": float("nan"), "-0.1": -0.1}
#: Each public function with small settings, called on ``data`` with ``kwargs`` changed.
CALLS = {
    "check_pair": lambda data, **kw: testing.check_pair(model, guide, *data, **kw),
    "assert_bounds_ordered": lambda data, **kw: testing.assert_bounds_ordered(
        model, guide, *data, **{"num_draws": 2, "num_particles": (1, 2), "reference_particles": 2,
                                **kw}),
    "assert_gradients_agree": lambda data, **kw: testing.assert_gradients_agree(
        model, guide, *data, **{"num_draws": 2, "losses": ("elbo", "iwae"), **kw}),
    "assert_unbiased": lambda data, **kw: testing.assert_unbiased(
        model, guide, *data, **{"loss": "elbo", "exact_value": 0.0, "num_draws": 2, **kw}),
    "gradient_draws": lambda data, **kw: testing.gradient_draws(
        kw.pop("loss", "elbo"), model, guide, *data, **{"num_draws": 2, **kw}),
}
MONTE_CARLO = ("assert_bounds_ordered", "assert_gradients_agree", "assert_unbiased")

CASES = {
    # moved from tests/test_errors.py
    "assert_unbiased num_draws=1": (lambda: testing.assert_unbiased(
        model, guide, X, loss="elbo", exact_value=0.0, num_draws=1), "num_draws"),
    "check_pair model a string": (lambda: testing.check_pair("m", guide, X),
                                  "model must be callable, got str"),
    "check_pair guide None": (lambda: testing.check_pair(model, None, X), "guide must be callable"),
    "check_pair per_point='yes'": (lambda: testing.check_pair(model, guide, X, per_point="yes"),
                                   "per_point must be True or False"),
    "assert_unbiased model None": (lambda: testing.assert_unbiased(None, guide, X, loss="elbo",
                                                                   exact_value=0.0),
                                   "model must be callable, got NoneType"),
    "gradient_draws guide 3": (lambda: testing.gradient_draws("elbo", model, 3, X),
                               "guide must be callable, got int"),
    "check_pair unequal N": (lambda: testing.check_pair(weighted_model, weighted_guide, X,
                                                        torch.ones(3)),
                             "share their first dimension N"),
    "assert_unbiased unequal N": (lambda: testing.assert_unbiased(
        weighted_model, weighted_guide, X, torch.ones(3), loss="elbo", exact_value=0.0),
        "share their first dimension N"),
}
for _name, _call in CALLS.items():
    for _what, (_data, _words) in BAD_DATA.items():
        CASES[f"{_name} data={_what}"] = (lambda c=_call, d=_data: c(d), _words)
for _name in MONTE_CARLO:
    for _what, _value in BAD_COUNTS.items():
        CASES[f"{_name} num_draws={_what}"] = (lambda n=_name, v=_value: CALLS[n]([X], num_draws=v),
                                               "num_draws must be an integer >= 2")
        if _value != 0:
            CASES[f"{_name} seed={_what}"] = (lambda n=_name, v=_value: CALLS[n]([X], seed=v),
                                              "seed must be an integer >= 0")
    for _what, _value in BAD_FALSE_ALARMS.items():
        CASES[f"{_name} false_alarm={_what}"] = (
            lambda n=_name, v=_value: CALLS[n]([X], false_alarm=v), "false_alarm must be")
for _what, _value in BAD_COUNTS.items():
    CASES[f"gradient_draws num_draws={_what}"] = (
        lambda v=_value: CALLS["gradient_draws"]([X], num_draws=v), "num_draws must be a positive")
    for _name in ("assert_gradients_agree", "assert_unbiased"):
        CASES[f"{_name} num_particles={_what}"] = (
            lambda n=_name, v=_value: CALLS[n]([X], num_particles=v),
            "num_particles must be a positive integer")
    CASES[f"assert_bounds_ordered reference_particles={_what}"] = (
        lambda v=_value: CALLS["assert_bounds_ordered"]([X], reference_particles=v),
        "reference_particles must be a positive integer")
for _what, (_value, _words) in {
    "'elbo'": ("elbo", "losses must be a non-empty list or tuple of losses, got 'elbo'"),
    "[]": ([], "losses must be a non-empty list"), "None": (None, "losses must be"),
    "['nope']": (["nope"], r"losses\[0\] must be one of .* got 'nope'"),
    "[3]": ([3], r"losses\[0\] must be a loss name .* or an ELBO object"),
    "[('elbo',)]": ([("elbo",)], r"losses\[0\] must be a loss or a \(loss, guide\) tuple"),
}.items():
    CASES[f"assert_bounds_ordered losses={_what}"] = (
        lambda v=_value: CALLS["assert_bounds_ordered"]([X], losses=v), _words)
for _what, (_value, _words) in {
    "()": ((), r"losses\[1\] 'vimco' needs K >= 2"), "(1,) for vimco": ((1,), "'vimco' needs K >= 2"),
    "2.5": (2.5, "num_particles must be a sequence of particle counts"),
    "'5'": ("5", "num_particles must be a sequence"),
    "(0,)": ((0,), r"num_particles\[\] must be a positive integer, got 0"),
    "(2.5,)": ((2.5,), r"num_particles\[\] must be a positive integer, got 2.5"),
}.items():
    CASES[f"assert_bounds_ordered num_particles={_what}"] = (
        lambda v=_value: CALLS["assert_bounds_ordered"]([X], losses=("elbo", "vimco"),
                                                       num_particles=v), _words)
for _what, (_value, _words) in {
    "nan": (float("nan"), "log_likelihood must be finite"), "inf": (math.inf, "log_likelihood must be finite"),
    "'x'": ("x", "log_likelihood must be a number or a tensor, got str"),
    "[]": ([], "log_likelihood must be finite and non-empty"),
}.items():
    CASES[f"assert_bounds_ordered log_likelihood={_what}"] = (
        lambda v=_value: CALLS["assert_bounds_ordered"]([X], log_likelihood=v), _words)
for _what, (_value, _words) in {
    "'ab'": ("ab", "losses must be a list or tuple of the two losses compared, got 'ab'"),
    "one": (("elbo",), "two losses"), "None": (None, "two losses"),
    "('elbo', 'x')": (("elbo", "x"), r"losses\[1\] must be one of"),
    "(3, 'elbo')": ((3, "elbo"), r"losses\[0\] must be a loss name"),
}.items():
    CASES[f"assert_gradients_agree losses={_what}"] = (
        lambda v=_value: CALLS["assert_gradients_agree"]([X], losses=v), _words)
for _what, (_kwargs, _words) in {
    "neither exact": ({"exact_value": None}, "give exact_value, exact_grad or both"),
    "exact_value nan": ({"exact_value": float("nan")}, "exact_value must be finite"),
    "exact_value 'x'": ({"exact_value": "x"}, "exact_value must be a number or a tensor"),
    "exact_grad a list": ({"exact_grad": [0.0]}, r"exact_grad must be a dict \{param name: tensor\}"),
    "exact_grad unknown name": ({"exact_grad": {"b": 0.0}},
                                r"exact_grad: the model and guide register no parameters \['b'\]; "
                                r"they register \['a', 's'\]"),
    "exact_grad wrong shape": ({"exact_grad": {"a": torch.zeros(3)}},
                               r"exact_grad\['a'\] has shape \(3,\), which does not broadcast"),
    "exact_grad nan": ({"exact_grad": {"a": float("nan")}}, r"exact_grad\['a'\] must be finite"),
    "exact_grad int keys": ({"exact_grad": {1: 0.0}}, "exact_grad must name parameters by strings"),
    "loss 'nope'": ({"loss": "nope"}, "loss must be one of .* got 'nope'"),
    "loss 3": ({"loss": 3}, "loss must be a loss name"),
    "loss a 3-tuple": ({"loss": ("elbo", guide, 1)}, r"loss must be a loss or a \(loss, guide\)"),
}.items():
    CASES[f"assert_unbiased {_what}"] = (lambda kw=_kwargs: CALLS["assert_unbiased"]([X], **kw),
                                         _words)
CASES.update({
    "gradient_draws names=['b']": (lambda: CALLS["gradient_draws"]([X], names=["b"]),
                                   r"names: the model and guide register no parameters \['b'\]"),
    "gradient_draws names='a'": (lambda: CALLS["gradient_draws"]([X], names="a"),
                                 "names must name parameters by strings, got 'a'"),
    "gradient_draws loss None": (lambda: CALLS["gradient_draws"]([X], loss=None),
                                 "loss must be a loss name"),
})


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*CASES[case])
