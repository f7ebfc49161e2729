"""Figures of the lab. Every function returns a matplotlib ``Figure``.

Figures are built without ``pyplot``: nothing needs a display (scripts and CI run as is),
nothing piles up in pyplot's figure list, and Jupyter shows a figure once, when it is the
last value of a cell. ``save_figure(fig, path)`` writes one to disk.

    fig = image_grid([masked, inpainted, original], ["masked", "inpainted", "original"])
    fig = plot_history(history, ["loss", "accuracy"])
    save_figure(fig, "runs/cpu/inpaint_grid.png")
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from ..eval.scoring import BASELINES, PIXEL_BASELINES


def _to_hwc(image: torch.Tensor):
    """(3, H, W) in [0, 1] -> (H, W, 3) NumPy array for imshow."""
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def image_grid(rows, row_titles=None, col_titles=None, title: str | None = None,
               cell_size: float = 1.3) -> Figure:
    """A grid of images: ``rows`` is a list of (B, 3, H, W) tensors in [0, 1], one per row.

    ``row_titles`` label the rows (on the left), ``col_titles`` the columns (on top).
    """
    rows = [torch.as_tensor(row) for row in rows]
    n_cols = max(len(row) for row in rows)
    fig = Figure(figsize=(cell_size * n_cols + (0.8 if row_titles else 0), cell_size * len(rows)
                          + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row):
                ax.imshow(_to_hwc(row[c]), interpolation="nearest")
            else:
                ax.axis("off")
            if row_titles and c == 0:
                ax.set_ylabel(row_titles[r], fontsize=9)
            if col_titles and r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (folders created; the format comes from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_history(history: list, keys, title: str | None = None, log_keys=("loss", "l1")) -> Figure:
    """Training curves: one panel per key of ``history`` (the list of dicts a training loop
    returns), against the step. Keys missing from some entries (validation scores) are
    drawn where present; ``log_keys`` get a log scale."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    fig = Figure(figsize=(3.6 * len(keys), 2.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if not points:
            raise KeyError(f"no history entry has {key!r}; available: "
                           f"{sorted({k for entry in history for k in entry})}")
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1.5)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if key in log_keys and min(values) > 0:
            ax.set_yscale("log")                          # labels at 1, 2, 5 x 10^k only, as "0.05"
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    if title:
        fig.suptitle(title)
    return fig


@torch.no_grad()
def show_reconstructions(vqgan, images: torch.Tensor, n: int = 8) -> Figure:
    """Originals (top) and their VQGAN round trip (bottom), with each image's L1 error."""
    images = torch.as_tensor(images)[:n].float()
    device = next(vqgan.parameters()).device
    was_training = vqgan.training
    vqgan.eval()
    _, indices, _ = vqgan.encode(images.to(device))
    recon = vqgan.decode_indices(indices).cpu()
    vqgan.train(was_training)
    errors = (recon - images).abs().mean(dim=(1, 2, 3))
    return image_grid([images, recon], ["original", "VQGAN"],
                      col_titles=[f"L1 {e:.3f}" for e in errors],
                      title=f"tokenizer round trip ({indices.shape[-2]}x{indices.shape[-1]} tokens)")


__all__ = ["image_grid", "save_figure", "plot_history", "show_reconstructions"]


# ----------------------------------------------------------------------------- masking and decoding
#
# Token states in decoding figures: known (never masked), revealed at an earlier iteration,
# revealed at this iteration, still masked.
TOKEN_STATES = ("known", "revealed earlier", "revealed now", "still masked")
TOKEN_STATE_COLOURS = ((0.86, 0.86, 0.86), (0.22, 0.49, 0.78), (1.0, 0.55, 0.1), (0.08, 0.08, 0.08))


def mask_overlay(images: torch.Tensor, token_mask: torch.Tensor, patch: int,
                 colour=(0.08, 0.08, 0.08), alpha: float = 0.85) -> torch.Tensor:
    """Darken the patches of masked tokens: images (B, 3, H, W) in [0, 1], token_mask (B, N)
    bool (True = masked, N = (H / patch) * (W / patch)) -> (B, 3, H, W)."""
    images = torch.as_tensor(images).float().cpu()
    batch, _, height, width = images.shape
    grid = token_mask.detach().cpu().view(batch, 1, height // patch, width // patch).float()
    pixels = grid.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)
    tint = torch.tensor(colour, dtype=images.dtype).view(1, 3, 1, 1)
    return images * (1 - alpha * pixels) + tint * alpha * pixels


