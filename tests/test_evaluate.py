"""pyro_lvm.evaluate: log_weight_chunks, the weights chunk by chunk with the guide's draws;
bad arguments refused at every door before any work, naming the argument and the cause;
the data's values read once per call however many chunks the work takes; cluster_accuracy
against hand-counted matchings."""

import functools
import math
import warnings

import numpy as np
import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro.infer.autoguide import AutoNormal
from torch.distributions import Bernoulli, Normal

from helpers import M2_DATA, assert_refused, m2_guide, m2_log_likelihood, m2_model
from pyro_lvm import evaluate, train
from pyro_lvm.checks import check_values
from pyro_lvm.models import VAE


def _vae_and_data():
    torch.manual_seed(0)
    vae = VAE(x_dim=6, z_dim=2, hidden_dims=(4,)).double()
    x = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    return vae, x


# 3 rows x 6 pixels x 4 particles per pass: row blocks of 3, 3, 2 and particle chunks of
# 4, 4, 1 for K = 9 (a chunk of one particle, where Pyro has no particle plate).
CHUNKING = {"num_samples": 9, "batch_size": 3, "max_elements": 3 * 6 * 4}


def test_chunks_are_the_log_weights_and_each_draw_explains_its_weight():
    vae, x = _vae_and_data()
    pyro.set_rng_seed(2)
    every = evaluate.log_weights(vae.model, vae.guide, x, **CHUNKING)
    pyro.set_rng_seed(2)
    chunks = list(evaluate.log_weight_chunks(vae.model, vae.guide, x, return_sites=("z",), **CHUNKING))
    assert [(c.rows, c.log_w.shape[0]) for c in chunks] == [
        (rows, k) for rows in (slice(0, 3), slice(3, 6), slice(6, 8)) for k in (4, 4, 1)]
    gathered = torch.cat([torch.cat([c.log_w for c in chunks[i:i + 3]]) for i in (0, 3, 6)], 1)
    assert torch.equal(gathered, every)  # the same draws as log_weights
    for rows, log_w, values in chunks:
        z = values["z"]
        assert z.shape == (log_w.shape[0], rows.stop - rows.start, 2)
        loc, scale = vae.encode(x[rows])
        recomputed = (Normal(0.0, 1.0).log_prob(z).sum(-1)
                      + Bernoulli(logits=vae.decoder(z)).log_prob(x[rows]).sum(-1)
                      - Normal(loc, scale).log_prob(z).sum(-1))
        assert torch.allclose(log_w, recomputed, atol=1e-10, rtol=0)  # values[j] is log_w[j]'s


def test_the_loop_body_runs_in_the_callers_state():
    vae, x = _vae_and_data()
    pyro.param("mine", torch.ones(2))
    with pyro.validation_enabled(True):
        for _ in evaluate.log_weight_chunks(vae.model, vae.guide, x, **CHUNKING):
            assert set(pyro.get_param_store().keys()) == {"mine"}  # not the evaluation's store
            assert torch.is_grad_enabled() and check_values()


