"""plots: curves written to files, and refused when there is nothing to plot."""

import pytest

from pyro_lvm.plots import plot_curves


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves({"BIC": ([1, 2, 3], [3.0, 2.0, 2.5])}, tmp_path / "sub" / "bic.png", xlabel="K")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("curves", [{}, [([1], [2])], {"a": ([1, 2], [3.0])}, {"a": [1, 2, 3]}])
def test_plot_curves_refuses_what_it_cannot_draw(curves, tmp_path):
    with pytest.raises(ValueError, match="curves must be a non-empty dict"):
        plot_curves(curves, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
