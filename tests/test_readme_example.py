"""The README's "Test your own model/guide pair" example, run verbatim."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("### Test your own model/guide pair", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_pytest_example_is_short_and_passes():
    code = readme_example()
    assert len(code.strip().splitlines()) < 20
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()
