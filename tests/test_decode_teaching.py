"""What notebooks 00, 01 and 04 teach: the figures show what the decoder did, and every
sentence that draws a conclusion follows from the numbers printed beside it.

The sentences are checked on a fresh smoke-profile run of each notebook and, when the
committed notebook carries outputs (the lead's cpu-profile run), on those too.
"""

import math
import re
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import torch
from scipy import stats

from labkit import MaskGit, get_config
from labkit.teaching.student import is_student_edition
from labkit.teaching.plots import TOKEN_STATE_COLOURS, TOKEN_STATES, plot_mask_traces

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FLOAT = r"[-+]?\d+(?:\.\d+)?"


# ----------------------------------------------------------------------------- plot_mask_traces

def _traces():
    cfg = get_config("smoke")
    torch.manual_seed(0)
    maskgit = MaskGit(cfg).eval()
    z = torch.randint(0, cfg.num_codebook_vectors, (2, cfg.num_image_tokens))
    hole = torch.zeros(2, cfg.num_image_tokens, dtype=torch.bool)
    hole[0, 5:40] = True
    hole[1, 20:31] = True
    traces = {name: maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(gamma=name, total_iter=6), torch.Generator().manual_seed(0))
              for name in ("linear", "cosine", "square")}
    traces["square, t* = 3"] = maskgit.inpaint_tokens(z, hole, maskgit.decode_settings(gamma="square", total_iter=6, sweet_spot=3), torch.Generator().manual_seed(0))
    return traces


@pytest.mark.parametrize("index", [0, 1])
def test_mask_traces_draw_the_decoders_masked_counts(index):
    traces = _traces()
    fig = plot_mask_traces(traces, index=index)
    axes = np.array(fig.axes[:len(traces) * 7]).reshape(len(traces), 7)
    masked_colour = np.array(TOKEN_STATE_COLOURS[TOKEN_STATES.index("still masked")])
    for row, (label, trace) in enumerate(traces.items()):
        counts = trace.masked_counts()[:, index].tolist()
        assert axes[row, 0].get_ylabel() == label
        for col, ax in enumerate(axes[row]):
            if col >= len(counts):                    # stopped early: nothing drawn there
                assert not ax.get_images() and not ax.axison
                continue
            pixels = ax.get_images()[0].get_array()   # (h, w, 3), one pixel per token
            black = int(np.all(np.isclose(pixels, masked_colour), axis=-1).sum())
            assert black == counts[col], (label, col)
            assert ax.get_xlabel() == f"{counts[col]} masked"
    # the schedules differ on this hole: the rows are not copies of one another
    assert traces["linear"].masked_counts()[:, index].tolist() != traces["cosine"].masked_counts()[:, index].tolist()


def test_mask_traces_refuse_an_empty_dict():
    with pytest.raises(ValueError, match="empty"):
        plot_mask_traces({})


# ----------------------------------------------------------------------------- the notebooks' sentences

def _printed(notebook) -> str:
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _execute(name, runs, tmp_path, **parameters) -> str:
    executed = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(executed),
                               parameters={"profile": "smoke", "runs_root": str(runs), **parameters},
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False)
    return _printed(nbformat.read(executed, as_version=4))


def _committed(name) -> str:
    text = _printed(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4))
    if not text:
        pytest.skip(f"{name}.ipynb is committed without outputs")
    return text


def _follows(d, se, threshold, n, verdict, lower, higher):
    """The verdict of a printed paired comparison follows from its own numbers (4 decimals)."""
    critical = stats.t.ppf(0.975, n - 1)
    rounding = 5e-5 * (critical + 1) + 1e-9          # se and the threshold are printed to 4 decimals
    assert threshold == pytest.approx(critical * se, abs=rounding)
    if abs(abs(d) - threshold) <= rounding + 5e-5:
        return                                        # on the edge after rounding
    if abs(d) < threshold:
        assert verdict.startswith("within noise"), (d, threshold, verdict)
    else:
        assert verdict == (lower if d < 0 else higher), (d, threshold, verdict)


