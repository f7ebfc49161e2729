"""The notebooks as papermill runs them: a parameter injected from outside takes effect.

(``pytest --nbval`` checks every notebook's committed outputs; this test checks what nbval
cannot: running a notebook with non-default parameters, as the README shows.)
"""

import json
import math
from pathlib import Path

import nbformat
import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _printed_text(notebook_path: Path) -> str:
    notebook = nbformat.read(notebook_path, as_version=4)
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream")


def test_inpaint_notebook_decodes_with_the_injected_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    runs = tmp_path / "runs"
    executed = tmp_path / "04_inpaint.ipynb"
    # linear and T = 5 both differ from the notebook's defaults (cosine, T = 8)
    papermill.execute_notebook(
        str(NOTEBOOKS / "04_inpaint.ipynb"), str(executed),
        parameters={"gamma": "linear", "total_iter": 5, "image_indices": [0, 1],
                    "runs_root": str(runs)},
        kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)

    summary = json.loads((runs / "smoke" / "inpaint" / "linear-T5-t5.json").read_text())
    assert (summary["profile"], summary["gamma"], summary["total_iter"], summary["sweet_spot"]) == (
        "smoke", "linear", 5, 5)
    assert summary["image_indices"] == [0, 1]
    # The decoder really followed the linear schedule: m_t = floor((1 - t/T) n0), revealing
    # at least one token per iteration; the cosine default would keep more tokens masked.
    for counts in summary["masked_counts"]:
        n0 = counts[0]
        assert n0 > 0
        expected = [n0]
        for t in range(1, 6):
            expected.append(min(math.floor((1 - t / 5) * n0), max(expected[-1] - 1, 0)))
        assert counts == expected
        assert counts[1] < math.floor(math.cos(math.pi / 2 * 1 / 5) * n0)

    printed = _printed_text(executed)
    assert "gamma = 'linear', T = 5, t* = 5" in printed
    assert "every image follows m_t = min(floor(gamma(t/T) n0), m_(t-1) - 1): True" in printed
