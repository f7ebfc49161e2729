"""Progress bars that end as one line of text: in a terminal, in a live notebook, in a saved one.

    from labkit.lab.progress import tqdm          # instead of: from tqdm.auto import tqdm
    for step in tqdm(range(total), desc="stage 2 (mvtm)"): ...

``tqdm`` takes tqdm's arguments and returns a tqdm bar (``update``, ``set_postfix``, ``close``,
iteration, ``with``). What it draws depends on ``$LABKIT_PROGRESS``:

- ``auto`` (the default): in a Jupyter kernel a widget bar that, when it closes, is replaced by
  its final line of text, e.g. ``stage 2 (mvtm): 1000/1000 [11:36, loss=4.065]``. A saved
  notebook then shows where the work ended, in every viewer, and needs no widget model when it
  is reopened (a widget's own text fallback is the "0%" of its first frame). Outside a kernel,
  tqdm's usual terminal bar.
- ``text``: whole lines only: at most one a minute while the work runs, and the final line when
  it ends. For notebooks executed without a browser (papermill, nbval, the notebook runner) and
  for log files: their saved output is plain text, without widgets or carriage returns.
"""

from __future__ import annotations

import functools
import os
import sys

from tqdm.std import tqdm as _terminal_tqdm

MODES = ("auto", "text")
TEXT_INTERVAL_S = 60.0              # the text bars' lines while the work runs, at most this often


def progress_mode() -> str:
    """``$LABKIT_PROGRESS``: "auto" (the default) or "text"."""
    mode = os.environ.get("LABKIT_PROGRESS", "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"LABKIT_PROGRESS={mode!r} is not a progress mode; choose one of {MODES} "
                         "(text: plain lines, for notebooks run without a browser)")
    return mode


def _in_kernel() -> bool:
    """True in a Jupyter kernel (the test tqdm.autonotebook makes), False in a terminal or IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def bar_line(bar, final: bool = True) -> str:
    """One line for ``bar``: ``desc: n/total [elapsed<remaining, postfix]`` (no remaining when final)."""
    info = bar.format_dict
    n, total, elapsed = info["n"], info["total"], info["elapsed"]
    unit = "" if info["unit"] == "it" else f" {info['unit']}"
    count = f"{n:g}/{total:g}{unit}" if total else f"{n:g}{unit}"
    timing = bar.format_interval(elapsed)
    if not final and total and n > bar.initial:
        remaining = (total - n) * elapsed / (n - bar.initial)
        timing += f"<{bar.format_interval(remaining)}"
    postfix = f", {info['postfix']}" if info.get("postfix") else ""
    desc = f"{info['prefix']}: " if info.get("prefix") else ""
    return f"{desc}{count} [{timing}{postfix}]"


class TextBar(_terminal_tqdm):
    """A tqdm bar that writes whole lines: one at most every ``mininterval`` seconds (default a
    minute) while it runs, and its final line when it closes."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", TEXT_INTERVAL_S)
        if kwargs.get("file") is None:          # stdout in a notebook: stderr is drawn in red there
            kwargs["file"] = sys.stdout if _in_kernel() else sys.stderr
        kwargs["gui"] = True                    # tqdm then neither draws nor erases on its own
        self._last_line = None
        super().__init__(*args, **kwargs)
        self._last_line_t = getattr(self, "start_t", 0.0)   # a disabled bar has no start time

    def _write_line(self, line: str) -> None:
        if line != self._last_line:
            self.fp.write(line + "\n")
            self.fp.flush()
            self._last_line = line

    def display(self, msg=None, pos=None):
        # tqdm redraws on every set_postfix too: keep to one line per interval
        now = self._time()
        if msg is None and self.n > self.initial and now - self._last_line_t >= self.mininterval:
            self._write_line(bar_line(self, final=False))
            self._last_line_t = now
        return True

    def clear(self, *args, **kwargs):
        pass                                     # nothing on screen to erase

    def close(self):
        if self.disable:
            return
        line = bar_line(self, final=True)
        super().close()
        if self.leave is not False:
            self._write_line(line)


@functools.cache
def _widget_bar_class():
    """The widget bar, or None where ipywidgets cannot be imported."""
    try:
        from IPython.display import display
        from tqdm.notebook import tqdm_notebook
        import ipywidgets  # noqa: F401  (tqdm.notebook imports it lazily)
    except ImportError:
        return None

    class WidgetBar(tqdm_notebook):
        """tqdm's notebook widget, replaced by its final line of text when it closes."""

        def __init__(self, *args, **kwargs):
            kwargs["display"] = False            # shown here instead, with a handle to replace it
            super().__init__(*args, **kwargs)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            if self.disable:
                return
            line = bar_line(self, final=True)
            super().close()
            if self._handle is None:
                return
            self._handle.update({"text/plain": line if self.leave is not False else ""}, raw=True)
            for widget in (self.container, *self.container.children):
                for part in (getattr(widget, "style", None), widget.layout, widget):
                    if part is not None:
                        part.close()          # the kernel and the front end drop the models
            self._handle = None

    return WidgetBar


def tqdm(*args, **kwargs):
    """A progress bar with tqdm's arguments (see the module docstring for what it draws)."""
    if progress_mode() == "text":
        return TextBar(*args, **kwargs)
    if _in_kernel():
        widget_bar = _widget_bar_class()
        return (widget_bar or TextBar)(*args, **kwargs)
    return _terminal_tqdm(*args, **kwargs)


__all__ = ["tqdm", "TextBar", "bar_line", "progress_mode", "MODES"]
