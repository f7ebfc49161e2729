"""Profiles: one config type, named profiles that differ only in numbers."""

import dataclasses

import pytest

from labkit import LabConfig, get_config
from labkit.config import FIELD_RULES, PROFILES


def test_gpu_profile_has_the_course_sizes():
    cfg = get_config("gpu")
    assert (cfg.image_size, cfg.token_grid, cfg.num_image_tokens) == (64, 16, 256)
    assert (cfg.num_codebook_vectors, cfg.mask_token_id) == (1024, 1024)
    assert (cfg.dim, cfg.num_layers, cfg.mlp_dim, cfg.num_heads, cfg.head_dim) == (768, 15, 1536, 16, 48)
    assert cfg.choice_temperature == 4.5 and cfg.gamma_type == "cosine"
    assert cfg.betas == (0.9, 0.96)


def test_cpu_profile_keeps_the_course_token_grid():
    cfg = get_config("cpu")
    assert (cfg.image_size, cfg.token_grid) == (64, 16)


def test_default_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "smoke")
    assert get_config().profile == "smoke"
    monkeypatch.delenv("LABKIT_PROFILE")
    assert get_config().profile == "cpu"


def test_profiles_share_one_type_and_round_trip_through_json():
    for name in PROFILES:
        cfg = get_config(name)
        assert type(cfg) is LabConfig
        assert LabConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_and_architecture_diff():
    base = get_config("smoke")
    other = get_config("smoke", dim=64, mvtm_steps=3)
    assert other.dim == 64 and other.mvtm_steps == 3
    assert base.arch_diff(other, "transformer") == {"dim": (32, 64)}
    assert base.arch_diff(other, "vqgan") == {}


@pytest.mark.parametrize("kwargs,match", [
    (dict(profile="laptop"), "unknown profile"),
    (dict(dim=30), "divisible by num_heads"),
    (dict(loss="all"), "loss='all': expected 'masked' .* or 'full'"),
    (dict(image_size=30), "not divisible"),
    (dict(nonsense=1), "unknown config fields"),
    (dict(train_gamma="exp"), "train_gamma='exp': expected a mask schedule, one of linear"),
    (dict(train_mask="brush"), "train_mask='brush': expected one of random, holes, mixed"),
    (dict(mvtm_lr_floor=1.5), r"mvtm_lr_floor=1.5: expected a number in \[0, 1\]"),
    (dict(mvtm_lr_hold=1.0), r"mvtm_lr_hold=1.0: expected a number in \[0, 1\)"),
    (dict(gamma_type="Cosine"), "gamma_type='Cosine': expected a mask schedule"),
    (dict(total_iter=0), r"total_iter=0: expected an integer >= 1"),
    (dict(total_iter=8.0), r"total_iter=8.0: expected an integer >= 1"),
    (dict(total_iter=True), r"total_iter=True"),
    (dict(sweet_spot=0), r"sweet_spot=0: expected None or an integer >= 1"),
    (dict(sweet_spot=5), r"sweet_spot=5 is after the last iteration total_iter=4: choose sweet_spot in 1\.\.4"),
    (dict(choice_temperature=float("nan")), r"choice_temperature=nan: expected a finite number >= 0"),
    (dict(choice_temperature=float("inf")), r"choice_temperature=inf"),
    (dict(choice_temperature=-0.5), r"choice_temperature=-0.5"),
    (dict(choice_temperature=1e300), r"choice_temperature=1e\+300: .* at most 1e\+06"),
    (dict(label_smoothing=1.0), r"label_smoothing=1.0: expected a number in \[0, 1\)"),
    (dict(dropout=-0.1), r"dropout=-0.1"),
    (dict(mvtm_batch_size=0), r"mvtm_batch_size=0: expected an integer >= 1"),
    (dict(vq_channels=()), r"vq_channels=\(\): expected a non-empty tuple"),
    (dict(mvtm_lr=0.0), r"mvtm_lr=0.0: expected a finite number > 0"),
    (dict(betas=(0.9,)), r"betas=\(0.9,\): expected two numbers in \[0, 1\)"),
    (dict(catnet_lr=float("nan")), r"catnet_lr=nan"),
])
def test_bad_config_values_are_named(kwargs, match):
    profile = kwargs.pop("profile", "smoke")
    with pytest.raises(ValueError, match=match):
        get_config(profile, **kwargs)


def test_every_field_has_exactly_one_rule_and_the_profiles_pass_it():
    assert set(FIELD_RULES) == {field.name for field in dataclasses.fields(LabConfig)}
    for name in PROFILES:
        get_config(name)


def test_decoding_settings_are_config_fields():
    cfg = get_config("smoke", sweet_spot=3, gamma_type="square")
    assert (cfg.gamma_type, cfg.total_iter, cfg.sweet_spot, cfg.choice_temperature) == ("square", 4, 3, 4.5)
    assert get_config("cpu").sweet_spot is None
    assert LabConfig.from_dict(cfg.to_dict()) == cfg


def test_an_unknown_profile_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "cpu2")
    with pytest.raises(ValueError, match=r"\$LABKIT_PROFILE is 'cpu2', which is not a profile"):
        get_config()
