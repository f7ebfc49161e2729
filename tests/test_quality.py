"""The quality study's harness (benchmarks/bench_quality.py): one override per variant, the
gap-closed ratio, and a run of two variants on the smoke profile with every metric."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from labkit import get_config
from labkit.eval.scoring import gap_closed

_spec = importlib.util.spec_from_file_location(
    "bench_quality", Path(__file__).resolve().parent.parent / "benchmarks" / "bench_quality.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

pytestmark = pytest.mark.filterwarnings("ignore::labkit.eval.fid.SmallSampleWarning",
                                        "ignore::scipy.linalg.LinAlgWarning")


def test_gap_closed_on_made_up_numbers():
    assert gap_closed(0.178, 0.098, 0.034) == pytest.approx(0.08 / 0.144)   # issue 12: 56 %
    assert gap_closed(0.2, 0.2, 0.05) == 0                                  # no better than grey
    assert gap_closed(0.2, 0.05, 0.05) == 1                                 # at the ceiling


# variants whose one change takes two fields (a schedule's shape, the same compute spent another way)
TWO_FIELDS = {"lr-plateau", "batch-half-steps-x2", "budget-to-stage2"}


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_variant_changes_one_thing(profile):
    base = get_config(profile)
    already = {"smoke": {"lr-cosine-10"}, "cpu": {"lr-flat"}}[profile]
    for name in bench.VARIANTS:
        cfg, override = bench.variant_config(base, name)
        changed = {key for key, value in cfg.to_dict().items() if value != base.to_dict()[key]}
        assert len(override) == (0 if name == "baseline" else 2 if name in TWO_FIELDS else 1), name
        # the config differs from the base in exactly the override's new values...
        assert changed == {key for key, value in override.items() if value != getattr(base, key)}, name
        # ...and in something, unless the one value is the profile's already (the study skips it)
        assert bool(changed) == (name != "baseline" and name not in already), name
    with pytest.raises(ValueError, match="train-masks-swap"):
        bench.variant_config(base, "no-such-variant")


def test_scale_shrinks_the_steps_and_stage_2_changes_share_a_tokenizer():
    base = get_config("cpu")
    cfg, _ = bench.variant_config(base, "mvtm-steps-x2", scale=0.1)
    assert (cfg.vq_steps, cfg.mvtm_steps, cfg.warmup_steps) == (120, 200, 10)
    key = bench.stage1_key(base)
    assert bench.stage1_key(bench.variant_config(base, "no-label-smoothing")[0]) == key
    assert bench.stage1_key(bench.variant_config(base, "codebook-half")[0]) != key


def test_the_harness_on_smoke_scores_every_metric(tmp_path, capsys):
    results = bench.run_study("smoke", ["baseline", "no-label-smoothing", "fill-smooth"], scale=0.2,
                              runs=tmp_path / "runs", data=tmp_path / "data")
    assert [row["variant"] for row in results] == ["baseline", "no-label-smoothing", "fill-smooth"]
    base, _, smooth = results
    # fill-smooth decodes the baseline's model (no training of its own) with another input
    assert smooth["stage2_run"] == base["stage2_run"] and smooth["override"] == '{"fill": "smooth"}'
    assert smooth["hole_l1"] != base["hole_l1"]
    for column in ("l1_masked_input", "l1_tokenizer_ceiling", "l1_smooth_fill"):
        assert smooth[column] == base[column]                  # the baselines do not move
    for row in results:
        for column in bench.COLUMNS:
            if column.endswith("_min") or column in ("hole_l1", "gap_closed") or column.startswith("FD_"):
                assert math.isfinite(row[column]), (row["variant"], column)
        assert row["gap_closed"] == pytest.approx(gap_closed(
            row["l1_masked_input"], row["hole_l1"], row["l1_tokenizer_ceiling"]))
        assert row["hole_l1"] == row["rows"]["maskgit"]["hole_l1"]
        assert 0 <= row["token_accuracy"] <= 1 and row["stage2_min"] > 0
    assert results[0]["stage1_run"] == results[1]["stage1_run"]          # one tokenizer for both
    assert results[1]["stage1_cpu_min"] < results[0]["stage1_cpu_min"]   # reused, not retrained
    assert results[0]["stage2_run"] != results[1]["stage2_run"]
    folder = tmp_path / "runs" / "quality" / "smoke-scale0.2"
    assert len(json.loads((folder / "results.json").read_text())) == 3
    assert (folder / "results.csv").read_text().splitlines()[0].split(",") == list(bench.COLUMNS)
    table = bench.format_table(results)
    assert "gap" in table and "no-label-smoothing" in table
