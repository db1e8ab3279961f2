"""Model/guide cases of Pyro's own inference tests, written afresh for our losses.

Sources (pyro-ppl/pyro, ``tests/infer/``): ``test_valid_models.py`` (valid pairs
that Pyro's ``Trace_ELBO`` must train, and invalid ones it must refuse),
``test_gradient.py`` (gradients with closed forms) and the conjugate models of
``test_inference.py`` (posteriors in closed form).  Each :class:`Case` names the
Pyro test (and parameters) it comes from.  Enumeration-only, TMC, energy-distance,
tail-adaptive, MMD and funsor tests are not covered: they test losses we do not have.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.distributions import constraints

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.distributions.testing import fakes
from pyro.poutine.plate_messenger import block_plate


@dataclass
class Case:
    """One model/guide pair.  ``valid``: Pyro's ``Trace_ELBO`` trains it (else it must
    raise).  ``check(loss_name, case)``: extra assertions (closed forms) for valid
    cases; it raises ``AssertionError`` when the loss is wrong."""

    name: str
    source: str
    model: Callable
    guide: Callable
    valid: bool = True
    args: tuple = ()
    check: Callable | None = None
    tags: set = field(default_factory=set)


CASES: list[Case] = []


def case(name, source, valid=True, args=(), check=None, tags=()):
    def register(build):
        model, guide = build()
        CASES.append(Case(name, source, model, guide, valid, args, check, set(tags)))
        return build
    return register


def half():
    return torch.tensor(0.5)


def trainable_p():
    return pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)


# ----------------------------------------------------------------- test_valid_models.py
V = "test_valid_models.py::"


@case("observed_only", V + "test_nonempty_model_empty_guide_ok")
def _():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=torch.zeros(2))
    return model, lambda: None


@case("latent_without_guide", V + "test_nonempty_model_empty_guide_error", valid=False)
def _():
    return (lambda: pyro.sample("x", dist.Normal(0.0, 1.0))), (lambda: None)


@case("empty", V + "test_empty_model_empty_guide_ok")
def _():
    return (lambda: None), (lambda: None)


def _bernoulli_twice(where):
    def model():
        pyro.sample("x", dist.Bernoulli(half()))
        if where == "model":
            pyro.sample("x", dist.Bernoulli(half()))

    def guide():
        pyro.sample("x", dist.Bernoulli(trainable_p()))
        if where == "guide":
            pyro.sample("x", dist.Bernoulli(trainable_p()))
    return model, guide


case("name_clash_in_model", V + "test_variable_clash_in_model_error", valid=False)(
    lambda: _bernoulli_twice("model"))
case("name_clash_in_guide", V + "test_variable_clash_in_guide_error", valid=False)(
    lambda: _bernoulli_twice("guide"))


@case("event_dims_disagree", V + "test_model_guide_dim_mismatch_error", valid=False)
def _():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1))
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(2))
    return model, guide


@case("shapes_disagree", V + "test_model_guide_shape_mismatch_error", valid=False)
def _():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(1, 2), 1.0).to_event(2))

    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1))
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(2))
    return model, guide


def _sparse_gradient(rsample):
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal((100 * z).clamp(0, 1), 1.0), obs=torch.tensor(0.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0).has_rsample_(rsample))
    return model, guide


for _r in (False, True):
    case(f"has_rsample_{_r}", V + f"test_set_has_rsample_ok[{_r}]")(lambda r=_r: _sparse_gradient(r))


@case("not_reparameterised", V + "test_not_has_rsample_ok")
def _():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Bernoulli(z.round().clamp(0.2, 0.8)), obs=torch.tensor(0.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0).has_rsample_(False))
    return model, guide


SUBSAMPLE = {"full": None, "subsample": "sub"}


def _sequential(sub):
    def both(p):
        for i in pyro.plate("plate", 4, sub):
            pyro.sample(f"x_{i}", dist.Bernoulli(p()))
    return (lambda: both(half)), (lambda: both(trainable_p))


for _s, _n in (("full", None), ("subsample", 2)):
    case(f"sequential_plate_{_s}", V + f"test_iplate_ok[{_s}]")(lambda n=_n: _sequential(n))


@case("sequential_plate_name_clash", V + "test_iplate_variable_clash_error", valid=False)
def _():
    def both(p):
        for _ in pyro.plate("plate", 2):
            pyro.sample("x", dist.Bernoulli(p()))
    return (lambda: both(half)), (lambda: both(trainable_p))


def _vector_plate(sub, kind):
    def model():
        with pyro.plate("plate", 10, sub) as rows:
            pyro.sample("x", dist.Bernoulli(half()).expand_by([len(rows)]))

    def guide():
        with pyro.plate("plate", 10, sub) as rows:
            if kind == "param":
                assert pyro.param("p0", torch.tensor(0.0), event_dim=0).shape == ()
                p = pyro.param("p", 0.5 * torch.ones(10), event_dim=0)
            elif kind == "primitive":
                assert pyro.subsample(torch.tensor(0.0), event_dim=0).shape == ()
                p = pyro.subsample(0.5 * torch.ones(10), event_dim=0)
            else:
                p = trainable_p().expand(len(rows))
            assert len(p) == len(rows)
            pyro.sample("x", dist.Bernoulli(p))
    return model, guide


for _s, _n in (("full", None), ("subsample", 5)):
    case(f"plate_{_s}", V + f"test_plate_ok[{_s}]")(lambda n=_n: _vector_plate(n, "plain"))
    case(f"plate_local_param_{_s}", V + f"test_plate_subsample_param_ok[{_s}]")(
        lambda n=_n: _vector_plate(n, "param"))
    case(f"plate_subsample_primitive_{_s}", V + f"test_plate_subsample_primitive_ok[{_s}]")(
        lambda n=_n: _vector_plate(n, "primitive"))


def _param_size(sub, shape):
    def model():
        with pyro.plate("plate", 10, sub):
            pyro.sample("x", dist.Bernoulli(half()))

    def guide():
        with pyro.plate("plate", 10, sub):
            pyro.param("p0", torch.ones(shape), event_dim=0)
            pyro.sample("x", dist.Bernoulli(pyro.param("p", torch.ones(10), event_dim=0)))
    return model, guide


for _s, _n in (("full", None), ("subsample", 5)):
    for _shape, _ok in (((), True), ((1,), True), ((10,), True), ((3, 1), True), ((3, 10), True),
                        ((5,), False), ((3, 5), False)):
        case(f"local_param_shape_{_shape}_{_s}", V + f"test_plate_param_size_mismatch_error[{_shape}-{_s}]",
             valid=_ok)(lambda n=_n, sh=_shape: _param_size(n, sh))


@case("plate_without_size", V + "test_plate_no_size_ok")
def _():
    def both(p):
        with pyro.plate("plate"):
            pyro.sample("x", dist.Bernoulli(p()).expand_by([10]))
    return (lambda: both(half)), (lambda: both(trainable_p))


def _two_sequential(sub, swap):
    def run(p, swapped):
        outer, inner = pyro.plate("plate_0", 3, sub), pyro.plate("plate_1", 3, sub)
        pairs = ([(i, j) for j in inner for i in outer] if swapped
                 else [(i, j) for i in outer for j in inner])
        for i, j in pairs:
            pyro.sample(f"x_{i}_{j}", dist.Bernoulli(p()))
    return (lambda: run(half, False)), (lambda: run(trainable_p, swap))


for _s, _n in (("full", None), ("subsample", 2)):
    case(f"sequential_in_sequential_{_s}", V + f"test_iplate_iplate_ok[{_s}]")(
        lambda n=_n: _two_sequential(n, False))
    case(f"sequential_in_sequential_swapped_{_s}", V + f"test_iplate_iplate_swap_ok[{_s}]")(
        lambda n=_n: _two_sequential(n, True))


def _plate_only_in(where, sub):
    def run(p, with_plate):
        if with_plate:
            for _ in pyro.plate("plate", 10, sub):
                pass
        pyro.sample("x", dist.Bernoulli(p()))
    return (lambda: run(half, where == "model")), (lambda: run(trainable_p, where == "guide"))


for _s, _n in (("full", None), ("subsample", 5)):
    case(f"plate_only_in_model_{_s}", V + f"test_iplate_in_model_not_guide_ok[{_s}]")(
        lambda n=_n: _plate_only_in("model", n))
    case(f"plate_only_in_guide_{_s}", V + f"test_iplate_in_guide_not_model_error[{_s}-validate]",
         valid=False)(lambda n=_n: _plate_only_in("guide", n))


@case("plate_broadcast_clash", V + "test_plate_broadcast_error", valid=False)
def _():
    def model():
        with pyro.plate("plate", 10, 5):
            pyro.sample("x", dist.Bernoulli(half()).expand_by([2]))
    return model, model


def _mixed(order):
    def run(p):
        vector = pyro.plate("plate", 3, 2)
        if order == "vector_outside":
            with vector as rows:
                for i in pyro.plate("iplate", 3, 2):
                    pyro.sample(f"x_{i}", dist.Bernoulli(p()).expand_by([len(rows)]))
        else:
            for i in pyro.plate("iplate", 3, 2):
                with vector as rows:
                    pyro.sample(f"x_{i}", dist.Bernoulli(p()).expand_by([len(rows)]))
    return (lambda: run(half)), (lambda: run(trainable_p))


case("sequential_inside_plate", V + "test_plate_iplate_ok")(lambda: _mixed("vector_outside"))
case("plate_inside_sequential", V + "test_iplate_plate_ok")(lambda: _mixed("sequential_outside"))


def _stack(sizes, extra):
    def run(p):
        with pyro.plate_stack("plate_stack", sizes):
            if extra:
                with pyro.plate("plate", 7):
                    pyro.sample("x", dist.Bernoulli(p()))
            else:
                pyro.sample("x", dist.Bernoulli(p()))
    return (lambda: run(half)), (lambda: run(trainable_p))


for _sizes in ((3,), (3, 4), (3, 4, 5)):
    case(f"plate_stack_{_sizes}", V + f"test_plate_stack_ok[{_sizes}]")(lambda s=_sizes: _stack(s, False))
    case(f"plate_stack_and_plate_{_sizes}", V + f"test_plate_stack_and_plate_ok[{_sizes}]")(
        lambda s=_sizes: _stack(s, True))


def _nested(error=None):
    def model():
        p = torch.tensor([0.5]) if error else torch.tensor(0.5)
        with pyro.plate("plate_outer", 10, 5) as outer:
            shape_x = [len(outer)] if error in (None, 1) else [len(outer), 1]
            pyro.sample("x", dist.Bernoulli(p).expand_by(shape_x))
            with pyro.plate("plate_inner", 11, 6) as inner:
                if error is None:
                    pyro.sample("y", dist.Bernoulli(p).expand_by([len(inner), len(outer)]))
                    return
                shape_y = [len(outer)] if error == 2 else [len(inner)]
                pyro.sample("y", dist.Bernoulli(p).expand_by(shape_y))
                shape_z = {1: [len(outer), len(inner)], 2: [len(outer), len(inner)],
                           3: [len(inner), 1], 4: [len(outer), len(outer)]}[error]
                pyro.sample("z", dist.Bernoulli(p).expand_by(shape_z))
    return model, model


case("nested_plates", V + "test_nested_plate_plate_ok")(lambda: _nested())
for _e in (1, 2, 3, 4):
    case(f"nested_plates_bad_shape_{_e}", V + f"test_nested_plate_plate_dim_error_{_e}", valid=False)(
        lambda e=_e: _nested(e))


@case("plate_reuse", V + "test_plate_reuse_ok")
def _():
    def model():
        p = torch.tensor(0.5)
        outer, inner = pyro.plate("plate_outer", 10, 5, dim=-1), pyro.plate("plate_inner", 11, 6, dim=-2)
        with outer as i:
            pyro.sample("x", dist.Bernoulli(p).expand_by([len(i)]))
        with inner as j:
            pyro.sample("y", dist.Bernoulli(p).expand_by([len(j), 1]))
        with outer as i, inner as j:
            pyro.sample("z", dist.Bernoulli(p).expand_by([len(j), len(i)]))
    return model, model


@case("nested_plates_local_params", V + "test_nested_plate_plate_subsample_param_ok")
def _():
    def model():
        with pyro.plate("plate_outer", 10, 5):
            pyro.sample("x", dist.Bernoulli(0.2))
            with pyro.plate("plate_inner", 11, 6):
                pyro.sample("y", dist.Bernoulli(0.2))

    def guide():
        assert pyro.param("p0", 0.5 * torch.ones(4, 5), event_dim=2).shape == (4, 5)
        with pyro.plate("plate_outer", 10, 5):
            assert pyro.param("p1", 0.5 * torch.ones(10, 3), event_dim=1).shape == (5, 3)
            pyro.sample("x", dist.Bernoulli(pyro.param("px", 0.5 * torch.ones(10), event_dim=0)))
            with pyro.plate("plate_inner", 11, 6):
                pyro.sample("y", dist.Bernoulli(pyro.param("py", 0.5 * torch.ones(11, 10), event_dim=0)))
    return model, guide


@case("two_separate_plates", V + "test_nonnested_plate_plate_ok")
def _():
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate_0", 10, 5) as i:
            pyro.sample("x0", dist.Bernoulli(p).expand_by([len(i)]))
        with pyro.plate("plate_1", 11, 6) as j:
            pyro.sample("x1", dist.Bernoulli(p).expand_by([len(j)]))
    return model, model


@case("plates_at_three_depths", V + "test_three_indep_plate_at_different_depths_ok")
def _():
    def run(p):
        inner = pyro.plate("plate2", 10, 5)
        for i in pyro.plate("plate0", 2):
            pyro.sample(f"x_{i}", dist.Bernoulli(p()))
            if i == 0:
                for j in pyro.plate("plate1", 2):
                    with inner as rows:
                        pyro.sample(f"y_{j}", dist.Bernoulli(p()).expand_by([len(rows)]))
            else:
                with inner as rows:
                    pyro.sample("z", dist.Bernoulli(p()).expand_by([len(rows)]))
    return (lambda: run(half)), (lambda: run(trainable_p))


@case("plate_wrong_size", V + "test_plate_wrong_size_error", valid=False)
def _():
    def run(p):
        with pyro.plate("plate", 10, 5) as rows:
            pyro.sample("x", dist.Bernoulli(p()).expand_by([1 + len(rows)]))
    return (lambda: run(half)), (lambda: run(trainable_p))


def _blocked(by):
    def block():
        return block_plate("plate") if by == "name" else block_plate(dim=-1)

    def model():
        assert pyro.sample("a", dist.Normal(0.0, 1.0)).shape == ()
        with pyro.plate("plate", 2):
            assert pyro.sample("b", dist.Normal(0.0, 1.0)).shape == (2,)
            with block():
                assert pyro.sample("c", dist.Normal(0.0, 1.0)).shape == ()

    def guide():
        assert pyro.sample("c", dist.Normal(pyro.param("c_loc", torch.tensor(0.0)), 1.0)).shape == ()
        with pyro.plate("plate", 2):
            assert pyro.sample("b", dist.Normal(0.0, 1.0)).shape == (2,)
            with block():
                assert pyro.sample("a", dist.Normal(0.0, 1.0)).shape == ()
    return model, guide


case("block_plate_by_name", V + "test_block_plate_name_ok")(lambda: _blocked("name"))
case("block_plate_by_dim", V + "test_block_plate_dim_ok")(lambda: _blocked("dim"))


@case("block_missing_plate", V + "test_block_plate_missing_error", valid=False)
def _():
    def model():
        with block_plate("plate"):
            pyro.sample("a", dist.Normal(0.0, 1.0))
    return model, lambda: pyro.sample("a", dist.Normal(0.0, 1.0))


@case("factor_in_model", V + "test_factor_in_model_ok")
def _():
    return (lambda: pyro.factor("f", torch.tensor(0.0))), (lambda: None)


@case("factor_in_guide_unspecified", V + "test_factor_in_guide_error", valid=False)
def _():
    return (lambda: None), (lambda: pyro.factor("f", torch.tensor(0.0)))


for _r in (False, True):
    case(f"factor_in_guide_has_rsample_{_r}", V + f"test_factor_in_guide_ok[{_r}]")(
        lambda r=_r: ((lambda: None), (lambda: pyro.factor("f", torch.tensor(0.0), has_rsample=r))))


def _chain(mask=None):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).mask(True if mask is None else mask))
        pyro.sample("y", dist.Normal(x, 1.0))

    def guide():
        x = pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0)
                        .mask(True if mask is None else mask))
        pyro.sample("y", dist.Normal(x, 1.0))
    return model, guide


case("mean_field", V + "test_mean_field_ok")(lambda: _chain())
for _m in (True, False):
    case(f"mean_field_mask_{_m}", V + f"test_mean_field_mask_ok[{_m}]")(lambda m=_m: _chain(m))


def _reparam_pair(mask=None, scale=None):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with poutine.mask(mask=True if mask is None else mask), poutine.scale(scale=1.0 if scale is None else scale):
            pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.0))

    def guide():
        pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))
    return model, guide


case("reparameterised", V + "test_reparam_ok")(lambda: _reparam_pair())
for _m in (True, False, torch.tensor(True), torch.tensor(False)):
    case(f"masked_observation_{_m!r}", V + f"test_reparam_mask_ok[{_m!r}]")(lambda m=_m: _reparam_pair(mask=m))
for _sc in (1, 0.1, torch.tensor(0.5)):
    case(f"scaled_observation_{_sc!r}", V + f"test_reparam_scale_ok[{_sc!r}]")(lambda s=_sc: _reparam_pair(scale=s))


DIRICHLET_DATA = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])


def _dirichlet(mask=None, scale=None):
    def model():
        c = pyro.sample("c", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", 2), poutine.mask(mask=True if mask is None else mask), \
                poutine.scale(scale=1.0 if scale is None else scale):
            pyro.sample("obs", dist.Dirichlet(c), obs=DIRICHLET_DATA)

    def guide():
        loc = pyro.param("loc", torch.zeros(3))
        scale_ = pyro.param("scale", torch.ones(3), constraint=constraints.positive)
        pyro.sample("c", dist.LogNormal(loc, scale_).to_event(1))
    return model, guide


for _m in (True, False, torch.tensor(True), torch.tensor(False), torch.tensor([False, True])):
    case(f"global_masked_plate_{_m!r}", V + f"test_reparam_mask_plate_ok[{_m!r}]")(lambda m=_m: _dirichlet(mask=m))
for _sc in (1, 0.1, torch.tensor(0.5), torch.tensor([0.1, 0.9])):
    case(f"global_scaled_plate_{_sc!r}", V + f"test_reparam_scale_plate_ok[{_sc!r}]")(
        lambda s=_sc: _dirichlet(scale=s))


def _obs_mask(mask, multivariate):
    data = torch.full((4, 3), 7.0) if multivariate else torch.full((3,), 7.0)

    def prior(loc=None):
        if multivariate:
            return dist.MultivariateNormal(torch.zeros(3) if loc is None else loc, torch.eye(3))
        return dist.Normal(0.0 if loc is None else loc, 1.0)

    def model():
        x = pyro.sample("x", prior())
        with pyro.plate("plate", len(data)):
            pyro.sample("y", prior(x), obs=data, obs_mask=mask)

    def guide():
        loc = pyro.param("loc", torch.zeros(3) if multivariate else torch.tensor(0.0))
        x = pyro.sample("x", prior(loc) if multivariate else dist.Normal(
            loc, pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)))
        with pyro.plate("plate", len(data)), poutine.mask(mask=~mask):
            pyro.sample("y_unobserved", prior(x))
    return model, guide


for _m in (torch.tensor(True), torch.tensor(False), torch.tensor([True]), torch.tensor([False]),
           torch.tensor([False, True, False])):
    case(f"obs_mask_{_m.tolist()}", V + f"test_obs_mask_ok[{_m.tolist()}]")(lambda m=_m: _obs_mask(m, False))
for _m in (torch.tensor(True), torch.tensor([False]), torch.tensor([False, True, True, False])):
    case(f"obs_mask_multivariate_{_m.tolist()}", V + f"test_obs_mask_multivariate_ok[{_m.tolist()}]")(
        lambda m=_m: _obs_mask(m, True))


@case("obs_mask_with_event_dims", V + "test_obs_mask_multivariate_error", valid=False)
def _():
    mask = torch.tensor([[False, False], [False, True], [True, False]])

    def model():
        x = pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))
        with pyro.plate("plate", 3):
            pyro.sample("y", dist.MultivariateNormal(x, torch.eye(2)), obs=torch.full((3, 2), 7.0),
                        obs_mask=mask)

    def guide():
        x = pyro.sample("x", dist.MultivariateNormal(pyro.param("loc", torch.zeros(2)), torch.eye(2)))
        with pyro.plate("plate", 3):
            pyro.sample("y_unobserved", dist.MultivariateNormal(x, torch.eye(2)))
    return model, guide


# --------------------------------------------------------------------- test_gradient.py
# z_n ~ N(0, 1), x_n ~ N(z_n, 1) with x = (-0.5, 2); guide N(loc_n, scale).  At loc = 0,
# scale = 1 the ELBO's gradient is d/dloc_n = x_n and d/dscale = sum_n (1/scale - 2 scale)
# = -2, so the loss's (negative ELBO) gradient is (0.5, -2) and 2 (times Pyro's scale).
G = "test_gradient.py::"
#: Independent draws per closed-form check (Student-t tolerances, false-alarm rate 1e-3);
#: the checks run without Pyro's validation (the SVI step before them ran with it).
NUM_DRAWS = 50
GRAD_DATA = torch.tensor([-0.5, 2.0])


def _normal(reparam):
    return dist.Normal if reparam else fakes.NonreparameterizedNormal


def _local_pair(reparam, has_rsample=None, subsample=None, scale=1.0, style="event_dim"):
    Normal = _normal(reparam)

    def model():
        with pyro.plate("data", 2, subsample) as rows:
            z = pyro.sample("z", Normal(0.0, 1.0).expand([len(rows)]))
            pyro.sample("x", Normal(z, 1.0), obs=GRAD_DATA[rows])

    def guide():
        scale_ = pyro.param("scale", torch.tensor([1.0]))
        with pyro.plate("data", 2, subsample) as rows:
            if style == "event_dim":
                loc = pyro.param("loc", torch.zeros(2), event_dim=0)
            else:  # the guide indexes the full parameter itself
                loc = pyro.param("loc", torch.zeros(2))[rows]
            q = Normal(loc, scale_)
            if has_rsample is not None:
                q.has_rsample_(has_rsample)
            pyro.sample("z", q)
    if scale != 1.0:
        model, guide = poutine.scale(model, scale=scale), poutine.scale(guide, scale=scale)
    return model, guide


def _expected(scale=1.0):
    return {"loc": scale * torch.tensor([0.5, -2.0]), "scale": scale * torch.tensor([2.0])}


def _unvalidated(check):
    def run(name, case):
        with pyro.validation_enabled(False):
            check(name, case)
    return run


def gradient_check(scale=1.0, copies=1):
    """The loss's expected gradient equals the closed form (K = 1 estimators of the
    ELBO); IWAE_K estimators (``vimco``, K = 2) agree with ``iwae`` at the same K.
    ``copies``: a user-written plate of replicas, whose gradient Pyro divides by their number."""
    @_unvalidated
    def check(name, case):
        from pyro_lvm import testing
        if name == "vimco":
            testing.assert_gradients_agree(case.model, case.guide, losses=("iwae", "vimco"),
                                           num_particles=2, num_draws=NUM_DRAWS)
        else:
            testing.assert_unbiased(case.model, case.guide, loss=name, num_draws=NUM_DRAWS,
                                    exact_grad={k: v * copies for k, v in _expected(scale).items()})
    return check


for _id, (_rp, _rs) in {"reparam": (True, None), "reparam-False": (True, False),
                             "reparam-True": (True, True), "nonreparam": (False, None)}.items():
    case(f"gradient_{_id}", G + f"test_particle_gradient[{_id}]", check=gradient_check(),
         tags={"gradient"})(lambda r=_rp, h=_rs: _local_pair(r, h))
    for _sub in ("full", "subsample"):
        for _sc in (1.0, 2.0):
            if _id in ("reparam-True", "reparam-False"):  # covered by test_particle_gradient
                continue
            case(f"subsample_gradient_{_id}_{_sub}_x{_sc:g}",
                 G + f"test_subsample_gradient[{_id}-{_sub}-{'unscaled' if _sc == 1 else 'scaled'}]",
                 check=gradient_check(_sc), tags={"gradient"})(
                lambda r=_rp, h=_rs, s=_sub, sc=_sc: _local_pair(r, h, 1 if s == "subsample" else None, sc))
for _id, _reparam in (("reparam", True), ("nonreparam", False)):
    for _sub in ("full", "subsample"):
        case(f"subsample_gradient_sequential_{_id}_{_sub}", G + f"test_subsample_gradient_sequential[{_id}-{_sub}]",
             check=gradient_check(), tags={"gradient"})(
            lambda r=_reparam, s=_sub: _local_pair(r, subsample=1 if s == "subsample" else None, style="index"))


def _with_nuisance(reparam, copies=None):
    """Global nuisance sites the guide copies from the model (they cancel in log w), and
    optionally a user-written plate of ``copies`` replicas (Pyro uses it as particles)."""
    Normal = _normal(reparam)

    def model():
        # each plate built once and entered twice, as Pyro's test does
        data = pyro.plate("data", 2, dim=-1)
        replicas = pyro.plate("particles", copies, dim=-2) if copies else contextlib.nullcontext()
        pyro.sample("nuisance_a", Normal(0.0, 1.0))
        with replicas, data:
            z = pyro.sample("z", Normal(0.0, 1.0))
        pyro.sample("nuisance_b", Normal(2.0, 3.0))
        with data, replicas:
            pyro.sample("x", Normal(z, 1.0), obs=GRAD_DATA)
        pyro.sample("nuisance_c", Normal(4.0, 5.0))

    def guide():
        loc, scale = pyro.param("loc", torch.zeros(2)), pyro.param("scale", torch.tensor([1.0]))
        pyro.sample("nuisance_c", Normal(4.0, 5.0))
        with pyro.plate("particles", copies, dim=-2) if copies else contextlib.nullcontext(), \
                pyro.plate("data", 2, dim=-1):
            pyro.sample("z", Normal(loc, scale))
        pyro.sample("nuisance_b", Normal(2.0, 3.0))
        pyro.sample("nuisance_a", Normal(0.0, 1.0))
    return model, guide


for _id, _reparam in (("reparam", True), ("nonreparam", False)):
    case(f"nuisance_sites_replica_plate_{_id}", G + f"test_plate[{_id}]", check=gradient_check(copies=20),
         tags={"gradient"})(lambda r=_reparam: _with_nuisance(r, 20))
    case(f"nuisance_sites_{_id}", G + f"test_plate_elbo_vectorized_particles[{_id}]",
         check=gradient_check(), tags={"gradient"})(lambda r=_reparam: _with_nuisance(r))


# -------------------------------------------------------------------- test_inference.py
# Conjugate models with the guide at the exact posterior: every loss's bound equals
# log p(x) in expectation and its expected gradient is zero (the optimum).
I = "test_inference.py::"


def conjugate_check(log_evidence, params):
    @_unvalidated
    def check(name, case):
        from pyro_lvm import testing
        testing.assert_unbiased(case.model, case.guide, loss=name, num_particles=2 if name == "vimco" else 1,
                                exact_value=log_evidence, exact_grad={p: 0.0 for p in params},
                                num_draws=NUM_DRAWS)
    return check


def _normal_normal(reparam):
    lam0, loc0 = torch.tensor([0.1, 0.1]), torch.tensor([0.0, 0.5])
    lam = torch.tensor([6.0, 4.0])
    data = torch.tensor([[-0.1, 0.3], [0.0, 0.4], [0.2, 0.5], [0.1, 0.7]])
    lam_n = lam0 + len(data) * lam
    loc_n = (data.sum(0) * lam + loc0 * lam0) / lam_n
    # marginal of each coordinate's 4 observations: N(loc0 1, 1/lam0 11' + 1/lam I)
    cov = (1 / lam0)[:, None, None] * torch.ones(4, 4) + (1 / lam)[:, None, None] * torch.eye(4)
    evidence = dist.MultivariateNormal(loc0[:, None].expand(2, 4), cov).log_prob(data.T).sum()
    Normal = _normal(reparam)

    def model():
        loc = pyro.sample("loc_latent", dist.Normal(loc0, lam0.rsqrt()).to_event(1))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, lam.rsqrt()).to_event(1), obs=data)

    def guide():
        loc = pyro.param("loc_q", loc_n.clone())
        log_sig = pyro.param("log_sig_q", -0.5 * torch.log(lam_n))
        pyro.sample("loc_latent", Normal(loc, log_sig.exp()).to_event(1))
    return (model, guide), evidence, ("loc_q", "log_sig_q")


def _gamma_rate(likelihood, reparam):
    a0, b0 = torch.tensor(1.0), torch.tensor(1.0)
    data = torch.tensor([1.0, 2.0, 3.0]) if likelihood == "poisson" else torch.tensor([3.0, 2.0])
    if likelihood == "poisson":
        a_n, b_n = a0 + data.sum(), b0 + len(data)
        extra = -torch.lgamma(data + 1).sum()
    else:
        a_n, b_n = a0 + len(data), b0 + data.sum()
        extra = torch.tensor(0.0)
    evidence = (a0 * b0.log() - torch.lgamma(a0) + torch.lgamma(a_n) - a_n * b_n.log() + extra)
    Gamma = dist.Gamma if reparam else fakes.NonreparameterizedGamma
    Likelihood = dist.Poisson if likelihood == "poisson" else dist.Exponential

    def model():
        rate = pyro.sample("lambda_latent", Gamma(a0, b0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", Likelihood(rate), obs=data)

    def guide():
        a = pyro.param("alpha_q", a_n.clone(), constraint=constraints.positive)
        b = pyro.param("beta_q", b_n.clone(), constraint=constraints.positive)
        pyro.sample("lambda_latent", Gamma(a, b))
    return (model, guide), evidence, ("alpha_q", "beta_q")


def _beta_bernoulli(reparam):
    a0, b0 = torch.tensor(1.0), torch.tensor(1.0)
    data = torch.tensor([0.0, 1.0, 1.0, 1.0])
    a_n, b_n = a0 + data.sum(), b0 + len(data) - data.sum()

    def log_beta(a, b):
        return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    evidence = log_beta(a_n, b_n) - log_beta(a0, b0)
    Beta = dist.Beta if reparam else fakes.NonreparameterizedBeta

    def model():
        p = pyro.sample("p_latent", Beta(a0, b0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Bernoulli(p), obs=data)

    def guide():
        a = pyro.param("alpha_q_log", a_n.log()).exp()
        b = pyro.param("beta_q_log", b_n.log()).exp()
        pyro.sample("p_latent", Beta(a, b))
    return (model, guide), evidence, ("alpha_q_log", "beta_q_log")


for _label, _build, _test in (("normal_normal", _normal_normal, "NormalNormalTests::test_elbo"),
                              ("gamma_poisson", lambda r: _gamma_rate("poisson", r), "PoissonGammaTests::test_elbo"),
                              ("gamma_exponential", lambda r: _gamma_rate("exponential", r),
                               "test_exponential_gamma"),
                              ("beta_bernoulli", _beta_bernoulli, "BernoulliBetaTests::test_elbo")):
    for _id, _reparam in (("reparameterized", True), ("nonreparameterized", False)):
        _pair, _evidence, _params = _build(_reparam)
        _source = (I + f"{_test}[{'reparam' if _reparam else 'nonreparam'}]" if "::" not in _test
                   else I + f"{_test}_{_id}")
        CASES.append(Case(f"conjugate_{_label}_{_id}", _source, *_pair,
                          check=conjugate_check(_evidence, _params), tags={"conjugate"}))


assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
