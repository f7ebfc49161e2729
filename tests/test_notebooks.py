"""The notebooks as papermill runs them and as students read them.

``pytest --nbval`` checks every notebook's committed outputs; these tests check what nbval
cannot: a parameter injected from outside takes effect, the notebooks' one-line setup, progress
bars that end as one line of text in a saved notebook, and what the committed notebooks show.
"""

import base64
import io
import json
import math
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import torch

from labkit import MaskGit, get_config
from labkit.lab import progress
from labkit.teaching.exercises import BY_NAME
from labkit.teaching.student import is_student_edition
from labkit.teaching.explorer import DecodingExplorer
from labkit.lab.notebook import SMOKE_WARNING, setup
from labkit.lab.notebook_runner import run_series
from labkit.lab.params import ParameterError
from labkit.teaching.plots import TOKEN_STATES, decoding_states
from labkit.lab.utils import data_root

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
    broken = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                             nbformat.v4.new_code_cell("\nraise ValueError('boom')")])
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(broken, notebooks / "a.ipynb")
    _tiny_notebook(notebooks / "b.ipynb")
    lines = []
    summary = run_series("smoke", ["a", "b"], runs_root=tmp_path / "runs", notebooks_dir=notebooks,
                         log=lambda line, **kwargs: lines.append(line))
    assert not summary["ok"]
    assert [entry["name"] for entry in summary["notebooks"]] == ["a"]
    assert summary["notebooks"][0]["status"] == "failed"
    assert "ValueError: boom" in summary["notebooks"][0]["error"]
    # the injected parameters run as [1]: the failing cell is [3] in the executed copy
    assert summary["notebooks"][0]["cell"] == 3
    output = tmp_path / "runs" / "smoke" / "notebooks" / "a.ipynb"
    assert any("a.ipynb FAILED after" in line and "in cell [3] (raise ValueError('boom')): "
               f"ValueError: boom; see cell [3] of {output}" in line for line in lines), lines


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
    return maskgit.inpaint(images, masks, maskgit.decode_settings(gamma="cosine", total_iter=4), torch.Generator().manual_seed(0))


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


# ----------------------------------------------------------------------------- the one-line setup

def test_setup_builds_the_config_from_the_notebooks_seed_and_says_when_outputs_mean_nothing(tmp_path):
    printed = []
    cfg, device, runs, out, cache = setup(
        {"profile": "smoke", "seed": 7, "device": "cpu", "runs_root": str(tmp_path), "gamma": "cosine"},
        log=printed.append)
    assert (cfg.profile, cfg.seed) == ("smoke", 7)          # the seed reaches the training config
    assert device == torch.device("cpu")
    assert runs == tmp_path and out == tmp_path / "smoke"
    assert cache == data_root()
    assert printed[0].startswith("profile smoke on cpu, seed 7; run folder ")
    assert printed[1] == SMOKE_WARNING and "test profile: outputs are not meaningful" in SMOKE_WARNING
    # the same draw as seed_everything(7): the notebook's figures follow the parameter too
    assert torch.equal(torch.rand(3), (torch.manual_seed(7), torch.rand(3))[1])

    printed.clear()
    cfg, *_ = setup({"profile": "cpu", "seed": 0, "runs_root": str(tmp_path)}, log=printed.append)
    assert cfg.profile == "cpu" and len(printed) == 1      # no warning outside the smoke profile


def test_setup_stops_at_a_wrong_parameter_with_the_papermill_hint():
    with pytest.raises(ParameterError, match=r"seed = '1' \(str\).*-p seed 0"):
        setup({"profile": "smoke", "seed": "1"}, log=lambda line: None)


# ----------------------------------------------------------------------------- progress bars

def test_text_bars_write_whole_lines_and_end_on_the_final_count(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "text")
    stream = io.StringIO()
    bar = progress.tqdm(total=40, desc="stage 2 (mvtm)", file=stream, mininterval=3600)
    for step in range(40):
        bar.update(1)
        bar.set_postfix(loss=f"{4 - step / 10:.3f}")
    bar.close()
    for _ in progress.tqdm(range(3), desc="encoding", file=stream):
        pass
    assert "\r" not in stream.getvalue()
    # one line per bar: nothing while it runs (the interval is an hour), the final count at the end
    assert re.fullmatch(r"stage 2 \(mvtm\): 40/40 \[00:00, loss=0\.100\]\nencoding: 3/3 \[00:00\]\n",
                        stream.getvalue()), stream.getvalue()


