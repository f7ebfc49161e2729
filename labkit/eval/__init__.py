"""Scores: FID (pytorch-fid's Inception), CatNet and FD_catnet, pixel metrics, inpaint-and-score,
the sweep over schedules x T x t, and verdicts computed from the numbers with their noise."""
