"""The SSJDN model's contract: shapes, ranges, gradients, switches."""
import pytest
import torch

from ssjdn.core.model.api import create_model
from ssjdn.core.model.network import DIRECTIONS


def _batch(model, n=4):
    images = torch.randint(0, 256, (n, 3, 70, 90), dtype=torch.uint8)
    texts = ["a plane on the runway", "dense forest", "green farmland fields", "two white planes"][:n]
    return images, texts


def test_embeddings_are_unit_norm_with_the_configured_size(tiny_model):
    images, texts = _batch(tiny_model)
    img = tiny_model.encode_images(images)
    txt = tiny_model.encode_texts(texts)
    assert img.shape == (4, tiny_model.config["embed_dim"]) == txt.shape
    assert torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(4), atol=1e-5)
    scores = tiny_model.similarity(img, txt)
    assert scores.shape == (4, 4) and scores.abs().max() <= 1 + 1e-5


def test_salience_maps_cover_both_directions_and_three_scales_in_unit_range(tiny_model):
    images, _ = _batch(tiny_model, 2)
    _, maps = tiny_model.encode_images(images, with_maps=True)
    side = tiny_model.input_size // 8
    for kind in (maps.sem, maps.ssm):
        assert set(kind) == set(DIRECTIONS)
        for direction in DIRECTIONS:
            assert [tuple(m.shape) for m in kind[direction]] == [(2, side >> s, side >> s) for s in range(3)]
            for m in kind[direction]:
                assert m.min() >= 0 and m.max() <= 1
    # The end scale of each pass has no neighbour to suppress: its SSM is all ones.
    assert torch.all(maps.ssm["coarse_to_fine"][2] == 1)
    assert torch.all(maps.ssm["fine_to_coarse"][0] == 1)
    assert not torch.all(maps.ssm["coarse_to_fine"][0] == 1)


def test_a_sem_unit_sees_no_edge_on_uniform_features(tiny_model):
    # Zero padding made every finest SEM map bright along one edge (issue 16): a unit given
    # the same feature everywhere must give the same value everywhere, borders included.
    width = int(tiny_model.config["image"]["width"])
    features = torch.rand(1, width, 1, 1).expand(1, width, 8, 8).contiguous()
    for units in tiny_model.bsd.sem_units.values():
        for unit in units:
            sem = unit(features)
            assert torch.allclose(sem, sem[..., 4:5, 4:5].expand_as(sem), atol=1e-6)


def test_salience_keys_leave_out_the_maps_that_are_constant_by_construction():
    from ssjdn.core.model.network import salience_keys
    keys = salience_keys()
    assert ("ssm", "coarse_to_fine", 2) not in keys and ("ssm", "fine_to_coarse", 0) not in keys
    assert len(keys) == 10 and ("sem", "fine_to_coarse", 0) in keys and ("ssm", "coarse_to_fine", 0) in keys


def test_query_map_covers_the_finest_grid_and_depends_on_the_words(tiny_model):
    images, _ = _batch(tiny_model, 3)
    side = tiny_model.input_size // 8
    plane = tiny_model.query_maps(images, "two white planes")
    assert plane.shape == (3, side, side) and plane.dtype == torch.float32
    assert bool(torch.isfinite(plane).all()) and float(plane.min()) >= 0 and float(plane.max()) > 0
    forest = tiny_model.query_maps(images, "dense forest")
    assert not torch.allclose(plane, forest)
    # A query given as its embedding gives the same map; batching changes nothing.
    vector = tiny_model.encode_texts(["two white planes"])[0]
    assert torch.allclose(tiny_model.query_maps(images[1:2], vector), plane[1:2], atol=1e-5)
    assert not tiny_model.training and all(p.grad is None for p in tiny_model.parameters())


