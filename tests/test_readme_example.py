"""The README's examples, run verbatim: the pytest file of "Test your own model/guide pair"
passes, and "Write your own pair and train it" prints the figures the README shows."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(section: str = "### Test your own model/guide pair") -> str:
    part = README.read_text().split(section, 1)[1]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


def test_readme_pytest_example_is_short_and_passes():
    code = readme_example()
    assert len(code.strip().splitlines()) < 20
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()


def test_readme_factor_model_prints_the_figures_the_readme_shows():
    section = "### Write your own pair and train it"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(section), str(README), "exec"), {})
    text = " ".join(README.read_text().split(section, 1)[1].split("### ", 1)[0].split())
    shown = re.search(r"It prints `([^`]*)`", text).group(1)
    assert shown in out.getvalue().splitlines()  # the very line, every digit
    estimate, exact, true = map(float, re.findall(r"\d+\.\d\d", shown))
    gap = float(re.search(r"the (\d+\.\d\d) nats between the fitted and the true", text).group(1))
    assert gap == round(true - exact, 2)
    assert "equal to the exact value to the printed digits" in text and estimate == exact