BAD_INPUT = {
    "return_sites a string": ({"return_sites": "z"}, "return_sites must be a tuple of site names"),
    "return_sites of numbers": ({"return_sites": (0,)}, "return_sites must be a tuple of site names"),
    "num_samples=0": ({"num_samples": 0}, "num_samples must be a positive integer"),
    "max_elements=2.5": ({"max_elements": 2.5}, "max_elements must be a positive integer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_at_the_call(case):
    vae, x = _vae_and_data()
    kwargs, words = BAD_INPUT[case]
    with pyro.validation_enabled(False), pytest.raises(ValueError, match=words):
        evaluate.log_weight_chunks(vae.model, vae.guide, x, **kwargs)  # not iterated


def test_a_site_the_guide_does_not_sample_is_named():
    vae, x = _vae_and_data()
    with pytest.raises(ValueError, match="return_sites names 'x', which is not a sample site of the guide"):
        next(evaluate.log_weight_chunks(vae.model, vae.guide, x, return_sites=("x",)))


# --- bad input at every door, values read once ---------------------------------------------

def small_vae():
    return VAE(x_dim=6, z_dim=2, hidden_dims=(4,))


def binary(n=8, d=6, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=dtype),
                           generator=torch.Generator().manual_seed(0))


def call(name, x, **kwargs):
    vae = small_vae()
    return getattr(evaluate, name)(vae.model, vae.guide, x, **kwargs)


def with_value(value, at=(1, 2)):
    x = binary()
    x[at] = value
    return x


#: For each estimator, its count argument (num_particles for elbo, num_samples otherwise).
COUNT = {"elbo": "num_particles", "log_likelihood": "num_samples", "log_weights": "num_samples",
         "log_weight_chunks": "num_samples"}

#: Bad data as a new user might pass them, and the words the message must hold.
BAD_DATA = {
    "list of rows": ([[0.0] * 6] * 8, "x must be a tensor .* got a list; pass torch.stack"),
    "list of tensors": (list(binary()), "got a list"),
    "0-dim": (torch.tensor(1.0), "x must have a leading data dimension"),
    "empty": (torch.zeros(0, 6), "x must have at least 1 rows"),
    "NaN": (with_value(float("nan")), "x contains NaN"),
    "inf": (with_value(float("inf")), "x contains NaN or inf"),
    "int": (binary().long(), "x .*floating"),
    "float64": (binary(dtype=torch.float64), r"x .*torch.float32"),
    "width 5": (binary(8, 5), r"x must have shape \(B, 6\)"),
    "1-dim": (torch.ones(6), r"x must have shape \(B, 6\)"),
    "grey levels 0-3 for a Bernoulli": (binary() * 3, r"x must lie in \[0.0, 1.0\]"),
    "string": ("x", "x must be a tensor .* got str"),
    "None": (None, "x must be a tensor .* got NoneType"),
}
BAD_COUNTS = {"0": 0, "-1": -1, "2.5": 2.5, "True": True, "'3'": "3", "None": None,
              "nan": float("nan")}

CASES = {
    # moved from tests/test_errors.py
    "log_weights batch_size=-1": (lambda: call("log_weights", binary(), num_samples=2,
                                               batch_size=-1), "batch_size"),
    "elbo NaN data, validation off": (lambda: call("elbo", with_value(float("nan"))),
                                      "x contains NaN"),
    "elbo width 5": (lambda: call("elbo", binary(8, 5)), r"x must have shape \(B, 6\)"),
    "elbo float64": (lambda: call("elbo", binary(dtype=torch.float64)), "x .*torch.float32"),
    "elbo empty": (lambda: call("elbo", torch.zeros(0, 6)), "x must have at least 1 rows"),
    "elbo num_particles=0.5": (lambda: call("elbo", binary(), num_particles=0.5), "num_particles"),
    "log_likelihood num_samples=2.5": (lambda: call("log_likelihood", binary(), num_samples=2.5),
                                       "num_samples"),
    "log_likelihood batch_size=0": (lambda: call("log_likelihood", binary(), num_samples=2,
                                                 batch_size=0), "batch_size"),
    "log_weights max_elements=0": (lambda: call("log_weights", binary(), num_samples=2,
                                                max_elements=0), "max_elements"),
    "cluster_accuracy float labels": (lambda: evaluate.cluster_accuracy([0.5, 1.0], [0, 1]),
                                      "labels"),
}
for _name, _count in COUNT.items():
    for _what, (_x, _words) in BAD_DATA.items():
        CASES[f"{_name} x={_what}"] = (lambda n=_name, c=_count, x=_x: call(n, x, **{c: 2}), _words)
    for _what, _value in BAD_COUNTS.items():
        for _arg in (_count, "batch_size", "max_elements"):
            if _arg == "batch_size" and _value is None:  # None: the default, as many as fit
                continue
            CASES[f"{_name} {_arg}={_what}"] = (
                lambda n=_name, c=_count, a=_arg, v=_value: call(n, binary(), **{c: 2, a: v}),
                f"{_arg} must be a positive integer")
    CASES[f"{_name} model not callable"] = (
        lambda n=_name: getattr(evaluate, n)("model", small_vae().guide, binary()),
        "model must be callable, got str")
    CASES[f"{_name} guide None"] = (
        lambda n=_name: getattr(evaluate, n)(small_vae().model, None, binary()),
        "guide must be callable, got NoneType")
    CASES[f"{_name} no data"] = (lambda n=_name: getattr(evaluate, n)(small_vae().model,
                                                                      small_vae().guide),
                                 "x must be a tensor")
for _what, (_labels, _clusters, _words) in {
    "floats": ([0.5, 1.0], [0, 1], "labels must be non-negative integers, got dtype float64"),
    "bools": (torch.tensor([True, False]), [0, 1], "labels .* got dtype bool"),
    "negative": ([-1, 0], [0, 1], "labels must be non-negative integers, got min -1"),
    "2-dim": (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long),
              r"labels must be a non-empty \(N,\) sequence .* of shape \(2, 2\)"),
    "empty": ([], [], r"labels must be a non-empty \(N,\) sequence .* list of shape \(0,\)"),
    "0-dim": (torch.tensor(1), torch.tensor(1), r"labels must be a non-empty \(N,\)"),
    "unequal lengths": ([0, 1, 1], [0, 1], r"two \(N,\) sequences of one length"),
    "strings": (["a", "b"], [0, 1], "labels must be non-negative integers"),
    "ragged": ([[0], [1, 2]], [0, 1], "labels must be a sequence of non-negative integers"),
    "None": (None, [0], r"labels must be a non-empty \(N,\) sequence of integers, got NoneType"),
    "NaN clusters": ([0, 1], torch.tensor([float("nan"), 1.0]), "clusters .* dtype float32"),
}.items():
    CASES[f"cluster_accuracy {_what}"] = (
        lambda a=_labels, b=_clusters: evaluate.cluster_accuracy(a, b), _words)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*CASES[case])


