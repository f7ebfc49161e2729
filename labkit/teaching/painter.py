"""Paint your own hole on a test cat, and watch MaskGIT fill it, step by step.

    painter = HolePainter(maskgit, test.tensors([3])[0])
    painter                              # the last value of a cell: canvas, controls, the decode
    painter.paint_line((10, 20), (50, 24)); painter.inpaint()   # the same from code

In a running Jupyter kernel the cat is drawn large on a canvas (``ipycanvas``); dragging the
mouse paints the hole (magenta), "inpaint" decodes it with the chosen schedule, T and token
choice (argmax or sampled), and an iteration slider steps through the decode
(``DecodingExplorer``) beside the smooth fill of the same hole. The status line says which
pixels and tokens the hole covers and what the last decode did. Where widgets do not run
(papermill, nbval, a viewer) the output carries a PNG of the current decode and that line.
"""

from __future__ import annotations

import base64

import ipywidgets as widgets
import numpy as np
import torch

from ..core.masks import pixel_to_token_mask, smooth_fill
from ..core.schedules import SCHEDULES
from .explorer import DecodingExplorer, figure_png
from .plots import image_grid

MAGENTA = (255, 0, 255)


class HolePainter:
    """A hole painter on one image (3, S, S) in [0, 1]; ``scale``: canvas pixels per image
    pixel; ``brush``: the brush's radius in image pixels; ``seed``: the sampled decode's."""

    def __init__(self, maskgit, image: torch.Tensor, scale: int = 6, brush: float = 2.5, seed: int = 0):
        from ipycanvas import Canvas

        self.maskgit, self.image = maskgit, image.float().cpu()
        self.size = self.image.shape[-1]
        self.scale, self.brush, self.seed = scale, brush, seed
        self.mask = np.zeros((self.size, self.size), dtype=bool)
        self.result = self.explorer = None
        self.painting = False
        settings = maskgit.decode_settings()
        self.canvas = Canvas(width=self.size * scale, height=self.size * scale)
        self.canvas.on_mouse_down(self._down)
        self.canvas.on_mouse_move(self._move)
        self.canvas.on_mouse_up(self._up)
        self.schedule = widgets.Dropdown(options=SCHEDULES, value=settings.gamma, description="schedule")
        self.total_iter = widgets.IntSlider(value=settings.total_iter, min=1, max=16, description="T")
        self.sample = widgets.Checkbox(value=False, description="sampled tokens")
        self.run_button = widgets.Button(description="inpaint", button_style="primary")
        self.clear_button = widgets.Button(description="clear the hole")
        self.run_button.on_click(lambda _: self.inpaint())
        self.clear_button.on_click(lambda _: self.clear())
        self.status = widgets.Label()
        self.decode_box = widgets.VBox()
        self.widget = widgets.VBox([
            widgets.HBox([self.canvas, widgets.VBox([self.schedule, self.total_iter, self.sample,
                                                     widgets.HBox([self.run_button, self.clear_button])])]),
            self.status, self.decode_box])
        self._draw()

    # -- painting
    def _pixel(self, x: float, y: float) -> tuple[float, float]:
        return x / self.scale, y / self.scale

    def _down(self, x, y):
        self.painting = True
        self.paint(*self._pixel(x, y))

    def _move(self, x, y):
        if self.painting:
            self.paint(*self._pixel(x, y))

    def _up(self, x, y):
        self.painting = False
        self._say()

    def paint(self, x: float, y: float) -> None:
        """Add a disc of the brush's radius around image pixel (x, y) to the hole."""
        rows, cols = np.ogrid[:self.size, :self.size]
        self.mask |= (cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2 <= self.brush ** 2
        self._draw()

    def paint_line(self, start, end, steps: int = 40) -> None:
        """Paint a stroke from image pixel ``start`` (x, y) to ``end``."""
        for k in np.linspace(0, 1, steps):
            self.paint(start[0] + k * (end[0] - start[0]), start[1] + k * (end[1] - start[1]))
        self._say()

    def set_mask(self, mask) -> None:
        """Use ``mask`` ((S, S) bool, True = missing) as the hole."""
        self.mask = np.asarray(mask, dtype=bool).reshape(self.size, self.size).copy()
        self._draw()
        self._say()

    def clear(self) -> None:
        self.mask[:] = False
        self.result = self.explorer = None
        self.decode_box.children = ()
        self._draw()
        self._say()

    def _draw(self) -> None:
        pixels = (self.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pixels[self.mask] = MAGENTA
        big = pixels.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        self.canvas.put_image_data(big, 0, 0)

    # -- decoding
    def token_hole(self) -> torch.Tensor:
        """(N,) bool: the tokens the painted hole covers."""
        return pixel_to_token_mask(torch.from_numpy(self.mask)[None], self.maskgit.config.downsample)[0]

    def describe(self) -> str:
        """Which pixels and tokens the hole covers, and what the last decode did."""
        tokens = self.token_hole()
        if not tokens.any():
            return "no hole yet: drag the mouse over the cat to paint one"
        grid = self.maskgit.config.token_grid
        rows, cols = np.nonzero(tokens.view(grid, grid).numpy())
        text = (f"hole: {int(self.mask.sum())} pixels, {int(tokens.sum())} of {tokens.numel()} tokens "
                f"(token rows {rows.min()}-{rows.max()}, columns {cols.min()}-{cols.max()})")
        if self.result is not None:
            text += f"; decoded with {self.result.settings}: {len(self.result.trace)} iterations"
        return text

    def _say(self) -> None:
        self.status.value = self.describe()

    def inpaint(self):
        """Decode the painted hole with the controls' settings; returns the ``InpaintResult``."""
        if not self.mask.any():
            self._say()
            return None
        settings = self.maskgit.decode_settings(self.schedule.value, self.total_iter.value,
                                                sample=self.sample.value)
        masks = torch.from_numpy(self.mask)[None]
        self.result = self.maskgit.inpaint(self.image[None], masks, settings,
                                           torch.Generator().manual_seed(self.seed))
        self.explorer = DecodingExplorer(self.result)
        fill = smooth_fill(self.image[None], masks)
        beside = widgets.Image(value=figure_png(image_grid(
            [fill, self.result.images.cpu()], ["smooth fill", "MaskGIT"], title="the same hole")), format="png")
        self.decode_box.children = (widgets.HBox([self.explorer.widget, beside]),)
        self._say()
        return self.result

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        if self.explorer is not None:
            bundle["image/png"] = base64.b64encode(self.explorer.png()).decode("ascii")
        bundle["text/plain"] = f"HolePainter: {self.describe()}. Run the notebook in Jupyter to paint."
        return bundle


__all__ = ["HolePainter"]
