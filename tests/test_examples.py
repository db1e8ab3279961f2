"""The examples as functions: ``main(argv=None) -> dict`` in every ``examples/*.py``,
nothing run at import, bad command-line values refused at parse time, and ``main``
returning what it writes to ``metrics.json``.

The examples are scripts, not a package: :func:`load` imports one from its file, so the
tests call ``main([...])`` in this process (a fresh interpreter per call costs seconds).
"""

import ast
import builtins
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(path.name for path in (ROOT / "examples").glob("*.py"))


def load(script: str):
    """Import ``examples/<script>`` as a module (named ``example_<stem>``)."""
    path = ROOT / "examples" / script
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- every example is a main function ----------------------------------------------------

def _module_level_work(tree: ast.Module) -> list:
    """Top-level statements of an example that do work at import: anything but the
    docstring, imports, definitions, constants (calling builtins only) and the final
    ``if __name__ == "__main__": main()``."""
    work = []
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    *body, last = body
    guard = ast.parse('if __name__ == "__main__":\n    main()').body[0]
    if ast.dump(last) != ast.dump(guard):
        work.append(f"line {last.lineno}: the file must end with `if __name__ == \"__main__\": main()`")
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            calls = [c for c in ast.walk(node.value) if isinstance(c, ast.Call)]
            if all(isinstance(c.func, ast.Name) and hasattr(builtins, c.func.id) for c in calls):
                continue
        work.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return work


@pytest.mark.parametrize("script", EXAMPLES)
def test_every_example_defines_main_and_does_no_work_at_module_level(script):
    tree = ast.parse((ROOT / "examples" / script).read_text())
    assert _module_level_work(tree) == []


@pytest.mark.parametrize("script", EXAMPLES)
def test_importing_an_example_runs_nothing_and_main_takes_argv(script, tmp_path, monkeypatch):
    # Were anything run at import, it would parse these arguments (and exit 2), load MNIST or
    # write into the current folder.
    def refuse(*args, **kwargs):
        raise AssertionError(f"{script} did work at import")

    import argparse

    import pyro_lvm.data

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", refuse)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", refuse)
    monkeypatch.setattr(pyro_lvm.data, "load_mnist", refuse)
    monkeypatch.setattr(sys, "argv", [script, "--no-such-flag"])
    monkeypatch.chdir(tmp_path)
    module = load(script)
    signature = inspect.signature(module.main)
    assert list(signature.parameters) == ["argv"]
    assert signature.parameters["argv"].default is None
    assert signature.return_annotation in (dict, "dict")
    assert list(tmp_path.iterdir()) == []


# --- bad command-line values exit 2 at parse time ------------------------------------------

#: One bad value per example that argparse's plain ``int``/``float`` accepted.
BAD_FLAGS = {
    "svi_vae.py": ["--eval-samples", "1"], "anomaly.py": ["--epochs", "0"],
    "compare_elbos.py": ["--particles", "1"], "gmm.py": ["--components", "0"],
    "latent_space.py": ["--seed", "-1"], "missing_pixels.py": ["--samples", "0"],
    "ppca.py": ["--lr", "nan"], "iwae_table.py": ["--epochs-scale", "0"],
    "certify.py": ["--chains", "0"], "clustering.py": ["--epochs", "0"],
}


def test_every_example_has_a_bad_flag_case():
    assert sorted(BAD_FLAGS) == EXAMPLES


@pytest.mark.parametrize("script", list(BAD_FLAGS))
def test_every_example_refuses_bad_values_at_parse_time(script, tmp_path, monkeypatch, capsys):
    # Without data any work would fail with FileNotFoundError instead of exit 2.
    monkeypatch.setenv("PYRO_LVM_DATA", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)
    main = load(script).main
    with pytest.raises(SystemExit) as exit_:
        main([*BAD_FLAGS[script], "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"argument {BAD_FLAGS[script][0]}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_svi_vae_with_an_infinite_step_size_exits_with_a_clear_message(tmp_path, capsys):
    # Before: lr=inf trained to NaN (svi_vae.py --lr inf exited 0 with NaN metrics).
    main = load("svi_vae.py").main
    with pytest.raises(SystemExit) as exit_:
        main(["--lr", "inf", "--epochs", "1", "--out", str(tmp_path)])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert "lr" in err and "inf" in err and "Traceback" not in err
    assert not (tmp_path / "metrics.json").exists()


# --- metrics.json --------------------------------------------------------------------------

def test_every_example_writes_its_metrics_through_write_metrics():
    for script in sorted((ROOT / "examples").glob("*.py")):
        text = script.read_text()
        if "metrics.json" in text:
            assert "write_metrics(out / \"metrics.json\"" in text and "json.dump" not in text, script.name


@pytest.mark.slow
def test_gmm_main_returns_what_it_writes_to_metrics_json(tmp_path, capsys):
    out = tmp_path / "out"
    metrics = load("gmm.py").main(["--train", "500", "--pcs", "3", "--components", "2",
                                   "--svi-steps", "2", "--meanfield-steps", "2", "--out", str(out)])
    written = json.loads((out / "metrics.json").read_text())
    assert metrics == written
    assert written["config"]["out"] == str(out) and len(written["rows"]) == 3
    assert all(isinstance(row["train log p(x)"], float) and isinstance(row["test log p(x)"], float)
               for row in written["rows"])
    assert {"table.md", "mixture.png", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_ppca_main_returns_exact_numbers_that_obey_their_bounds(tmp_path):
    metrics = load("ppca.py").main(["--train", "200", "--latent-dim", "2", "--steps", "2",
                                    "--out", str(tmp_path)])
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    rows = {row["method"]: row for row in metrics["rows"]}
    assert len(rows) == 6
    closed = rows.pop("closed form (Tipping & Bishop)")
    # The closed form is the global maximum of the exact log-likelihood (Tipping & Bishop
    # 1999): no other fit is above it on the training data (float64 rounding allowed).
    for row in rows.values():
        assert row["train log p(x)"] <= closed["train log p(x)"] + 1e-6, row["method"]
    # ELBO = log p(x) - KL(q || p(z|x)), exact: the gap is never negative.
    for row in metrics["rows"]:
        assert row["gap = KL(q||p(z|x))"] >= -1e-6, row["method"]
        assert row["train ELBO"] <= row["train log p(x)"] + 1e-6, row["method"]
