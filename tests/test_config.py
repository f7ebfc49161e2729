"""Profiles: one config type, named profiles that differ only in numbers."""

import pytest

from labkit import LabConfig, get_config
from labkit.config import PROFILES


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
    (dict(loss="all"), "masked"),
    (dict(image_size=30), "not divisible"),
    (dict(nonsense=1), "unknown config fields"),
    (dict(train_gamma="exp"), "train_gamma='exp' is not a mask schedule; choose one of linear"),
    (dict(gamma_type="Cosine"), "gamma_type='Cosine' is not a mask schedule"),
    (dict(total_iter=0), "must be an integer >= 1"),
    (dict(total_iter=8.0), "total_iter=8.0"),
])
def test_bad_config_values_are_named(kwargs, match):
    profile = kwargs.pop("profile", "smoke")
    with pytest.raises(ValueError, match=match):
        get_config(profile, **kwargs)
