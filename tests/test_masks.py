"""models.masks: the mask kinds and the one check of images with their mask."""

import math

import pytest
import torch

from pyro_lvm.models.masks import check_mask, make_mask, top_half_mask

from helpers import assert_refused


def test_make_mask_kinds_and_their_fractions():
    g = torch.Generator().manual_seed(0)
    n, d = 600, 784
    assert torch.equal(make_mask("top_half", n, g), top_half_mask(n))
    for kind, p in (("mcar50", 0.5), ("mcar90", 0.9)):
        mask = make_mask(kind, n, g)
        assert mask.dtype == torch.bool and mask.shape == (n, d)
        assert abs(mask.float().mean() - p) < 4 * math.sqrt(p * (1 - p) / (n * d))  # binomial
    mix = make_mask("mix", n, g)
    top = (mix == top_half_mask(n)).all(1)
    share = mix.float().mean(1)
    assert abs(top.float().mean() - 1 / 3) < 4 * math.sqrt(2 / 9 / n)
    mcar = share[~top]
    near_half, near_ninety = (mcar - 0.5).abs() < 0.08, (mcar - 0.9).abs() < 0.08
    assert torch.all(near_half | near_ninety) and near_half.any() and near_ninety.any()


def test_top_half_hides_the_first_14_rows_of_each_image():
    mask = top_half_mask(3).reshape(3, 28, 28)
    assert mask[:, :14].all() and not mask[:, 14:].any()


def test_check_mask_takes_what_the_family_takes():
    x = torch.bernoulli(torch.full((4, 784), 0.5), generator=torch.Generator().manual_seed(0))
    mask = make_mask("mix", 4, torch.Generator().manual_seed(1))
    check_mask(torch.where(mask, 0.5, x), mask, 784)  # hidden pixels are not read
    check_mask(x, mask, 784, dtype=torch.float32, truth=True)
    check_mask(torch.full((4, 784), 0.5), mask, values=False)  # shapes and dtypes only


@pytest.mark.parametrize(
    "x, mask, words",
    [
        (torch.ones(2, 784), torch.ones(2, 784), "boolean"),
        (torch.ones(2, 784), torch.zeros(2, 783, dtype=torch.bool), "shape of x"),
        (torch.ones(2, 784), torch.ones(2, 784, dtype=torch.bool), "every pixel"),
        (torch.full((2, 784), 0.5), torch.zeros(2, 784, dtype=torch.bool), "binary"),
        (torch.full((2, 784), float("nan")), torch.zeros(2, 784, dtype=torch.bool), "NaN"),
    ],
)
def test_bad_input_is_rejected(x, mask, words):
    with pytest.raises(ValueError, match=words):
        check_mask(x, mask, 784)


_X = torch.zeros(2, 784)
_MASK = top_half_mask(2)

#: One bad argument per case: (call, words the ValueError must contain).
BAD_INPUT = {
    "top_half_mask n=0": (lambda: top_half_mask(0), "n must be a positive integer"),
    "top_half_mask n=2.5": (lambda: top_half_mask(2.5), "n must be a positive integer"),
    "make_mask unknown kind": (lambda: make_mask("bottom_half", 4), "mask kind must be one of"),
    "make_mask n=-1": (lambda: make_mask("mcar50", -1), "n must be a positive integer"),
    "make_mask generator a seed": (lambda: make_mask("mcar50", 4, generator=0), "generator must be a CPU"),
    "check_mask x a list": (lambda: check_mask([[0.0] * 784] * 2, _MASK), "x must be a torch.Tensor"),
    "check_mask integer x": (lambda: check_mask(_X.long(), _MASK), "x must be a floating tensor"),
    "check_mask x of another width": (lambda: check_mask(_X, _MASK, 16), "x must have 16 columns"),
    "check_mask x of another dtype": (lambda: check_mask(_X, _MASK, dtype=torch.float64), "x must be dtype torch.float64"),
    "check_mask empty x": (lambda: check_mask(_X[:0], _MASK[:0]), "x must have at least 1 rows"),
    "check_mask mask a list": (lambda: check_mask(_X, _MASK.tolist()), "mask must be a boolean tensor"),
    "check_mask uint8 mask": (lambda: check_mask(_X, _MASK.to(torch.uint8)), "mask.bool()"),
    "check_mask inf": (lambda: check_mask(torch.full((2, 784), math.inf), _MASK), "x contains NaN or inf"),
    "check_mask grey hidden truth": (lambda: check_mask(torch.where(_MASK, 0.5, _X), _MASK, truth=True),
                                     "pixels of x must be binary"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_value_error_naming_it(case):
    assert_refused(*BAD_INPUT[case])