def plain_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def plain_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.5 * x, 1.0))


@pytest.mark.parametrize("name", list(COUNT))
@pytest.mark.parametrize("pair", ["VAE (declares check_inputs)", "plain functions"])
def test_the_data_values_are_read_once_however_many_chunks(name, pair, monkeypatch):
    # Every value check (check_data, the models' bodies) reads torch.isfinite of the data.
    # At e0e083a log_likelihood of 1,000 images at K=1000 read them 203 times (once per
    # chunk, in model and guide), at bda6efb twice (the door's check_tensors, then the
    # model's check_inputs); here 4 row blocks x 10 particle passes = 40 chunks read once.
    if pair == "plain functions":
        model, guide, x = plain_model, plain_guide, torch.linspace(-2, 2, 40)
    else:
        vae = small_vae()
        model, guide, x = vae.model, vae.guide, binary(40)
    reads = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: reads.append(tuple(t.shape)) or isfinite(t))
    width = max(1, x[0].numel())
    result = getattr(evaluate, name)(model, guide, x, batch_size=10, max_elements=100 * width,
                                     **{COUNT[name]: 100})
    if name == "log_weight_chunks":
        assert len(list(result)) == 40
    assert reads == [tuple(x.shape)]


def test_cluster_accuracy_matches_clusters_to_labels():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert evaluate.cluster_accuracy(labels, torch.tensor([2, 2, 0, 0, 1, 1])) == 1.0
    assert evaluate.cluster_accuracy(labels, torch.tensor([0, 0, 0, 0, 1, 1])) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match=r"two (non-empty )?\(N,\)"):
        evaluate.cluster_accuracy(labels, torch.tensor([0, 1]))
    # lists and numpy arrays are label sequences too
    assert evaluate.cluster_accuracy([0, 0, 1], np.array([1, 1, 0])) == 1.0


# --- bare parameters the store does not hold ---------------------------------------------

def _bare_model(x, num_data=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _bare_guide(x, num_data=None):
    a = pyro.param("a", torch.tensor(0.0))
    s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(a * x, s))


