"""Generation and attribute conditioning: the empty grid decoded by the same inpainting step, the
condition tokens, their dropout in training, classifier-free guidance, and the scores."""

import numpy as np
import pytest
import torch
from torch import nn

from labkit import BidirectionalTransformer, MaskGit, get_config
from labkit.config import CONDITION_VALUES
from labkit.core.maskgit import Guided
from labkit.data.datasets import toy_cats
from labkit.data.toycats import ATTRIBUTES, condition_ids, encode_request
from labkit.eval.generation import diversity, entropy, generation_scores
from labkit.lab.run import RunOptions
from labkit.lab.training import build_maskgit, extract_tokens, load_maskgit, train_mvtm, train_vqgan

CFG = get_config("smoke")                       # families masks, the nine attributes as condition
A = len(CFG.condition)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_maskgit(CFG).eval()


def test_the_smoke_and_cpu_profiles_are_conditioned_and_the_gpu_profile_is_the_courses():
    assert CFG.condition == tuple(CONDITION_VALUES) == get_config("cpu").condition
    assert CFG.train_mask == "families" == get_config("cpu").train_mask
    assert get_config("gpu").condition == () and get_config("gpu").train_mask == "random"
    assert [name for name, (kind, _) in ATTRIBUTES.items() if kind == "categorical"] == list(CONDITION_VALUES)
    assert all(len(ATTRIBUTES[name][1]) == count for name, count in CONDITION_VALUES.items())


def test_an_unconditioned_transformer_has_no_condition_weights():
    plain = BidirectionalTransformer(CFG.replace(condition=()))
    assert not any("cond" in name for name in plain.state_dict())
    conditioned = BidirectionalTransformer(CFG)
    extra = {name: value.shape for name, value in conditioned.state_dict().items() if "cond" in name}
    assert extra == {"cond_emb.weight": (sum(CONDITION_VALUES.values()) + A, CFG.dim), "cond_pos": (1, A, CFG.dim)}


def test_the_condition_changes_the_prediction_and_none_means_all_unknown(model):
    ids = torch.randint(0, CFG.num_codebook_vectors, (3, CFG.num_image_tokens), generator=torch.Generator().manual_seed(1))
    unknown = model.unknown_condition(3)
    asked = torch.zeros_like(unknown)
    with torch.no_grad():
        assert torch.equal(model.transformer(ids), model.transformer(ids, unknown))
        assert not torch.allclose(model.transformer(ids), model.transformer(ids, asked))


def test_guidance_follows_cond_plus_w_times_cond_minus_uncond():
    class Stub(nn.Module):
        def forward(self, ids, condition):
            return condition.float().sum(1)[:, None, None].expand(len(ids), ids.shape[1], 2).clone()

    condition, unknown = torch.tensor([[1, 2], [3, 0]]), torch.tensor([[5, 5], [5, 5]])
    ids = torch.zeros(2, 4, dtype=torch.long)
    plain = Guided(Stub(), condition, unknown, 0.0)(ids)
    guided = Guided(Stub(), condition, unknown, 2.0)(ids)
    cond, uncond = torch.tensor([3.0, 3.0]), torch.tensor([10.0, 10.0])
    assert torch.equal(plain[:, 0, 0], cond)
    assert torch.equal(guided[:, 0, 0], cond + 2.0 * (cond - uncond))


def test_training_drops_whole_conditions_and_single_attributes_at_their_rates(model):
    condition = torch.zeros(20000, A, dtype=torch.long)
    dropped = model.training_condition(condition, torch.Generator().manual_seed(0)) == model.unknown_condition(20000)
    all_dropped = dropped.all(1).float().mean()
    expected_all = CFG.condition_dropout + (1 - CFG.condition_dropout) * CFG.attribute_dropout ** A
    assert float(all_dropped) == pytest.approx(expected_all, abs=0.01)
    share = dropped.float().mean()
    assert float(share) == pytest.approx(CFG.condition_dropout + (1 - CFG.condition_dropout) * CFG.attribute_dropout, abs=0.01)


def test_generate_starts_from_an_empty_grid_and_reveals_every_token(model):
    settings = model.decode_settings(sample=True)
    a = model.generate(3, settings, torch.Generator().manual_seed(4))
    b = model.generate(3, settings, torch.Generator().manual_seed(4))
    counts = a.trace.masked_counts()[:, 0]
    assert counts[0] == CFG.num_image_tokens and counts[-1] == 0
    assert bool((counts[1:] < counts[:-1]).all())                         # at least one per step
    assert torch.equal(a.trace.predictions, b.trace.predictions)           # seeded
    assert a.images.shape == (3, 3, CFG.image_size, CFG.image_size) and a.pixel_mask.all()
    asked = model.generate(3, model.decode_settings(sample=True, guidance=2.0), torch.Generator().manual_seed(4),
                           condition=torch.zeros(3, A, dtype=torch.long))
    assert not torch.equal(asked.trace.predictions, a.trace.predictions)