def check_inpaint_text(text: str) -> None:
    # the walk through one iteration: the checks hold, and m_1 follows from n0; the student
    # edition leaves the rule check out (its code is the solution; the grader checks the rules)
    rules = ("prediction = argmax in the hole, the known tokens unchanged: True",
             "the m_1 least confident stay masked: True")
    for rule in rules:
        assert (rule in text) != is_student_edition(), rule
    walk = re.search(r"n0 = (\d+) masked tokens of \d+; m_1 = floor\((\w+)\(1/(\d+)\) x \d+\) = (\d+): (\d+) revealed",
                     text)
    n0, gamma, total, m_1, revealed = walk.groups()
    assert gamma == "cosine"
    assert int(m_1) == min(math.floor(math.cos(math.pi / 2 / int(total)) * int(n0)), int(n0) - 1)
    assert int(revealed) == int(n0) - int(m_1)
    noise = re.search(rf"noise's std \(({FLOAT})\) is ({FLOAT}) times the spread of the confidences \(({FLOAT})\), "
                      rf"so the first reveals are (close to a random choice|still mostly the model's most confident)"
                      rf".*?\(mean rank ({FLOAT})\)", text)
    ranks = re.search(rf"(\d+) tokens revealed at t = 1: ({FLOAT}) without noise, ({FLOAT}) with tau = [\d.]+; "
                      rf"({FLOAT}) for a random choice", text)
    noise_std, ratio, spread, kind, mean_rank = noise.groups()
    assert float(noise_std) == pytest.approx(4.5 * (1 - 1 / int(total)) * math.pi / math.sqrt(6), abs=0.01)
    if float(spread) >= 0.1:
        assert float(ratio) == pytest.approx(float(noise_std) / float(spread), rel=0.1)
    _, none, noisy, random = (float(v) for v in ranks.groups())
    assert float(mean_rank) == noisy
    assert kind == ("close to a random choice" if abs(noisy - random) < abs(noisy - none)
                    else "still mostly the model's most confident")

    # the schedules side by side: counts follow the rule; the sentence names the right ones
    counts = {name: [int(v) for v in values.split(", ")] for name, values in
              re.findall(r"^(linear|cosine|square)\s+masked after t = 0\.\.\d+: \[([\d, ]+)\]", text, re.M)}
    assert set(counts) == {"linear", "cosine", "square"}
    gamma_of = {"linear": lambda r: 1 - r, "cosine": lambda r: math.cos(math.pi * r / 2), "square": lambda r: 1 - r * r}
    for name, values in counts.items():
        for t in range(1, len(values)):
            assert values[t] == min(math.floor(gamma_of[name](t / (len(values) - 1)) * values[0]),
                                    max(values[t - 1] - 1, 0)), (name, values)
    half = re.search(r"revealed in the first half \(t <= (\d+)\) of \d+ tokens: linear (\d+), cosine (\d+), "
                     r"square (\d+): (\w+) commits earliest, (\w+) keeps", text)
    t_half = int(half[1])
    early = {name: values[0] - values[t_half] for name, values in counts.items()}
    assert [early["linear"], early["cosine"], early["square"]] == [int(half[i]) for i in (2, 3, 4)]
    assert early[half[5]] == max(early.values()) and early[half[6]] == min(early.values())

    # temperature and sampling: each verdict follows from the numbers quoted with it
    comparisons = re.findall(
        rf"^(.+?) vs (.+?): hole L1 ({FLOAT}) vs ({FLOAT}), difference ({FLOAT}) ± ({FLOAT}) \(SE over (\d+) images; "
        rf"needs \|d\| > ({FLOAT})\) -> (.+)$", text, re.M)
    settings = [c for c in comparisons if c[0].startswith(("argmax", "sampled"))]
    assert len(settings) == 4
    for a, b, mean_a, mean_b, d, se, n, threshold, verdict in settings:
        assert float(d) == pytest.approx(float(mean_a) - float(mean_b), abs=2e-4)
        _follows(float(d), float(se), float(threshold), int(n), verdict, f"{a} lower", f"{a} higher")

    # the sweet spot: the best t is the argmin of the printed curve, its comparison honest
    curve = [float(v) for v in re.findall(rf"stop after t = +\d+: hole L1 ({FLOAT})", text)]
    best = re.search(rf"lowest hole L1 on these (\d+) images: t = (\d+) \(({FLOAT})\); t = \d+ vs t = (\d+): "
                     rf"difference ({FLOAT}) ± ({FLOAT}) \(SE over \d+ images; needs \|d\| > ({FLOAT})\) -> (.+)$",
                     text, re.M)
    n, best_t, best_value, other_t, d, se, threshold, verdict = best.groups()
    assert curve[int(best_t) - 1] == min(curve) == float(best_value)
    assert int(other_t) == (1 if int(best_t) != 1 else len(curve))
    _follows(float(d), float(se), float(threshold), int(n), verdict, f"t = {best_t} lower", "impossible")
    assert "notebook 05 measures the trend over t" in text

    # the attention of the trained heads: the sentence's range and counts match the printed shares
    shares = {name: [int(v) for v in re.findall(r"(\d+)%", values)] for name, values in
              re.findall(r"^(trained|untrained) +attention on masked keys, per head: (.+)$", text, re.M)}
    masked_share = int(re.search(r"masked share of the tokens: (\d+)%", text)[1])
    sentence = re.search(r"Untrained, the heads put (\d+)% to (\d+)% .*?Trained, they range from (\d+)% to (\d+)%: "
                         r"(\d+) of (\d+) heads put less than the masked share on masked keys \(they favour the "
                         r"visible tokens\), (\d+) more; (\d+) put more than half of their weight there", text, re.S)
    low_u, high_u, low_t, high_t, below, heads, above, over_half = (int(v) for v in sentence.groups())
    trained = shares["trained"]
    assert (low_u, high_u) == (min(shares["untrained"]), max(shares["untrained"]))
    assert (low_t, high_t) == (min(trained), max(trained))
    assert heads == len(trained) and below + above <= heads
    assert below >= sum(v < masked_share for v in trained)     # rounding can only hide a head
    assert above >= sum(v > masked_share for v in trained)
    assert sum(v > 50 for v in trained) <= over_half <= sum(v >= 50 for v in trained)


