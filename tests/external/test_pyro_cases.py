"""Pyro's own test cases (``cases.py``) on every loss of ``make_loss``: none may be wrong.

A refusal must be a documented one (``harness.REFUSALS``); ``report.py`` prints the
counts per loss and the list of cases with the Pyro test each comes from.
"""

import pytest

from cases import CASES
from harness import LOSS_NAMES, REFUSALS, run


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_loss_on_pyro_case(case, name):
    outcome, detail = run(case, name)
    assert outcome != "wrong", detail
    if outcome == "refused":  # only the documented refusals; elbo/tracegraph/enum/iwae have none
        assert name in REFUSALS, detail