def decoding_states(trace, index: int = 0) -> torch.Tensor:
    """(t* + 1, h, w) int: the state (index into ``TOKEN_STATES``) of every token of image
    ``index`` before decoding (row 0) and after each iteration t = 1..t* of ``trace``."""
    initial = trace.initial_mask[index].cpu()
    masks = torch.cat([initial[None], trace.still_masked[:, index].cpu()])      # (t*+1, N)
    side = math.isqrt(initial.numel())
    states = torch.zeros(masks.shape, dtype=torch.long)                           # known
    states[1:][initial.expand_as(masks[1:])] = 1                                  # revealed earlier
    states[1:][masks[:-1] & ~masks[1:]] = 2                                       # revealed now
    states[masks] = 3                                                             # still masked
    return states.view(-1, side, side)


def _state_image(states: torch.Tensor):
    """(h, w) int states -> (h, w, 3) RGB array."""
    return torch.tensor(TOKEN_STATE_COLOURS)[states].numpy()


def _state_legend(fig: Figure, **kwargs) -> None:
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=c, edgecolor="0.5", label=s)
               for s, c in zip(TOKEN_STATES, TOKEN_STATE_COLOURS)]
    fig.legend(handles=handles, ncol=4, fontsize=8, frameon=False, **kwargs)


def plot_schedules(counts: dict, highlight: str | None = None) -> Figure:
    """The mask schedules, and what they do to one hole.

    counts: {schedule name: [m_0 = n0, m_1, ..., m_T]} tokens still masked before decoding
    and after each iteration, as the decoder produced them (``DecodeTrace.masked_counts``).
    Left: gamma(r) on [0, 1]; middle: share of the hole still masked after t; right: tokens
    revealed at each iteration. ``highlight`` draws one schedule thicker.
    """
    from ..core.schedules import gamma_func

    names = list(counts)
    total_iter = len(counts[names[0]]) - 1
    n0 = counts[names[0]][0]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_gamma, ax_left, ax_step = fig.subplots(1, 3)
    r = np.linspace(0, 1, 201)
    t = np.arange(total_iter + 1)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        m = np.asarray(counts[name], dtype=float)
        thick = 2.6 if name == highlight else 1.4
        line, = ax_gamma.plot(r, gamma_func(name)(r), lw=thick, label=name)
        colour = line.get_color()
        ax_gamma.plot(t / total_iter, gamma_func(name)(t / total_iter), "o", ms=3, color=colour)
        ax_left.plot(t, m / n0, "o-", lw=thick, ms=4, color=colour, label=name)
        ax_step.bar(t[1:] - 0.4 + width * (k + 0.5), m[:-1] - m[1:], width, color=colour, label=name)
    ax_gamma.set(xlabel="r = t / T", ylabel="gamma(r)", title="mask schedule gamma(r)")
    ax_left.set(xlabel="iteration t", ylabel="m_t / n0", xticks=t,
                title=f"share of the hole still masked (T = {total_iter})")
    ax_step.set(xlabel="iteration t", ylabel="tokens", xticks=t[1:],
                title=f"tokens revealed at iteration t (n0 = {n0})")
    for ax in (ax_gamma, ax_left, ax_step):
        ax.grid(alpha=0.3)
    ax_gamma.legend(fontsize=8)
    return fig


