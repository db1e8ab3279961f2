"""examples/clustering.py as a function: ``main([...])`` on a slice of the real MNIST."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from torch import nn

from pyro_lvm.models import SemiSupervisedVAE

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("example_clustering", ROOT / "examples" / "clustering.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_main_writes_every_part_and_returns_its_metrics(tmp_path):
    written = _load().main([
        "--train-size", "600", "--test-size", "200", "--pca-rows", "600", "--pca-dims", "5",
        "--max-components", "3", "--n-init", "1", "--pretrain-epochs", "1", "--epochs", "1",
        "--m2-epochs", "1", "--label-repeats", "2", "--alpha", "0.1", "--log-px-samples", "2",
        "--out", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    for picture in ("bic.png", "vade_clusters.png", "m2_analogies.png"):
        assert (tmp_path / picture).stat().st_size > 0
    assert [row["method"] for row in written["table"]] == [
        "GMM on 5 PCs, K = 10", "VAE + GMM on z", "MixtureVAE (VaDE)"]
    for row in written["table"]:
        assert 0.1 <= row["accuracy"] <= 1 and 0 <= row["nmi"] <= 1 and row["cpu_min"] >= 0
    assert all(math.isfinite(row["test_log_px"]) and row["test_log_px"] < 0 for row in written["table"][1:])
    assert sorted(written["pca"]["bic"]) == ["1", "2", "3"] and 1 <= written["pca"]["chosen_K"] <= 3
    assert 0 <= written["m2"]["test_error"] <= 1 and len(written["m2"]["test_error_per_epoch"]) == 1
    # The paper's alpha = 0.1 N over the N_l labelled rows (100 images, each twice).
    n_rows = 600 - 100 + 2 * 100
    assert written["m2"]["alpha_per_labelled_row"] == pytest.approx(0.1 * n_rows / 200)
    assert set(written["times"]) == {"pca", "vae", "vade", "m2"}


@pytest.mark.slow
def test_m2_options_shape_the_model_it_trains(tmp_path):
    module, built = _load(), []

    def spy(**kwargs):  # the example's SemiSupervisedVAE, its arguments recorded
        built.append(SemiSupervisedVAE(**kwargs))
        return built[-1]

    module.SemiSupervisedVAE = spy
    written = module.main([
        "--parts", "m2", "--train-size", "300", "--test-size", "100", "--m2-epochs", "2",
        "--label-repeats", "3", "--m2-z-dim", "4", "--m2-hidden", "16", "8",
        "--m2-classifier", "32", "16", "--m2-activation", "relu", "--m2-batch-size", "50",
        "--out", str(tmp_path)])
    m, = built
    linear = lambda net: [(layer.in_features, layer.out_features) for layer in net
                          if isinstance(layer, nn.Linear)]
    assert linear(m.classifier) == [(784, 32), (32, 16), (16, 10)]
    assert linear(m.encoder) == [(794, 16), (16, 8), (8, 8)]  # 2 z_dim: loc and scale
    assert linear(m.decoder) == [(14, 8), (8, 16), (16, 784)]
    assert all(isinstance(layer, nn.ReLU) for layer in m.classifier[1::2])
    assert len(written["m2"]["test_error_per_epoch"]) == 2
    assert all(0 <= e <= 1 for e in written["m2"]["test_error_per_epoch"])
    # 300 images, 100 labelled, each 3 times: 600 rows, batches of 50.
    assert written["config"]["m2_batch_size"] == 50 and len(written["m2"]["loss_per_epoch"]) == 2


@pytest.mark.parametrize("argv", [["--parts", "vade"], ["--parts", "pca,gmm"], ["--epochs", "0"],
                                  ["--alpha", "-1"], ["--m2-activation", "tanh"],
                                  ["--m2-classifier", "500", "0"], ["--m2-batch-size", "0"]])
def test_bad_command_lines_exit_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load().main(argv)
    assert exit_info.value.code == 2
