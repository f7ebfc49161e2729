"""The notebooks as papermill runs them: a parameter injected from outside takes effect.

(``pytest --nbval`` checks every notebook's committed outputs; this test checks what nbval
cannot: running a notebook with non-default parameters, as the README shows.)
"""

import base64
import json
import math
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

from labkit import MaskGit, get_config
from labkit.explorer import DecodingExplorer
from labkit.notebook_runner import run_series
from labkit.plots import TOKEN_STATES, decoding_states

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


# ----------------------------------------------------------------------------- the runner

def _tiny_notebook(path: Path) -> Path:
    """A two-cell notebook: a tagged parameters cell and a cell that prints and writes them."""
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('profile = None\nword = "default"')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# tiny"),
        parameters,
        nbformat.v4.new_code_cell("import os\nprint(profile, os.environ['LABKIT_PROFILE'], word)"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_runner_runs_in_order_writes_a_summary_and_refreshes_without_papermill_traces(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _tiny_notebook(notebooks / "a.ipynb")
    _tiny_notebook(notebooks / "b.ipynb")
    summary = run_series("smoke", ["b", "a"], refresh=True, runs_root=tmp_path / "runs",
                         notebooks_dir=notebooks, log=lambda *args, **kwargs: None)

    assert summary["ok"] and [entry["name"] for entry in summary["notebooks"]] == ["b", "a"]
    on_disk = json.loads((tmp_path / "runs" / "smoke" / "series_summary.json").read_text())
    assert on_disk["notebooks"] == summary["notebooks"]
    assert all(entry["seconds"] > 0 for entry in on_disk["notebooks"])
    executed = nbformat.read(tmp_path / "runs" / "smoke" / "notebooks" / "a.ipynb", as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)

    refreshed = nbformat.read(notebooks / "a.ipynb", as_version=4)
    assert len(refreshed.cells) == 3                       # no injected cell
    assert "papermill" not in refreshed.metadata
    assert all("papermill" not in cell.metadata and "execution" not in cell.metadata
               for cell in refreshed.cells)
    printed = refreshed.cells[2].outputs[0].text
    assert printed.split()[:2] == ["smoke", "smoke"]      # injected and in the environment
    assert refreshed.cells[2].execution_count == 2         # renumbered after the removed cell


def test_runner_stops_at_a_failing_notebook_and_says_where(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    broken = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")])
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(broken, notebooks / "a.ipynb")
    _tiny_notebook(notebooks / "b.ipynb")
    summary = run_series("smoke", ["a", "b"], runs_root=tmp_path / "runs", notebooks_dir=notebooks,
                         log=lambda *args, **kwargs: None)
    assert not summary["ok"]
    assert [entry["name"] for entry in summary["notebooks"]] == ["a"]
    assert summary["notebooks"][0]["status"] == "failed"
    assert "ValueError: boom" in summary["notebooks"][0]["error"]


def test_runner_refuses_to_refresh_with_parameters_and_names_unknown_notebooks(tmp_path):
    with pytest.raises(ValueError, match="embedded defaults"):
        run_series("smoke", ["04_inpaint"], parameters={"gamma": "linear"}, refresh=True)
    with pytest.raises(FileNotFoundError, match="04_inpaint"):
        run_series("smoke", ["4_inpaint"], notebooks_dir=tmp_path)


# ----------------------------------------------------------------------------- decoding views

def _small_result():
    cfg = get_config("smoke")
    torch.manual_seed(0)
    maskgit = MaskGit(cfg).eval()
    images = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    masks = torch.zeros(2, 1, cfg.image_size, cfg.image_size, dtype=torch.bool)
    masks[0, :, :12, :20] = True
    masks[1, :, 10:30, 4:9] = True
    return maskgit.inpaint(images, masks, gamma="cosine", total_iter=4,
                           generator=torch.Generator().manual_seed(0))


def test_decoding_states_follow_every_token_through_the_trace():
    result = _small_result()
    for index in range(2):
        states = decoding_states(result.trace, index).flatten(1)          # (t* + 1, N)
        hole = result.trace.initial_mask[index]
        known, earlier, now, masked = range(len(TOKEN_STATES))
        assert bool((states[:, ~hole] == known).all())
        assert bool((states[0, hole] == masked).all())
        for position in hole.nonzero().flatten():
            history = states[:, position].tolist()
            reveal = history.index(now)                  # revealed exactly once ...
            assert history.count(now) == 1
            assert history[:reveal] == [masked] * reveal  # ... masked before ...
            assert history[reveal + 1:] == [earlier] * (len(history) - reveal - 1)   # ... then kept
        counts = result.trace.masked_counts()[:, index]
        assert torch.equal((states == masked).sum(1), counts)


def test_explorer_shows_the_chosen_iteration_and_carries_a_static_fallback():
    result = _small_result()
    explorer = DecodingExplorer(result, gamma="cosine", total_iter=4)
    assert explorer.iteration.max == 4 and explorer.view.value == explorer.frame(0, 4)
    explorer.iteration.value = 1
    explorer.image_index.value = 1
    assert explorer.view.value == explorer.frame(1, 1)
    assert explorer.view.value != explorer.frame(0, 1)

    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == explorer.frame(1, 1)   # what the widget shows
    assert "image 1 at t = 1" in bundle["text/plain"]