def plot_decoding_trace(result, indices=(0,), composite: bool = False, ground_truth: bool = True,
                        cell_size: float = 1.25) -> Figure:
    """Iterative decoding, step by step, of the images ``indices`` of an ``InpaintResult``.

    Two rows per image: the latent mask on the token grid (known, revealed earlier, revealed
    at this iteration, still masked) and the decoded prediction. Columns: the input (the
    hole's tokens all masked; the masked image), then iterations 1..t*, then the ground truth.
    ``composite`` pastes the known pixels back into the predictions.
    """
    indices = [indices] if isinstance(indices, int) else list(indices)
    steps = result.steps(composite).cpu()                       # (t*, B, 3, H, W)
    n_steps = steps.shape[0]
    n_cols = n_steps + 1 + int(ground_truth)
    fig = Figure(figsize=(cell_size * n_cols + 0.9, cell_size * 2 * len(indices) + 0.7),
                 layout="constrained")
    axes = fig.subplots(2 * len(indices), n_cols, squeeze=False)
    counts = result.trace.masked_counts().cpu()                 # (t*+1, B)
    for row, index in enumerate(indices):
        states = decoding_states(result.trace, index)
        ax_tokens, ax_images = axes[2 * row], axes[2 * row + 1]
        for col in range(n_steps + 1):
            ax_tokens[col].imshow(_state_image(states[col]), interpolation="nearest")
            image = result.masked_input[index] if col == 0 else steps[col - 1, index]
            ax_images[col].imshow(_to_hwc(image), interpolation="nearest")
            if row == 0:
                ax_tokens[col].set_title("input" if col == 0 else f"t = {col}", fontsize=9)
            ax_tokens[col].set_xlabel(f"{int(counts[col, index])} masked", fontsize=8, labelpad=2)
        if ground_truth:
            ax_tokens[-1].axis("off")
            ax_images[-1].imshow(_to_hwc(result.original[index]), interpolation="nearest")
            if row == 0:
                ax_images[-1].set_title("ground truth", fontsize=9)
        ax_tokens[0].set_ylabel(f"image {index}\nlatent mask", fontsize=9)
        ax_images[0].set_ylabel("composite" if composite else "prediction", fontsize=9)
        for ax in (*ax_tokens, *ax_images):
            ax.set_xticks([])
            ax.set_yticks([])
    _state_legend(fig, loc="outside lower center")
    return fig


def plot_decoding_step(result, t: int, index: int = 0, gamma: str | None = None,
                       total_iter: int | None = None, composite: bool = False) -> Figure:
    """One iteration t (0 = before decoding) of image ``index`` of an ``InpaintResult``: the
    latent mask, the prediction, the ground truth, and the number of masked tokens per
    iteration with t marked, beside the schedule's target floor(gamma(t / T) n0) (``gamma``
    and ``total_iter``: default, the settings the result was decoded with)."""
    from ..core.schedules import gamma_func

    gamma = result.settings.gamma if gamma is None else gamma
    total_iter = result.settings.total_iter if total_iter is None else total_iter

    states = decoding_states(result.trace, index)
    counts = result.trace.masked_counts()[:, index].cpu().numpy()
    n_steps = len(counts) - 1
    if not 0 <= t <= n_steps:
        raise ValueError(f"t must lie in 0..{n_steps} (0 = before decoding), got {t}")
    image = result.masked_input[index] if t == 0 else result.steps(composite)[t - 1, index]
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax_tokens, ax_image, ax_truth, ax_count = fig.subplots(1, 4, width_ratios=(1, 1, 1, 1.6))
    ax_tokens.imshow(_state_image(states[t]), interpolation="nearest")
    ax_tokens.set_title("latent mask", fontsize=10)
    ax_image.imshow(_to_hwc(image), interpolation="nearest")
    ax_image.set_title("masked input" if t == 0 else ("composite" if composite else "prediction"),
                       fontsize=10)
    ax_truth.imshow(_to_hwc(result.original[index]), interpolation="nearest")
    ax_truth.set_title("ground truth", fontsize=10)
    for ax in (ax_tokens, ax_image, ax_truth):
        ax.set_xticks([])
        ax.set_yticks([])
    steps = np.arange(n_steps + 1)
    r = np.linspace(0, n_steps / total_iter, 101)
    ax_count.plot(r * total_iter, np.floor(gamma_func(gamma)(r) * counts[0]), color="0.6",
                  lw=1, label=f"floor(gamma(t/T) n0), {gamma}")
    ax_count.plot(steps, counts, "o-", color=TOKEN_STATE_COLOURS[1], ms=4, label="still masked")
    ax_count.plot([t], [counts[t]], "o", color=TOKEN_STATE_COLOURS[2], ms=10, zorder=3)
    ax_count.set(xlabel="iteration t", ylabel="masked tokens", xticks=steps, ylim=(-1, counts[0] + 2))
    ax_count.grid(alpha=0.3)
    ax_count.legend(fontsize=8)
    revealed = 0 if t == 0 else int(counts[t - 1] - counts[t])
    fig.suptitle(f"image {index}, iteration {t}/{n_steps}: {int(counts[t])} tokens still masked, "
                 f"{revealed} revealed at this iteration", fontsize=11)
    _state_legend(fig, loc="outside lower center")
    return fig