def check_attention_text(text: str) -> None:
    table = {(int(d_k), scaled == "True"): (float(std), float(top), float(entropy), float(one_hot), float(dead))
             for d_k, scaled, std, top, entropy, one_hot, dead in re.findall(
                 rf"^ +(\d+) +(True|False) +({FLOAT}) +({FLOAT}) +({FLOAT}) +({FLOAT})% +({FLOAT})%$", text, re.M)}
    assert len(table) == 10
    widest = max(d_k for d_k, _ in table)
    sentence = re.search(rf"d_k = 48 gives scores of std ({FLOAT}) .*?a mean top weight of ({FLOAT}) per row .*?"
                         rf"at d_k = (\d+), ({FLOAT})% of the rows put more than 0.99 on one key and ({FLOAT})% pass no "
                         rf"gradient", text)
    assert float(sentence[1]) == table[(48, False)][0]
    assert float(sentence[2]) == pytest.approx(table[(48, False)][1], abs=0.006)
    assert int(sentence[3]) == widest
    assert (float(sentence[4]), float(sentence[5])) == table[(widest, False)][3:]
    scaled = re.search(rf"score std stays between ({FLOAT}) and ({FLOAT}).*?at most ({FLOAT})% of the rows pass no "
                       rf"gradient", text)
    assert float(scaled[1]) == min(v[0] for (d, s), v in table.items() if s)
    assert float(scaled[2]) == max(v[0] for (d, s), v in table.items() if s)
    assert float(scaled[3]) == max(v[4] for (d, s), v in table.items() if s)

    entropy = re.search(rf"entropy +({FLOAT}) to ({FLOAT}) +\(uniform ln N = ({FLOAT})\)", text)
    verdict = re.search(r"Untrained, every head's row is (almost uniform|far from uniform)", text)
    assert verdict[1] == ("almost uniform" if float(entropy[1]) > 0.95 * float(entropy[3]) else "far from uniform")
    below = re.search(rf"its entropy is at most ({FLOAT})% below ln N", text)
    assert float(below[1]) == pytest.approx(100 * (1 - float(entropy[1]) / float(entropy[3])), abs=0.03)

    timings = {name: [float(v) for v in re.findall(rf"N=\d+: ({FLOAT}) ms", line)]
               for name, line in re.findall(r"^(hand-written|fused SDPA) +(N=.*)$", text, re.M)}
    slopes = re.search(rf"^hand-written +time ~ N\^({FLOAT}) from N = 64 to 256, N\^({FLOAT}) from N = 512 to 2048",
                       text, re.M)
    hand = timings["hand-written"]                                        # N = 64 ... 2048, doubling
    assert float(slopes[1]) == pytest.approx(math.log(hand[2] / hand[0]) / math.log(4), abs=0.05)
    assert float(slopes[2]) == pytest.approx(math.log(hand[5] / hand[3]) / math.log(4), abs=0.05)
    rises = float(slopes[2]) > 1.6 and float(slopes[1]) < float(slopes[2])
    assert ("close to the N^2 of its score matrix" in text) == (rises and float(slopes[2]) < 2.3)
    assert ("steeper than the N^2 that its score matrix's FLOPs predict" in text) == (rises and float(slopes[2]) >= 2.3)
    assert ("do not show the expected rise towards N^2" in text) == (not rises)
    share = re.search(r"the fused kernel takes (\d+)% of the hand-written", text)
    assert int(share[1]) == pytest.approx(100 * timings["fused SDPA"][-1] / hand[-1], abs=1.5)
    assert "about half" not in text