@pytest.mark.parametrize("order", ["trained first", "untrained first"])
def test_scoring_bare_parameters_at_their_initial_values_is_said(order):
    # Before: after a store was cleared (e.g. by the next fit) evaluate scored the initial
    # values without a word (-4.504 nats became -7.850 in the example).
    x = torch.linspace(-3.0, 3.0, 12)
    said = "parameters \\['a', 's'\\] are not in Pyro's param store.*initial values"

    def trained():
        train.fit(_bare_model, _bare_guide, x, num_epochs=200, batch_size=12, lr=0.05,
                  progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning for trained parameters
            return evaluate.elbo(_bare_model, _bare_guide, x, num_particles=200).mean()

    def untrained():
        pyro.clear_param_store()
        with pytest.warns(UserWarning, match=said):
            return evaluate.elbo(_bare_model, _bare_guide, x, num_particles=200).mean()

    first, second = (trained, untrained) if order == "trained first" else (untrained, trained)
    values = {f.__name__: f() for f in (first, second)}
    assert values["trained"] > values["untrained"] + 0.5  # the posterior is a = 0.5, s = 0.71


def test_an_autoguide_holding_trained_values_is_scored_without_the_warning():
    # A PyroModule (an autoguide) keeps its own tensors: after pyro.clear_param_store() (or in
    # a new process, after torch.load) it writes them into the store itself, and they are
    # the trained values, not initial ones; only a guide that evaluate initialises is named.
    x = torch.linspace(-3.0, 3.0, 12)

    def model(x, num_data=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    guide = AutoNormal(model)
    train.fit(model, guide, x, num_epochs=100, batch_size=12, lr=0.05, progress=False)
    pyro.set_rng_seed(0)
    trained = evaluate.elbo(model, guide, x, num_particles=50)
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyro.set_rng_seed(0)
        assert torch.equal(evaluate.elbo(model, guide, x, num_particles=50), trained)
    with pytest.warns(UserWarning, match=r"parameters \['AutoNormal.locs.mu', 'AutoNormal.scales.mu'\] "
                                         "are not in Pyro's param store"):
        evaluate.elbo(model, AutoNormal(model), x, num_particles=50)


# --- masks: a latent scored by the guide where the model observes it ----------------------

M2_MISTAKES = {  # each written as a user would, on the M2 pair of tests/helpers.py
    "the label scored on every row": (
        functools.partial(m2_guide, mask=True),
        r"pair cannot be evaluated as it is \(1 problem\(s\)\):\n  - site 'y_unobserved' is "
        r"scored by the guide on 4 element\(s\) where the model masks it out \(there it is "
        r"observed, e.g. by obs_mask\): log p and log q count different elements, so every "
        r"bound is wrong; mask the guide's site the same way \(poutine.mask\(mask=...\) or "
        r"\.mask\(...\)\)$"),
    "the mask inverted": (
        functools.partial(m2_guide, mask=M2_DATA[2]),
        r"(?s)\(2 problem\(s\)\):\n  - site 'y_unobserved' is scored by the guide on 4 "
        r"element\(s\) where the model masks it out.*\n  - site 'y_unobserved' is scored by the "
        r"model on 4 element\(s\) where the guide masks it out.*mask the model's site"),
}


@pytest.mark.parametrize("name", list(COUNT))
@pytest.mark.parametrize("k", [1, 10])  # without and with the particle plate: same count
@pytest.mark.parametrize("mistake", list(M2_MISTAKES))
def test_a_guide_scoring_a_latent_where_the_model_observes_it_is_refused(name, k, mistake):
    # Before: the unmasked guide gave -13.49 nats against the exact -16.26 at K = 5000.
    guide, message = M2_MISTAKES[mistake]
    for data in (M2_DATA, (M2_DATA,)):  # several tensors, or one tuple of them
        with pytest.raises(ValueError, match=message):
            result = getattr(evaluate, name)(m2_model, guide, *data, **{COUNT[name]: k})
            next(iter(result))  # log_weight_chunks refuses on its first chunk


def test_the_correctly_masked_guide_is_scored_within_monte_carlo_error():
    pyro.set_rng_seed(0)
    pyro.param("a", torch.tensor(1.0))  # q(y = 1 | x) = sigmoid(x); the posterior's is sigmoid(2x)
    exact = m2_log_likelihood(*M2_DATA)
    log_w = evaluate.log_weights(m2_model, m2_guide, *M2_DATA, num_samples=5000, batch_size=3)
    # Per point, log mean w has standard error std(w) / (sqrt(K) mean(w)) (the delta method);
    # labelled rows have no latent, so their weight is exact (up to float32 rounding).
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (math.sqrt(len(w)) * w.mean(0))
    estimate = log_w.logsumexp(0) - math.log(len(w))
    assert torch.allclose(estimate[M2_DATA[2]], exact[M2_DATA[2]], atol=1e-5, rtol=0)
    assert torch.all((estimate - exact).abs() <= 4 * se + 1e-6), (estimate, exact, se)
    assert abs(float(estimate.sum() - exact.sum())) <= 4 * float(se.pow(2).sum().sqrt()) + 1e-5