def plot_attributes(labels: dict, attributes: dict | None = None, columns: int = 6) -> Figure:
    """Histograms of a toy-cat label set ({attribute: (n,)}, as ``ImageSet.labels``): bars of
    the values of each categorical attribute, a histogram of each continuous one."""
    from ..data.toycats import ATTRIBUTES

    attributes = attributes or ATTRIBUTES
    names = [name for name in attributes if name in labels]
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(2.3 * columns, 1.9 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        kind, values = attributes[name]
        data = np.asarray(labels[name])
        if kind == "categorical":
            counts = np.bincount(data.astype(int), minlength=len(values))
            ax.bar(range(len(values)), counts, color="tab:blue")
            ax.set_xticks(range(len(values)), values, rotation=60, ha="right", fontsize=7)
        else:
            ax.hist(data, bins=20, range=values, color="tab:green")
            ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle(f"attributes of {len(next(iter(labels.values())))} images", fontsize=11)
    return fig


def plot_code_usage(indices: torch.Tensor, num_codes: int) -> Figure:
    """How often each codebook entry is used by a set of token grids, most used first."""
    counts = torch.bincount(torch.as_tensor(indices).flatten().cpu(), minlength=num_codes)
    shares = (counts.sort(descending=True).values.double() / counts.sum()).numpy()
    used = int((counts > 0).sum())
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(1, num_codes + 1), shares, width=1.0, color="tab:purple")
    ax.axhline(1 / num_codes, color="0.3", ls=":", lw=1, label="uniform use")
    ax.set(xlabel="code rank (most used first)", ylabel="share of tokens",
           title=f"codebook use: {used} of {num_codes} codes ({used / num_codes:.0%})")
    ax.legend(fontsize=8)
    return fig


