"""The lab's exercises, in one registry (data only, no labkit import): read by
``labkit.teaching.student`` (the student copy) and ``labkit.grade`` (the grader, and ``require``, the
gate in the notebooks' setup cell).

Each exercise is a region of the package's code between the markers

    # BEGIN SOLUTION TODO2 step1-2
    # HINT: what to write, with the formula and the shapes (one or more HINT lines)
    ...the reference solution...
    # END SOLUTION

which the student copy replaces by the HINT lines and
``raise NotImplementedError("TODO2 step1-2: <the hints>")``. An exercise may own several regions
(the five schedules of ``gamma_func`` are five). To add one: mark its region(s), add an
``Exercise`` below, and a check of the same name in ``labkit.grade``.
"""

from __future__ import annotations

from typing import NamedTuple


class Exercise(NamedTuple):
    todo: str            # the course's numbering, as written after BEGIN SOLUTION
    name: str            # the grader's name: labkit.grade("gamma_func")
    where: str           # where the student writes
    notebooks: tuple     # the notebooks that need it (their number prefixes)
    what: str            # one line
    taught: str          # the notebook whose exercise cell asks for it (checked there, not at the top)


EXERCISES = (
    Exercise("TODO1", "attention", "labkit/core/attention.py: MultiHeadAttention.forward",
             ("01", "02", "03", "04", "05", "06", "07"), "multi-head self-attention, by hand", "01"),
    Exercise("TODO2 step1-1", "encode_to_z", "labkit/core/maskgit.py: MaskGit.encode_to_z",
             ("01", "02", "03", "04", "05", "06", "07"), "image -> VQGAN token grid (B, h * w)", "01"),
    Exercise("TODO2 step1-2", "gamma_func",
             "labkit/core/schedules.py: linear, cosine, square, cubic, sqrt",
             ("02", "03", "04", "05", "06", "07"), "the mask schedules gamma(r)", "02"),
    Exercise("TODO2 step1-3", "forward",
             "labkit/core/maskgit.py: MaskGit.random_token_mask and MaskGit.forward_tokens",
             ("02", "03", "04", "05", "06", "07"), "the MVTM training forward: random mask, masked ids, logits", "02"),
    Exercise("TODO2 step2", "train_step", "labkit/core/train.py: mvtm_step",
             ("02", "03", "04", "05", "06", "07"), "one stage-2 training step: forward, loss, backward, clip, step", "02"),
    Exercise("TODO3", "inpainting", "labkit/core/maskgit.py: MaskGit.inpainting",
             ("04", "05", "06", "07"), "one iteration of iterative decoding", "04"),
)
BY_NAME = {exercise.name: exercise for exercise in EXERCISES}
BY_TODO = {exercise.todo: exercise for exercise in EXERCISES}


def needed_by(notebook: str) -> list[Exercise]:
    """The exercises notebook ``notebook`` (a name such as "04_inpaint" or its number) needs
    and does not ask for itself (those taught in an earlier notebook)."""
    number = str(notebook)[:2]
    return [exercise for exercise in EXERCISES
            if number in exercise.notebooks and exercise.taught < number]


__all__ = ["Exercise", "EXERCISES", "BY_NAME", "BY_TODO", "needed_by"]
