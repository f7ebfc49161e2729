"""An interactive view of iterative decoding, that still reads where widgets do not run.

    result = maskgit.inpaint(images, masks, maskgit.decode_settings("cosine", 8))
    DecodingExplorer(result, gamma="cosine", total_iter=8)     # last value of a cell

In a running Jupyter kernel this shows an image chooser, an iteration slider and a
"paste the known pixels back" switch above one figure (``labkit.teaching.plots.plot_decoding_step``:
the latent mask, the prediction, and the masked-token count per iteration with the
schedule's target). Where widgets cannot run (a notebook viewer, GitHub, a PDF export, a
console) the same output carries a static PNG of the current view and a text line, so the
reader still sees the figure instead of an empty box or a widget's repr.

Frames are rendered on demand and cached, so moving the slider back and forth is instant.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets

from .plots import plot_decoding_step


def figure_png(fig, dpi: int = 90) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class DecodingExplorer:
    """Browse an ``InpaintResult`` iteration by iteration.

    result: what ``MaskGit.inpaint`` returned (any batch size; any sweet spot).
    gamma, total_iter: the schedule and T the result was decoded with; they only draw the
    schedule's target count next to the real one.
    """

    def __init__(self, result, gamma: str | None = None, total_iter: int | None = None,
                 composite: bool = False, dpi: int = 90):
        self.result = result
        self.gamma = gamma
        self.total_iter = total_iter
        self.dpi = dpi
        self._frames: dict[tuple[int, int, bool], bytes] = {}
        n_steps = len(result.trace)
        n_images = result.trace.initial_mask.shape[0]
        self.image_index = widgets.Dropdown(options=[(f"image {i}", i) for i in range(n_images)],
                                            value=0, description="image")
        self.iteration = widgets.IntSlider(value=n_steps, min=0, max=n_steps, step=1,
                                           description="iteration t")
        self.composite = widgets.Checkbox(value=composite, description="paste known pixels back")
        self.view = widgets.Image(format="png")
        for control in (self.image_index, self.iteration, self.composite):
            control.observe(self._update, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.image_index, self.iteration, self.composite]), self.view])
        self._update()

    def frame(self, index: int, t: int, composite: bool = False) -> bytes:
        """PNG bytes of image ``index`` at iteration ``t`` (0 = before decoding)."""
        key = (index, t, composite)
        if key not in self._frames:
            fig = plot_decoding_step(self.result, t, index, self.gamma, self.total_iter, composite)
            self._frames[key] = figure_png(fig, self.dpi)
        return self._frames[key]

    def _current(self) -> tuple[int, int, bool]:
        return self.image_index.value, self.iteration.value, self.composite.value

    def png(self) -> bytes:
        """PNG bytes of the view the controls show now."""
        return self.frame(*self._current())

    def _update(self, change=None) -> None:
        self.view.value = self.png()

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The widget view for live Jupyter; a PNG of the same view and a sentence for
        # every front end that cannot run widgets (they skip the widget mimetype).
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        index, t, _ = self._current()
        bundle["image/png"] = base64.b64encode(self.png()).decode("ascii")
        bundle["text/plain"] = (
            f"DecodingExplorer: {self.image_index.options[-1][1] + 1} image(s), iterations 0.."
            f"{self.iteration.max}; showing image {index} at t = {t}. Run the notebook in "
            "Jupyter to move the slider.")
        return bundle


__all__ = ["DecodingExplorer", "figure_png"]
