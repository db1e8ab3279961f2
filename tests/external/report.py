"""Print the outcome counts per loss on Pyro's own test cases, and the cases covered.

    PYTHONPATH=. python tests/external/report.py [--cases]
"""

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402

from cases import CASES  # noqa: E402
from harness import LOSS_NAMES, run  # noqa: E402


def main(show_cases=True):
    pyro.enable_validation(True)
    counts = {name: Counter() for name in LOSS_NAMES}
    rows = []
    for case in CASES:
        outcomes = {name: run(case, name) for name in LOSS_NAMES}
        for name, (outcome, _) in outcomes.items():
            counts[name][outcome] += 1
        rows.append((case, outcomes))
    print(f"{len(CASES)} cases from Pyro's tests/infer/test_valid_models.py, test_gradient.py and "
          "test_inference.py\n")
    print("| loss | passed | refused | wrong |\n|---|---|---|---|")
    for name, c in counts.items():
        print(f"| {name} | {c['passed']} | {c['refused']} | {c['wrong']} |")
    if show_cases:
        print("\n| case | Pyro test | " + " | ".join(LOSS_NAMES) + " |")
        print("|---|---|" + "---|" * len(LOSS_NAMES))
        for case, outcomes in rows:
            print(f"| {case.name} | {case.source} | "
                  + " | ".join(outcomes[n][0] for n in LOSS_NAMES) + " |")
    problems = [(case.name, n, d) for case, o in rows for n, (r, d) in o.items() if r != "passed"]
    if problems:
        print("\nnot passed:")
        for case_name, n, detail in problems:
            print(f"  {case_name} / {n}: {detail[:300]}")


if __name__ == "__main__":
    main(show_cases="--no-cases" not in sys.argv)