def test_generation_refuses_what_it_cannot_do(model):
    with pytest.raises(ValueError, match="needs a condition"):
        model.generate(2, model.decode_settings(guidance=1.0))
    with pytest.raises(ValueError, match=r"condition must be \(B, 9\)"):
        model.generate(2, condition=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="number of values"):
        model.generate(1, condition=torch.tensor([[99] * A]))
    with pytest.raises(ValueError, match="no condition"):
        MaskGit(CFG.replace(condition=(), train_mask="random")).conditioned(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="guidance=50"):
        model.decode_settings(guidance=50)


def test_requests_and_labels_become_condition_ids():
    codes = encode_request({"fur_colour": "ginger", "mouth": "open"}, CFG.condition)
    assert codes[0] == ATTRIBUTES["fur_colour"][1].index("ginger")
    assert codes[CFG.condition.index("mouth")] == 2
    assert codes[1] == len(ATTRIBUTES["pattern"][1])                       # not asked: unknown
    with pytest.raises(ValueError, match="choose one of"):
        encode_request({"fur_colour": "purple"}, CFG.condition)
    with pytest.raises(ValueError, match="not among the model's condition"):
        encode_request({"tail": "long"}, CFG.condition)
    labels = {"fur_colour": np.array([1, 2]), "pattern": np.array([0, 4])}
    assert condition_ids(labels, ("fur_colour", "pattern")).tolist() == [[1, 0], [2, 4]]
    with pytest.raises(ValueError, match="carry no mouth labels"):
        condition_ids(labels, ("mouth",))


def test_a_conditioned_model_trains_needs_its_conditions_and_reloads(tmp_path):
    cfg = CFG.replace(vq_steps=5, mvtm_steps=6)
    train = toy_cats(cfg, "train", tmp_path / "data", progress=False)
    vqgan, _ = train_vqgan(cfg, train, tmp_path / "runs", RunOptions(progress=False))
    tokens = extract_tokens(vqgan, train, cfg)
    with pytest.raises(ValueError, match="no conditions were given"):
        train_mvtm(cfg, vqgan, tokens, tmp_path / "runs", RunOptions(progress=False))
    with pytest.raises(ValueError, match=r"must be \(n, A\)"):
        train_mvtm(cfg, vqgan, tokens, tmp_path / "runs", RunOptions(progress=False), conditions=torch.zeros(3, A))
    conditions = condition_ids(train.labels, cfg.condition)
    trained, history = train_mvtm(cfg, vqgan, tokens, tmp_path / "runs", RunOptions(progress=False),
                                  conditions=conditions)
    assert history[-1]["step"] == 6
    loaded = load_maskgit(tmp_path / "runs", cfg)
    for key, value in trained.transformer.state_dict().items():
        assert torch.equal(value, loaded.transformer.state_dict()[key]), key
    with pytest.raises(ValueError, match="condition is empty"):
        train_mvtm(cfg.replace(condition=()), vqgan, tokens, tmp_path / "other", RunOptions(progress=False),
                   conditions=conditions)


def test_generation_scores_read_what_was_asked_and_the_variety():
    class Reader:
        attributes = ATTRIBUTES

        def predict(self, images):
            value = images.mean(dim=(1, 2, 3))
            return {"fur_colour": (value > 0.5).long().numpy(), "pattern": np.zeros(len(images), dtype=int)}

    class Features:
        metric = "FD_test"

        def features(self, images):
            return images.flatten(1)[:, :4].numpy()

    images = torch.cat([torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)]) + torch.rand(8, 3, 4, 4) * 0.1
    asked = torch.tensor([[0, 5]] * 4 + [[1, 5]] * 4)                      # pattern not asked (5 values)
    scores = generation_scores(images, Reader(), Features(), images, asked, ("fur_colour", "pattern"))
    assert scores["accuracy"] == {"fur_colour": 1.0}
    assert scores["FD_test"] == pytest.approx(0, abs=1e-9)
    assert scores["diversity"]["fur_colour"] == pytest.approx(1.0)
    assert entropy(np.array([0, 0, 1, 1]), 2) == pytest.approx(np.log(2))
    assert diversity({"pattern": np.zeros(4, int)}, {"pattern": np.array([0, 1, 2, 3])})["pattern"] == 0
