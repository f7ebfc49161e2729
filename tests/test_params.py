"""Notebook parameters of the wrong type fail at once, naming the parameter and the fix."""

import nbformat
import papermill
import pytest

from labkit import get_config
from labkit.lab.notebook_runner import NOTEBOOKS_DIR, SERIES, run_series
from labkit.lab.params import RULES, ParameterError, check_parameters


def parameters_cell(name: str) -> dict:
    """The embedded defaults of a notebook's cell tagged ``parameters``."""
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)
    return values


@pytest.mark.parametrize("name", SERIES)
def test_every_notebook_parameter_has_a_rule_and_its_default_passes(name):
    defaults = parameters_cell(name)
    assert set(defaults) <= set(RULES), f"no rule for {set(defaults) - set(RULES)} in labkit.lab.params"
    assert check_parameters(defaults) == defaults


@pytest.mark.parametrize("name, value, fix", [
    ("total_iter", "8", "-p total_iter 8"),            # papermill -r passes strings
    ("total_iter", 8.0, "-p total_iter 8"),            # -p total_iter 8.0
    ("total_iter", 0, "-p total_iter 8"),
    ("seed", True, "-p seed 0"),                       # a bool is not a seed
    ("gamma", 8, "-p gamma cosine"),
    ("gamma", "cosin", "-p gamma cosine"),
    ("image_indices", "[0, 1]", "-y 'image_indices: [0, 1, 2]'"),   # -p keeps lists as strings
    ("total_iters", [2, "4"], "-y 'total_iters: [2, 4, 8]'"),
    ("label_smoothing", 1.5, "-p label_smoothing 0.1"),
    ("profile", "big", "-p profile cpu"),
    ("loss", "Masked", "-p loss masked"),
    ("runs_root", 3, "-p runs_root /scratch/runs"),
    ("choice_temperature", float("nan"), "-p choice_temperature 4.5"),
    ("choice_temperature", -1, "-p choice_temperature 4.5"),
    ("schedules", ["cosine", "exp"], "-y 'schedules: [linear, cosine]'"),
])
def test_a_wrong_value_names_the_parameter_its_type_and_the_fix(name, value, fix):
    with pytest.raises(ParameterError) as error:
        check_parameters(**{name: value})
    message = str(error.value)
    assert f"{name} = {value!r} ({type(value).__name__})" in message
    assert RULES[name][0] in message and fix in message


def test_every_wrong_parameter_is_listed_in_one_error():
    with pytest.raises(ParameterError, match="parameters:") as error:
        check_parameters({"total_iter": "8", "gamma": 3, "seed": 0})
    assert "total_iter = '8'" in str(error.value) and "gamma = 3" in str(error.value)
    assert "seed" not in str(error.value)


def test_sweet_spot_after_the_last_iteration_is_refused():
    assert check_parameters(total_iter=8, sweet_spot=8)["sweet_spot"] == 8
    with pytest.raises(ParameterError, match=r"sweet_spot=9 is after .* choose sweet_spot in 1\.\.8.*"
                                             r"-p sweet_spot 6"):
        check_parameters(total_iter=8, sweet_spot=9)


@pytest.mark.parametrize("name, field, value", [
    ("total_iter", "total_iter", 0), ("gamma", "gamma_type", "cosin"), ("loss", "loss", "all"),
    ("label_smoothing", "label_smoothing", 1.0), ("choice_temperature", "choice_temperature", float("inf")),
    ("sweet_spot", "sweet_spot", 0), ("seed", "seed", "0"),
])
def test_the_verdict_and_its_words_are_the_configs(name, field, value):
    with pytest.raises(ValueError) as from_config:
        get_config("smoke", **{field: value})
    with pytest.raises(ParameterError) as from_params:
        check_parameters(**{name: value})
    expected = str(from_config.value).split(": expected ")[1]
    assert f"expected {expected}, e.g. papermill" in str(from_params.value)


def test_other_names_in_the_namespace_are_ignored():
    assert check_parameters({"cfg": object(), "In": [], "total_iter": 4}) == {"total_iter": 4}


def test_papermill_raw_parameter_stops_the_notebook_in_the_first_cell(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("total_iter = 8", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("from labkit.lab.params import check_parameters\n"
                                                "check_parameters(globals())")]
    source = tmp_path / "nb.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(str(source), str(tmp_path / "ok.ipynb"), parameters={"total_iter": 12},
                               kernel_name="python3", language="python", progress_bar=False)
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(source), str(tmp_path / "bad.ipynb"),
                                   parameters={"total_iter": "12"}, kernel_name="python3",
                                   language="python", progress_bar=False)
    assert error.value.ename == "ParameterError" and "total_iter = '12' (str)" in error.value.evalue


def test_the_notebook_runner_checks_parameters_before_starting_a_kernel(tmp_path):
    with pytest.raises(ParameterError, match="total_iter = 8.5"):
        run_series("smoke", ["04_inpaint"], {"total_iter": 8.5}, runs_root=tmp_path, log=lambda *a, **k: None)
    assert not (tmp_path / "smoke").exists()


def test_image_indices_beyond_the_test_split_are_refused_with_the_range(tmp_path):
    with pytest.raises(ParameterError, match=r"image_indices = \[0, 999\]: the smoke profile's test "
                                             r"split has 16 images: choose indices in 0\.\.15"):
        run_series("smoke", ["04_inpaint"], {"image_indices": [0, 999]}, runs_root=tmp_path,
                   log=lambda *a, **k: None)
    check_parameters(profile="smoke", image_indices=[15])
    check_parameters(profile="smoke", image_indices=[999], data_root="/course")   # its size: once loaded
    assert not (tmp_path / "smoke").exists()


def test_a_profile_parameter_that_disagrees_with_the_runs_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"-p profile 'cpu' disagrees with the run's profile 'smoke' "
                                         r"\(--profile.*: choose the profile once, with --profile cpu"):
        run_series("smoke", ["04_inpaint"], {"profile": "cpu"}, runs_root=tmp_path, log=lambda *a, **k: None)
    assert not (tmp_path / "smoke").exists()