def test_query_map_does_not_favour_a_side_of_the_tile(tiny_model):
    # The backbone pads its stride-2 convolutions on the top and left only, and the shipped
    # model's single-view map left the top and left quarters of a tile nearly dark; the map
    # averages the four 90-degree views, so turning the picture turns the map with it.
    images, _ = _batch(tiny_model, 2)
    maps = tiny_model.query_maps(images, "two white planes")
    turned = tiny_model.query_maps(torch.rot90(images, 1, (-2, -1)), "two white planes")
    assert torch.allclose(turned, torch.rot90(maps, 1, (-2, -1)), atol=1e-5, rtol=1e-4)


def _with_views(views):
    torch.manual_seed(0)
    return create_model("tiny", overrides={"image": {"test_views": views}})


@pytest.mark.parametrize("views, turns", [(2, (2,)), (4, (1, 2, 3))])
def test_test_views_average_the_turned_views_so_turning_the_tile_keeps_its_vector(views, turns):
    # Measured on UCM val (docs/training.md): the mean of a tile's 0 and 180 degree views
    # scored ~1 mR above the single view; the vector must not depend on which way is up.
    model, single = _with_views(views), _with_views(1)
    images, _ = _batch(model)
    vectors = model.encode_images(images)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)
    for turn in turns:
        turned = model.encode_images(torch.rot90(images, turn, (-2, -1)))
        assert torch.allclose(turned, vectors, atol=1e-5)
    mean = sum(single.encode_images(torch.rot90(images, turn, (-2, -1)))
               for turn in range(0, 4, 4 // views))
    assert torch.allclose(vectors, torch.nn.functional.normalize(mean, dim=-1), atol=1e-5)
    assert not torch.allclose(vectors, single.encode_images(images), atol=1e-3)
    # An index written with one setting must not take vectors of the other.
    assert model.fingerprint != single.fingerprint


@pytest.mark.parametrize("views", [0, 3, "4", 1.5, True])
def test_test_views_other_than_1_2_or_4_are_refused_with_the_choices(views):
    from ssjdn.core.errors import UserError
    with pytest.raises(UserError, match="test_views must be 1, 2 or 4"):
        _with_views(views)


def test_query_map_works_without_bsd():
    torch.manual_seed(0)
    model = create_model("tiny", overrides={"bsd": False, "lsd": False})
    images, _ = _batch(model, 2)
    maps = model.query_maps(images, "a plane on the runway")
    assert maps.shape == (2, model.input_size // 8, model.input_size // 8) and float(maps.max()) > 0


def test_encoding_does_not_depend_on_batching(tiny_model):
    images, _ = _batch(tiny_model)
    whole = tiny_model.encode_images(images)
    split = tiny_model.encode_images(images, batch_size=3)
    assert torch.allclose(whole, split, atol=1e-5)


def test_empty_inputs_give_empty_embeddings(tiny_model):
    assert tiny_model.encode_texts([]).shape == (0, tiny_model.config["embed_dim"])


def test_every_trainable_part_receives_gradient():
    torch.manual_seed(0)
    model = create_model("tiny").train()
    images, texts = _batch(model)
    batch = model.tokenize(texts)
    out = model(model.preprocess_images(images), batch["input_ids"], batch["attention_mask"])
    loss, parts = model.criterion(out, torch.tensor([0, 2, 0, 1]))
    # Make every hinge active so no branch is cut off by a zero hinge on random weights.
    (loss + (out.img_emb @ out.txt_emb.T).sum()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == [], missing
    assert {"triplet", "image_ce", "text_ce"} <= set(parts)


@pytest.mark.parametrize("switch", ["bsd", "lsd"])
def test_switching_a_part_off_removes_it(switch):
    model = create_model("tiny", overrides={switch: False})
    assert not hasattr(model, switch)
    images, texts = _batch(model, 2)
    assert model.encode_images(images).shape == (2, model.config["embed_dim"])
    assert model.encode_texts(texts).shape == (2, model.config["embed_dim"])


def test_bsd_on_a_global_path_starts_as_the_global_pool_and_then_learns_clues():
    # bsd_global_path: BSD's fused clues are added to VSE++'s globally pooled feature, with
    # the fusion's last layer at zero, so training starts from the no-BSD model and BSD
    # only adds what pays (on frozen maps it did not pay as a replacement, docs/training.md).
    torch.manual_seed(0)
    model = create_model("tiny", overrides={"bsd_global_path": True, "lsd": False})
    plain = create_model("tiny", overrides={"bsd": False, "lsd": False})
    plain.load_state_dict(model.state_dict(), strict=False)
    images, texts = _batch(model)
    assert torch.allclose(model.encode_images(images), plain.encode_images(images), atol=1e-6)
    assert model.encode_images(images, with_maps=True)[1].sem   # the app keeps its SEM maps
    model.train()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        batch = model.tokenize(texts)
        out = model(model.preprocess_images(images), batch["input_ids"], batch["attention_mask"])
        optimiser.zero_grad()
        (out.img_emb @ out.txt_emb.T).diagonal().sum().neg().backward()
        optimiser.step()
    sem_conv = model.bsd.sem_units["coarse_to_fine"][0].net[0].weight
    assert sem_conv.grad.abs().sum() > 0 and model.bsd.fuse[-1].weight.abs().sum() > 0


def test_frozen_stages_get_no_gradient_and_keep_batchnorm_statistics():
    model = create_model("tiny", overrides={"image": {"freeze_stages": 2}, "text": {"freeze_layers": 1}})
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen and all(not p.requires_grad for p in model.text_encoder.bert.embeddings.parameters())
    model.train()
    assert not model.backbone.body.stem.training and model.backbone.body.s16.training


def test_sem_supervision_trains_a_clue_classifier_and_penalises_sem_mass():
    torch.manual_seed(0)
    model = create_model("tiny", overrides={"loss": {"sem_weight": 0.5, "sem_sparsity": 0.1}}).train()
    images, texts = _batch(model)
    batch = model.tokenize(texts)
    out = model(model.preprocess_images(images), batch["input_ids"], batch["attention_mask"])
    labels = torch.tensor([0, 2, 0, -1])
    loss, parts = model.criterion(out, labels)
    assert out.sem_logits.shape == (4, 6, len(model.categories))
    assert out.sem_mean.shape == (4,) and bool(((out.sem_mean > 0) & (out.sem_mean < 1)).all())
    assert {"sem_ce", "sem_mass"} <= set(parts)
    loss.backward()
    assert model.sem_classifier.weight.grad.abs().sum() > 0
    sem_conv = model.bsd.sem_units["coarse_to_fine"][0].net[0].weight
    assert sem_conv.grad.abs().sum() > 0


def test_sem_supervision_is_off_by_default():
    model = create_model("tiny")
    assert not hasattr(model, "sem_classifier")
    images, texts = _batch(model, 2)
    batch = model.tokenize(texts)
    out = model(model.preprocess_images(images), batch["input_ids"], batch["attention_mask"])
    assert out.sem_logits is None and out.sem_mean is None


def test_placement_uses_channels_last_and_the_layout_never_changes_what_the_model_computes(monkeypatch):
    """On CUDA and the CPU the weights go channels_last (4.4x the encoding rate on an H200,
    docs/gpu.md; 1.55x on the 2-core CPU); the layout never changes what the model computes."""
    from ssjdn.core.model import api

    monkeypatch.setattr(api, "_uses_channels_last", lambda device: False)
    model = create_model("tiny", pretrained=False, device="cpu")
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert all(w.is_contiguous() for w in conv_weights)
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    before, before_maps = model.encode_images(images, with_maps=True)

    monkeypatch.undo()
    placed = api.place_model(model, "cpu")
    assert all(w.is_contiguous(memory_format=torch.channels_last)
               for w in (p for p in placed.parameters() if p.dim() == 4))
    after, after_maps = placed.encode_images(images, with_maps=True)
    assert torch.allclose(after, before, atol=1e-5)
    for direction in DIRECTIONS:
        for scale in range(3):
            assert torch.allclose(after_maps.sem[direction][scale], before_maps.sem[direction][scale],
                                  atol=1e-5)