def plot_attention_maps(image: torch.Tensor, maps, query: int, layers=None,
                        cell_size: float = 1.45) -> Figure:
    """Where one query token looks, per head, in some layers of the transformer.

    image: (3, H, W) in [0, 1], the input the maps were computed on (e.g. the masked image);
    maps: one (heads, N, N) attention map per layer (``BidirectionalTransformer.attention_maps``
    of one image); query: the token index whose attention row is drawn;
    layers: which layers (default: the first and the last). Each panel shows the query's
    weights over the N keys on the token grid, over a faded copy of the image; the query's
    patch is outlined in cyan. The heads of a layer share one colour scale, from 0 to the
    layer's largest weight drawn (its colour bar), so an even spread looks even and heads can be
    compared; each layer has its own, so a diffuse layer stays visible beside a peaked one.
    """
    from matplotlib.patches import Rectangle

    layers = [0, len(maps) - 1] if layers is None else list(layers)
    layers = sorted(set(layers))
    heads, n_tokens = maps[0].shape[0], maps[0].shape[-1]
    side = math.isqrt(n_tokens)
    height, width = image.shape[-2:]
    patch = height // side
    background = _to_hwc(image)
    faded = 0.35 * background + 0.65 * background.mean(axis=2, keepdims=True)
    row_q, col_q = divmod(query, side)
    fig = Figure(figsize=(cell_size * (heads + 1) + 0.6, cell_size * len(layers) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(layers), heads + 1, squeeze=False)
    rows = {layer: maps[layer][:, query].detach().float().cpu().view(heads, side, side) for layer in layers}
    for r, layer in enumerate(layers):
        weights = rows[layer]
        top = float(weights.max())
        axes[r, 0].imshow(background, interpolation="nearest")
        axes[r, 0].set_ylabel(f"layer {layer + 1}", fontsize=9)
        for h in range(heads):
            ax = axes[r, h + 1]
            ax.imshow(faded, interpolation="nearest")
            shown = ax.imshow(weights[h].numpy(), cmap="magma", alpha=0.75, interpolation="nearest",
                              vmin=0.0, vmax=top, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            if r == 0:
                ax.set_title(f"head {h + 1}", fontsize=9)
            ax.set_xlabel(f"max {weights[h].max():.1%}", fontsize=7, labelpad=1)
        for ax in axes[r]:
            ax.add_patch(Rectangle((col_q * patch - 0.5, row_q * patch - 0.5), patch, patch,
                                   fill=False, edgecolor="cyan", lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(shown, ax=axes[r, 1:], shrink=0.85, pad=0.01, label=f"weight, layer {layer + 1}")
    axes[0, 0].set_title("input, query", fontsize=9)
    fig.suptitle(f"attention of token {query} (row {row_q}, column {col_q}) over the "
                 f"{side}x{side} token grid", fontsize=10)
    return fig


BASELINE_STYLE = {   # method: (colour, line style) of its horizontal line in ``plot_sweep``
    "masked_input": ("0.55", (0, (1, 1))),
    "smooth_fill": ("tab:olive", (0, (3, 1))),
    "vqgan_masked": ("tab:brown", "--"),
    "one_shot": ("tab:purple", "-."),
    "tokenizer_ceiling": ("tab:green", (0, (5, 1, 1, 1))),
    "real_vs_real": ("black", ":"),
}
BASELINE_LABELS = {**BASELINES, "real_vs_real": "two independent real draws (yardstick)"}


def plot_sweep(result, metric: str | None = None, composite: bool = True,
               errors: dict | None = None, keep=("smooth_fill", "one_shot")) -> Figure:
    """Score against the stopping iteration t, one panel per schedule and one line per T,
    from a ``labkit.eval.sweep.SweepResult``; the baselines and the real-vs-real yardstick are the
    horizontal lines shared by all panels. ``errors``: {(schedule, T, t): SE}, e.g. from
    ``result.standard_errors(metric)``, drawn as +-1 SE bars. The axis is linear and zoomed
    to the decoded curves: a baseline far outside them is named in the legend with its value
    ("off the axis") instead of squashing the curves against one edge; the baselines in ``keep``
    (the no-learning smooth fill and one-shot decoding, the ones to beat) are always drawn."""
    from matplotlib.ticker import MaxNLocator

    metric = metric or result.settings["metrics"][0]
    schedules = result.settings["schedules"]
    errors = errors or {}
    fig = Figure(figsize=(3.7 * len(schedules) + 1.2, 3.6), layout="constrained")
    axes = fig.subplots(1, len(schedules), sharey=True, squeeze=False)[0]
    curves = {}
    for schedule in schedules:
        for total in result.settings["total_iters"]:
            rows = sorted(result.select(method="maskgit", schedule=schedule, T=total, metric=metric,
                                        composite=composite), key=lambda row: row["t"])
            if rows:
                t = np.array([row["t"] for row in rows])
                value = np.array([row["value"] for row in rows])
                se = np.array([errors.get((schedule, total, row["t"]), 0.0) for row in rows])
                curves[schedule, total] = (t, value, np.nan_to_num(se))
    low = min((np.min(v - e) for _, v, e in curves.values()), default=0.0)
    high = max((np.max(v + e) for _, v, e in curves.values()), default=1.0)
    span = max(high - low, 1e-9)
    baselines = {}
    for method in BASELINE_LABELS:
        rows = [row for row in result.select(method=method, metric=metric)
                if row["composite"] in (composite, None) or method in PIXEL_BASELINES]
        if rows:
            baselines[method] = rows[0]["value"]
    shown = {method: value for method, value in baselines.items()
             if low - 0.5 * span <= value <= high + 0.5 * span or method in keep}
    low, high = min([low, *shown.values()]), max([high, *shown.values()])
    pad = 0.06 * max(high - low, 1e-9)
    for ax, schedule in zip(axes, schedules):
        for total in result.settings["total_iters"]:
            if (schedule, total) in curves:
                t, value, se = curves[schedule, total]
                ax.errorbar(t, value, yerr=se if se.any() else None, fmt="o-", ms=3, capsize=2,
                            lw=1.2, label=f"T = {total}")
        for method, value in baselines.items():
            label, (colour, style) = BASELINE_LABELS[method], BASELINE_STYLE[method]
            if method in shown:
                ax.axhline(value, color=colour, lw=1.2, ls=style, label=f"{label}: {value:.4g}")
            else:
                ax.plot([], [], color=colour, lw=1.2, ls=style, label=f"{label}: {value:.4g} (off the axis)")
        ax.set(title=schedule, xlabel="stop after iteration t", ylim=(low - pad, high + pad))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    bars = " (bars: +-1 SE over images)" if errors else ""
    axes[0].set_ylabel(f"{metric} ({'composite' if composite else 'raw decode'}){bars}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return fig


__all__ += ["TOKEN_STATES", "TOKEN_STATE_COLOURS", "mask_overlay", "decoding_states", "plot_schedules",
            "plot_decoding_trace", "plot_decoding_step", "plot_attributes", "plot_code_usage",
            "plot_attention_maps", "BASELINE_STYLE", "plot_sweep"]


def plot_mask_traces(traces: dict, index: int = 0, cell_size: float = 1.05) -> Figure:
    """Latent-mask traces of several decodings of one image, side by side.

    traces: {label: DecodeTrace} (e.g. one decoding per schedule of the same image), drawn
    one row each; columns: before decoding (t = 0), then iterations t = 1..t*. Each panel is
    the token grid of image ``index`` coloured by ``TOKEN_STATES`` (``decoding_states``) and
    labelled with the trace's count of still-masked tokens (``DecodeTrace.masked_counts``).
    A trace stopped early (a sweet spot) leaves its last panels empty.
    """
    labels = list(traces)
    if not labels:
        raise ValueError("traces is empty: give {label: DecodeTrace}, e.g. one per schedule")
    n_cols = max(len(trace) for trace in traces.values()) + 1
    fig = Figure(figsize=(cell_size * n_cols + 1.0, cell_size * len(labels) + 0.9), layout="constrained")
    axes = fig.subplots(len(labels), n_cols, squeeze=False)
    for row, label in enumerate(labels):
        trace = traces[label]
        states = decoding_states(trace, index)                       # (t* + 1, h, w)
        counts = trace.masked_counts()[:, index].cpu()               # (t* + 1,)
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(states):
                ax.axis("off")
                continue
            ax.imshow(_state_image(states[col]), interpolation="nearest")
            ax.set_xlabel(f"{int(counts[col])} masked", fontsize=8, labelpad=2)
            if row == 0:
                ax.set_title("input" if col == 0 else f"t = {col}", fontsize=9)
        axes[row, 0].set_ylabel(label, fontsize=9)
    _state_legend(fig, loc="outside lower center")
    return fig


def plot_decodes_side_by_side(results: dict, index: int = 0, cell_size: float = 1.05) -> Figure:
    """Several decodings of the same image, side by side: for each ``InpaintResult`` of
    ``results`` ({label: result}, e.g. one per schedule, decoded with every step) two rows, the
    latent mask (``TOKEN_STATES``) and the prediction after each iteration; the first column is
    the input, the last the ground truth."""
    labels = list(results)
    if not labels:
        raise ValueError("results is empty: give {label: InpaintResult}, e.g. one per schedule")
    n_steps = max(len(result.trace) for result in results.values())
    n_cols = n_steps + 2
    fig = Figure(figsize=(cell_size * n_cols + 1.2, 2 * cell_size * len(labels) + 0.9), layout="constrained")
    axes = fig.subplots(2 * len(labels), n_cols, squeeze=False)
    for row, label in enumerate(labels):
        result = results[label]
        states = decoding_states(result.trace, index)
        counts = result.trace.masked_counts()[:, index].cpu()
        steps = result.steps(False).cpu()
        if len(steps) != len(result.trace):
            raise ValueError(f"{label}: decode every step (decode_every_step=True) to show its predictions")
        ax_tokens, ax_images = axes[2 * row], axes[2 * row + 1]
        for col in range(n_cols):
            for ax in (ax_tokens[col], ax_images[col]):
                ax.set_xticks([])
                ax.set_yticks([])
            if col == n_cols - 1:
                ax_tokens[col].axis("off")
                ax_images[col].imshow(_to_hwc(result.original[index]), interpolation="nearest")
                if row == 0:
                    ax_images[col].set_title("ground truth", fontsize=9)
                continue
            if col >= len(states):
                ax_tokens[col].axis("off")
                ax_images[col].axis("off")
                continue
            ax_tokens[col].imshow(_state_image(states[col]), interpolation="nearest")
            ax_tokens[col].set_xlabel(f"{int(counts[col])} masked", fontsize=8, labelpad=2)
            image = result.masked_input[index] if col == 0 else steps[col - 1, index]
            ax_images[col].imshow(_to_hwc(image), interpolation="nearest")
            if row == 0:
                ax_tokens[col].set_title("input" if col == 0 else f"t = {col}", fontsize=9)
        ax_tokens[0].set_ylabel(f"{label}\nlatent mask", fontsize=9)
        ax_images[0].set_ylabel("prediction", fontsize=9)
    _state_legend(fig, loc="outside lower center")
    return fig


__all__ += ["plot_mask_traces", "plot_decodes_side_by_side"]