def test_text_bars_report_at_most_once_per_interval_while_they_run(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "text")
    stream = io.StringIO()
    bar = progress.tqdm(total=4, desc="work", file=stream, mininterval=0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["work: 1/4 [00:00<00:00]", "work: 2/4 [00:00<00:00]", "work: 3/4 [00:00<00:00]"]
    assert lines[-1] == "work: 4/4 [00:00]"


def test_progress_mode_names_the_choices(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "widgets please")
    with pytest.raises(ValueError, match=r"auto.*text"):
        progress.tqdm(total=1)


BARS_CELL = """\
from labkit.lab.progress import tqdm
for _ in tqdm(range(5), desc="encoding"):
    pass
with tqdm(total=3, desc="stage 2 (mvtm)") as bar:
    bar.update(3)
    bar.set_postfix(loss="1.250")
"""


@pytest.mark.parametrize("mode", ["auto", "text"])
def test_a_saved_notebook_shows_each_bar_as_its_final_line_and_no_widget(tmp_path, monkeypatch, mode):
    # auto: a kernel with ipywidgets draws widgets, and each is replaced by its final line
    # when it closes; text: plain lines from the start. Either way the saved notebook is text.
    monkeypatch.setenv("LABKIT_PROGRESS", mode)
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(BARS_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "bars.ipynb")
    papermill.execute_notebook(str(tmp_path / "bars.ipynb"), str(tmp_path / "out.ipynb"),
                               kernel_name="python3", progress_bar=False)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    shown = "".join(output.get("text", "") or output.get("data", {}).get("text/plain", "")
                    + ("\n" if output.output_type == "display_data" else "") for output in outputs)
    assert shown == "encoding: 5/5 [00:00]\nstage 2 (mvtm): 3/3 [00:00, loss=1.250]\n"
    # auto really drew widgets (display outputs, updated in place); text wrote lines
    assert {output.output_type for output in outputs} == {"display_data" if mode == "auto" else "stream"}
    assert not any("application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in outputs)


# ----------------------------------------------------------------------------- the committed notebooks

SERIES_PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TRAINS = re.compile(r"\b(stage_tokenizer|stage_mvtm|train_mvtm|default_extractors|sweep)\(")


@pytest.mark.parametrize("path", SERIES_PATHS, ids=lambda path: path.stem)
def test_committed_notebook_reads_clean(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # nbval markers are cell tags, which students do not see in the code
    assert not any("NBVAL" in cell.source for cell in code)
    # the one-line setup, in the first cell after the parameters
    assert "parameters" in code[0].metadata.get("tags", [])
    assert re.search(r"^\w+, device, runs, \w+, cache = setup\(globals\(\)\)", code[1].source, re.M)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and TRAINS.search(cell.source):
            above = notebook.cells[index - 1]
            assert above.cell_type == "markdown" and "**Time:**" in above.source, cell.source[:200]
            assert "nbval-ignore-output" in cell.metadata.get("tags", [])     # bars, times: profile-dependent
        # finished progress: no widget bar frozen at its first frame, no carriage returns
        for output in getattr(cell, "outputs", []):
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert not re.search(r"\b0%\|", text) and "\r" not in text, text[:200]
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                assert "DecodingExplorer" in text or "HolePainter" in text   # the widgets, each with a still
                assert "image/png" in output.data


def _markdown(name: str) -> str:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


@pytest.mark.parametrize("name", ["02_train_mvtm", "03_loss_comparison"])
def test_pitfalls_are_cited_by_their_number_in_notebook_06(name):
    text = " ".join(_markdown(name).split())
    assert not re.search(r"pitfalls? \d+ of the course", text)    # a list students never see
    for match in re.finditer(r"pitfalls? (\d+)", text):
        assert text[max(0, match.start() - 13):match.start()] == "notebook 06, ", text[match.start() - 60:match.end()]


def test_notebook_03_tells_the_seed_reports_comparison_as_it_was_and_shows_the_mvtm_code_in_02():
    intro = " ".join(nbformat.read(NOTEBOOKS / "03_loss_comparison.ipynb", as_version=4).cells[0].source.split())
    # the student report did compare the losses: same seed, 50 epochs, one run per loss, FID only
    for fact in ("same seed", "50 epochs", "one run per loss", "FID only", "did not train"):
        assert fact in intro, fact
    assert "nobody" not in intro.lower()
    cells_02 = [cell for cell in nbformat.read(NOTEBOOKS / "02_train_mvtm.ipynb", as_version=4).cells
                if cell.cell_type == "code"]
    code_02 = "\n".join(cell.source for cell in cells_02)
    # the exercise cells: the instructor's edition prints the solution there, the student's
    # asks for it (labkit.teaching.student keeps the cell's exercise: tag)
    asked = " ".join(BY_NAME[name.strip()].where for cell in cells_02 for tag in cell.metadata.get("tags", [])
                     if tag.startswith("exercise:") for name in tag[len("exercise:"):].split(","))
    for function in ("MaskGit.random_token_mask", "MaskGit.forward_tokens", "mvtm_step"):
        if is_student_edition():
            assert function.split(".")[-1] in asked, function
        else:
            assert f"inspect.getsource({function})" in code_02, function
    assert "inspect.getsource(mvtm_loss)" in code_02            # no exercise: shown in both editions
