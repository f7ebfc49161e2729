"""Verdicts follow from the numbers: labkit.eval.verdicts, and every verdict printed in a notebook."""

import math
from pathlib import Path

import nbformat
import numpy as np
import pytest

from labkit.eval.verdicts import (Estimate, across_seeds, bootstrap_difference, critical, follows,
                             paired_difference, parse_verdict, verdict, verdict_sentence)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_paired_difference_is_the_mean_and_standard_error_of_the_differences():
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([0.5, 2.5, 3.0, 5.0])
    d = paired_difference(a, b)
    diff = a - b
    assert d.value == pytest.approx(diff.mean())
    assert d.se == pytest.approx(diff.std(ddof=1) / 2)
    assert d.n == 4
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, b[:3])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference(a, np.array([0.0, math.nan, 1.0, 2.0]))


def test_critical_values_are_students_t():
    assert critical(3) == pytest.approx(4.303, abs=1e-3)      # three training seeds
    assert critical(256) == pytest.approx(1.969, abs=1e-3)
    assert critical(1) == math.inf                            # no noise estimate: never significant


@pytest.mark.parametrize("value, se, n, expected, word", [
    (-0.5, 0.1, 30, -1, "agrees"),
    (-0.5, 0.1, 30, +1, "contradicts"),
    (0.15, 0.1, 30, +1, "within noise"),      # 1.5 SE
    (0.3, 0.1, 3, +1, "within noise"),        # 3 SE, but t(2) = 4.3 with three seeds
    (0.5, 0.1, 3, +1, "agrees"),
])
def test_verdicts(value, se, n, expected, word):
    assert verdict(Estimate(value, se, n), expected) == word


def test_the_sentence_quotes_numbers_that_give_back_its_verdict():
    for value, se, n, expected in [(-0.5, 0.1, 30, -1), (0.15, 0.1, 30, 1), (0.5, 0.1, 3, 1), (2.0, 0.1, 3, -1)]:
        line = verdict_sentence("claim X", Estimate(value, se, n), expected, unit="dB")
        parsed = parse_verdict("prefix " + line)
        assert parsed["verdict"] == verdict(Estimate(value, se, n), expected)
        assert (parsed["value"], parsed["se"], parsed["n"], parsed["expected"]) == (value, se, n, expected)
        assert follows(parsed)
    # a sentence whose verdict does not follow from its numbers is caught
    bad = verdict_sentence("claim X", Estimate(0.15, 0.1, 30), 1).replace("within noise", "agrees")
    assert not follows(parse_verdict(bad))
    assert parse_verdict("no verdict here") is None


def test_across_seeds_and_bootstrap():
    d = across_seeds([0.2, 0.4, 0.3])
    assert (d.value, d.n) == (pytest.approx(0.3), 3) and d.se == pytest.approx(0.1 / math.sqrt(3))
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, (400, 2))
    b = rng.normal(0.0, 1.0, (400, 2))

    def mean_first(x):
        return float(x[:, 0].mean())
    boot = bootstrap_difference(mean_first, a, b, n_boot=300)
    assert boot.value == pytest.approx(a[:, 0].mean() - b[:, 0].mean())
    # the bootstrap SE of a difference of independent means is about sqrt(2 / n)
    assert boot.se == pytest.approx(math.sqrt(2 / 400), rel=0.25)
    assert verdict(boot, +1) == "agrees"
    with pytest.raises(ValueError, match="same number"):
        bootstrap_difference(mean_first, a, b[:10])


def _printed_lines(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            text = output.get("text", "") or "".join(output.get("data", {}).get("text/plain", ""))
            yield from text.splitlines()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_verdict_printed_in_a_committed_notebook_follows_from_its_numbers(path):
    for line in _printed_lines(path):
        parsed = parse_verdict(line)
        if parsed is not None:
            assert follows(parsed), f"{path.name}: the verdict does not follow from the numbers: {line}"
