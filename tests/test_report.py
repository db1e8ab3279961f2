"""report: metrics.json as strict JSON."""

import json

import torch


def _strict_json(text):
    def refuse(word):
        raise ValueError(f"{word} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_metrics_with_nan_and_inf_are_written_as_null_with_a_note(tmp_path):
    from pyro_lvm.report import write_metrics

    path = tmp_path / "metrics.json"
    write_metrics(path, {"test_elbo": [-90.5, float("nan")], "log_px": torch.tensor(float("-inf")),
                         "rows": [{"snr": float("inf"), "loss": "iwae"}], "epochs": 2})
    metrics = _strict_json(path.read_text())
    assert metrics["test_elbo"] == [-90.5, None] and metrics["log_px"] is None
    assert metrics["rows"] == [{"snr": None, "loss": "iwae"}] and metrics["epochs"] == 2
    assert metrics["null_values"]["values"] == {"test_elbo[1]": "nan", "log_px": "-inf",
                                                "rows[0].snr": "inf"}
    assert "NaN or infinite" in metrics["null_values"]["reason"]