def check_tokenizer_text(text: str) -> None:
    header = re.search(r"^ +the course +this profile \((\w+)\)$", text, re.M)
    profile = get_config(header[1])
    course = get_config("gpu")
    rows = dict(re.findall(r"^(codebook size K|code vector \(latent dim\)) +(\S.*\S)$", text, re.M))
    assert rows["codebook size K"].split() == [str(course.num_codebook_vectors), str(profile.num_codebook_vectors)]
    assert rows["code vector (latent dim)"].split() == [str(course.latent_dim), str(profile.latent_dim)]
    assert course.num_codebook_vectors == 1024 and course.latent_dim == 256 and course.token_grid == 16

    log = re.search(rf"in the last training batch \((\d+) images\) (\d+) of (\d+) codes used \(\d+%\), "
                    rf"perplexity ({FLOAT})", text)
    whole = re.search(rf"codebook: (\d+) of (\d+) codes used, perplexity ({FLOAT})", text)
    table = dict((label.strip(), (int(images), codes, perplexity)) for label, images, codes, perplexity in re.findall(
        rf"^(training log: its last batch|validation: batches of \d+ \(20 draws\)|validation: the whole set) +(\d+) +"
        rf"(\d+(?: ± \d+)?) +(\d+(?: ± \d+)?)$", text, re.M))
    assert len(table) == 3
    batch_label = next(label for label in table if label.startswith("validation: batches"))
    assert table["training log: its last batch"] == (int(log[1]), log[2], f"{float(log[4]):.0f}")
    assert table["validation: the whole set"][1:] == (whole[1], f"{float(whole[3]):.0f}")
    mean, sd = (float(v) for v in table[batch_label][2].split(" ± "))
    verdict = re.search(r"The log's perplexity is (within|outside) two standard deviations", text)
    gap, spread = abs(float(log[4]) - mean), 2 * sd
    if abs(gap - spread) > 1.5:                                           # not on the edge after rounding
        assert verdict[1] == ("within" if gap <= spread else "outside")
    sample = [tuple(int(float(v)) for v in row) for row in
              re.findall(rf"^ +(\d+) +(\d+) +(\d+) +({FLOAT})$", text, re.M)]
    assert sample and sample[-1][0] == table["validation: the whole set"][0]
    assert (sample[-1][2], sample[-1][3]) == (int(whole[1]), round(float(whole[3])))
    codes_used = [row[2] for row in sample]
    assert codes_used == sorted(codes_used)                               # more images never use fewer codes


CHECKS = {"04_inpaint": check_inpaint_text, "01_attention": check_attention_text,
          "00_data_and_tokenizer": check_tokenizer_text}


@pytest.mark.parametrize("name", list(CHECKS))
def test_fresh_run_prints_sentences_that_follow_from_its_numbers(name, smoke_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    CHECKS[name](_execute(name, smoke_runs, tmp_path))


@pytest.mark.parametrize("name", list(CHECKS))
def test_committed_outputs_print_sentences_that_follow_from_their_numbers(name):
    CHECKS[name](_committed(name))


def test_the_decoding_lesson_states_its_formulas_before_the_code_and_points_into_notebook_06():
    notebook = nbformat.read(NOTEBOOKS / "04_inpaint.ipynb", as_version=4)
    sources = [cell.source for cell in notebook.cells]
    exercise = next(i for i, cell in enumerate(notebook.cells)
                    if "exercise:inpainting" in cell.metadata.get("tags", []))
    formulas = "\n".join(sources[:exercise])
    for formula in (r"\tau \Big(1 - \frac{t}{T}\Big) g_i", r"\lfloor \gamma(t/T)\, n_0 \rfloor", r"+\infty",
                    r"\operatorname{Gumbel}(0, 1)", "official MaskGIT", "argmax"):
        assert formula in formulas, formula
    text = "\n".join(sources)
    assert "pitfall" in text
    for found in re.finditer(r"pitfall \d+", text):
        before = text[max(0, found.start() - 60):found.start()]
        assert "notebook 06" in before, before + found[0]
    assert "Lowest hole L1 on these 4 images" not in text
    # 01 no longer needs notebook 02's checkpoint
    attention = "\n".join(cell.source for cell in nbformat.read(NOTEBOOKS / "01_attention.ipynb", as_version=4).cells
                          if cell.cell_type == "code")
    assert not re.search(r"load_maskgit|stage_mvtm|mvtm\.safetensors", attention)
