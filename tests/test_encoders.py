"""The built-in encoders: timm, text-transformer, tabular-mlp (contract kit + behaviour)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import mmkit
from mmkit._internal.errors import ComponentNotFoundError, DataError, ParameterError
from mmkit._internal.interfaces import Embedding
from mmkit.testing import check_encoder



@pytest.fixture(scope="module")
def shapes_rows():
    from mmkit_shapes.generate import shapes

    return shapes(n_train=24, n_val=0, n_test=0, seed=0, image_size=64).splits["train"]


@pytest.fixture(scope="module")
def images(shapes_rows):
    return [r["image"] for r in shapes_rows[:4]]


def _solid(color, size=64):
    from PIL import Image

    return Image.new("RGB", (size, size), color)


# ------------------------------------------------------------------------------------------- registry
def test_listing_and_show_do_not_import_torch():
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from mmkit._internal.cli import cli\n"
        "out = {}\n"
        "for args in (['list', 'encoder'], ['list', 'modality'], ['show', 'timm'], ['show', 'tabular-mlp']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    out[' '.join(args)] = r.output\n"
        "heavy = [m for m in sys.modules\n"
        "         if m.split('.')[0] in ('torch', 'timm', 'sentence_transformers', 'transformers')]\n"
        "print(json.dumps({'heavy': heavy, 'out': out}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    listing = result["out"]["list encoder"]
    for name in ("timm", "sentence-transformer", "text-transformer", "tabular-mlp"):
        assert name in listing
    for name in ("image", "text", "tabular"):
        assert name in result["out"]["list modality"]
    for param in ("model", "pretrained", "image_size", "augment", "tokens"):
        assert param in result["out"]["show timm"]


def test_modalities_default_encoders():
    reg = mmkit.get_registry()
    defaults = {m: reg.get("modality", m).load().default_encoder for m in ("image", "text", "tabular")}
    assert defaults == {"image": "timm", "text": "text-transformer", "tabular": "tabular-mlp"}
    for encoder in defaults.values():
        assert reg.get("encoder", encoder).kind == "encoder"


def test_timm_prefixed_names_resolve():
    info = mmkit.describe("encoder", "timm:convnext_atto")
    assert info.fixed_params == {"model": "convnext_atto"}
    assert info.target == "mmkit_timm.encoder:TimmEncoder"
    assert "model" not in [p.name for p in info.params]  # fixed by the name
    enc = mmkit.create("encoder", "timm:test_resnet")
    assert enc.model_name == "test_resnet" and enc.dim == 96
    with pytest.raises(ComponentNotFoundError):
        mmkit.get_registry().get("fusion", "timm:convnext_atto")  # only encoders are served


def test_timm_unknown_model_and_download_refused():
    with pytest.raises(ParameterError, match="unknown timm model 'test_resnett'.*test_resnet"):
        mmkit.create("encoder", "timm", model="test_resnett")
    with pytest.raises(ParameterError, match="pretrained = true would download"):
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=True)


# Runs in a fresh process without HF_HUB_OFFLINE, with every way to open a connection replaced by a
# recorder: each remote reference must be refused (naming the key) with no connection attempted, and
# the control at the end shows that timm itself would have gone to the network for such a name.
_HUB_SCRIPT = r"""
import json, socket, sys
attempts = []
class NetworkAttempt(BaseException):  # not an Exception: no library can swallow it and retry
    pass
def record(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise NetworkAttempt(repr(args[:2]))
socket.socket.connect = record
socket.socket.connect_ex = record
socket.create_connection = record
socket.getaddrinfo = record

import mmkit
from mmkit._internal.errors import ParameterError
cases = [("timm:hf-hub:timm/test_resnet.r160_in1k", {}), ("timm", {"model": "hf-hub:timm/test_resnet.r160_in1k"}),
         ("timm", {"model": "hf_hub:timm/test_resnet.r160_in1k"}), ("timm", {"model": "timm/test_resnet.r160_in1k"}),
         ("timm", {"model": "https://example.org/resnet18"}), ("timm", {"model": "local-dir:/tmp/x"}),
         ("timm", {"model": "test_resnet", "pretrained": True}),
         ("timm", {"model": "test_resnet", "pretrained": "hf-hub:timm/test_resnet.r160_in1k"}),
         ("timm", {"model": "test_resnet", "pretrained": "https://example.org/w.safetensors"})]
out = []
for name, params in cases:
    try:
        mmkit.create("encoder", name, **params)
        out.append([name, params, "built"])
    except ParameterError as exc:
        out.append([name, params, str(exc)])
refused_attempts = list(attempts)
import timm
try:
    timm.create_model("hf-hub:timm/test_resnet.r160_in1k", pretrained=False)
except (Exception, NetworkAttempt):
    pass
print(json.dumps({"results": out, "refused_attempts": refused_attempts, "control_attempts": len(attempts)}))
"""


def test_timm_hub_references_are_refused_before_any_network_attempt():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    proc = subprocess.run([sys.executable, "-c", _HUB_SCRIPT], capture_output=True, text=True, timeout=180,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["refused_attempts"] == []
    for name, params, message in report["results"]:
        key = "pretrained" if "pretrained" in params else "model"
        assert message.startswith("encoder "), (name, params, message)
        assert f"{key} = " in message and "never download" in message, (name, params, message)
    assert report["control_attempts"] > 0  # the recorder does see a hub lookup: the refusal came first


def test_a_recipe_naming_a_hub_model_fails_naming_its_key(tmp_path, write_tiny_recipe):
    from mmkit._internal.model import build_model
    from mmkit._internal.recipe import load_recipe

    path = write_tiny_recipe(tmp_path / "hub.toml", 'model.encoders.image.model="hf-hub:timm/resnet18.a1_in1k"')
    with pytest.raises(ParameterError, match=r"hub\.toml: model\.encoders\.image: .*model = 'hf-hub:timm/resnet"):
        build_model(load_recipe(path))


# ----------------------------------------------------------------------------------------------- timm
def test_timm_cnn_contract_and_spatial_tokens(images):
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "timm", model="test_resnet")
    emb = check_encoder(enc, images)
    # 64 px through test_resnet (stride 32) -> a 2x2 map: 4 tokens of width num_features
    assert emb.tokens.shape == (4, 4, 96) and emb.token_mask.all()
    # the model pools by averaging the map, so pooled is the mean of the tokens
    torch.testing.assert_close(emb.pooled, emb.tokens.mean(1), atol=1e-5, rtol=1e-4)
    assert enc.deterministic_train


def test_timm_resnet10t_contract_at_32px(shapes_rows):
    from mmkit_shapes.generate import shapes

    small = [r["image"] for r in shapes(3, 0, 0, seed=1, image_size=32).splits["train"]]
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "timm", model="resnet10t")
    emb = check_encoder(enc, small)
    assert emb.pooled.shape == (3, 512) and emb.tokens.shape == (3, 1, 512)


def test_timm_vit_patch_tokens_drop_prefix(images):
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "timm", model="test_vit", image_size=32)
    assert enc.num_prefix_tokens == 1
    emb = check_encoder(enc, images)
    x = enc.collate([enc.preprocess(im) for im in images])
    with torch.no_grad():
        features = enc.model.forward_features(x)
    assert features.shape[1] == 5  # class token + 2x2 patches of 16 px
    assert emb.tokens.shape == (4, 4, 64)
    torch.testing.assert_close(emb.tokens, features[:, 1:])
    # another size: 48 px -> 3x3 patches (positions are interpolated, not fixed to the card's 160 px)
    enc48 = mmkit.create("encoder", "timm", model="test_vit", image_size=48)
    with torch.no_grad():
        out = enc48(enc48.collate([enc48.preprocess(im) for im in images[:2]]))
    assert out.tokens.shape == (2, 9, 64)


def test_timm_native_size_and_normalisation():
    enc = mmkit.create("encoder", "timm", model="test_resnet")
    assert enc.model.pretrained_cfg["input_size"][-1] == 160  # the card's size is not used
    x = enc.preprocess(_solid((255, 0, 128)), train=False)
    assert x.shape == (3, 64, 64)  # image_size=None keeps the 64 px images: no upsampling
    # test_resnet's mean/std are 0.5/0.5: (v/255 - 0.5) / 0.5
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, -1.0, (128 / 255 - 0.5) / 0.5]))
    resized = mmkit.create("encoder", "timm", model="test_resnet", image_size=32)
    assert resized.preprocess(_solid((0, 0, 0), 64)).shape == (3, 32, 32)
    from PIL import Image

    wide = Image.new("RGB", (80, 40))
    assert resized.preprocess(wide).shape == (3, 32, 32)  # shorter side, then centre crop
    with pytest.raises(DataError, match="image_size"):
        enc.collate([enc.preprocess(_solid((0, 0, 0), 64)), enc.preprocess(_solid((0, 0, 0), 32))])


def test_timm_augment_names_and_their_randomness(images):
    import random

    solid = _solid((200, 40, 90))
    plain = mmkit.create("encoder", "timm", model="test_resnet").preprocess(solid)
    for augment in ("crop", "colorjitter", "randaugment", "augmix", "autoaugment", "rand-m7-n2-mstd0.5"):
        enc = mmkit.create("encoder", "timm", model="test_resnet", augment=augment, hflip=True)
        assert not enc.deterministic_train, augment
        assert torch.equal(enc.preprocess(images[0]), enc.preprocess(images[0]))  # evaluation: deterministic
        torch.manual_seed(7)
        state = random.getstate()
        a = enc.preprocess(images[0], train=True)
        assert random.getstate() == state  # timm's draws from `random` are seeded from torch, then restored
        torch.manual_seed(7)
        assert torch.equal(a, enc.preprocess(images[0], train=True)), augment  # same torch seed, same sample
        assert not torch.equal(a, enc.preprocess(images[0], train=True)), augment
        assert a.shape == (3, 64, 64)
    # a solid colour stays that colour under geometric augmentation, and changes under colour jitter
    crop = mmkit.create("encoder", "timm", model="test_resnet", augment="crop", hflip=True)
    jitter = mmkit.create("encoder", "timm", model="test_resnet", augment="colorjitter", color_jitter=0.8)
    torch.manual_seed(0)
    torch.testing.assert_close(crop.preprocess(solid, train=True), plain, atol=1e-6, rtol=0)
    assert not torch.allclose(jitter.preprocess(solid, train=True), plain, atol=0.05)
    with pytest.raises(ParameterError, match="augment = 'mixup' is not known; choose one of none, crop"):
        mmkit.create("encoder", "timm", model="test_resnet", augment="mixup")
    with pytest.raises(ParameterError, match="crop_scale"):
        mmkit.create("encoder", "timm", model="test_resnet", crop_scale=[0.5, 1.5])


def _mixing(images, **params):
    enc = mmkit.create("encoder", "timm", model="test_resnet", **params)
    assert not enc.deterministic_train
    torch.manual_seed(3)
    items = [enc.preprocess(im, train=True) for im in images]
    plain = torch.stack([enc.preprocess(im) for im in images])
    return enc, items, plain


def test_timm_mixup_mixes_a_batch_with_its_flip_reproducibly(images):
    enc, items, plain = _mixing(images[:3], mixup=0.4)
    assert isinstance(enc.preprocess(images[0]), torch.Tensor)  # evaluation items are never mixed
    out = enc.collate(items)
    lam, perm = out["mix"]["lam"], out["mix"]["perm"]
    assert perm.tolist() == [2, 1, 0] and 0.0 < float(lam) < 1.0
    torch.testing.assert_close(out["pixels"], lam * plain + (1 - lam) * plain[perm])
    again = enc.collate(items)  # the mixing is drawn from the samples' seeds: any worker gets the same
    assert torch.equal(again["pixels"], out["pixels"]) and torch.equal(again["mix"]["lam"], lam)
    emb = enc.eval()(out)
    assert emb.pooled.shape == (3, enc.dim)


def test_timm_cutmix_pastes_a_box_and_lam_is_the_area_kept():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)  # noise: no pixel of an image equals its partner's by chance
    noise = [Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), "RGB") for _ in range(4)]
    enc, items, plain = _mixing(noise, cutmix=1.0)
    out = enc.collate(items)
    lam, perm = float(out["mix"]["lam"]), out["mix"]["perm"]
    own = (out["pixels"] == plain).all(dim=1)
    pasted = (out["pixels"] == plain[perm]).all(dim=1)
    assert bool((own ^ pasted).all())  # every pixel is either its own or the partner's
    for i in range(4):  # a box of the partner, of area 1 - lam (the middle-free even batch mixes every image)
        ys, xs = pasted[i].nonzero(as_tuple=True)
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert pasted[i].float().mean() == pytest.approx(1 - lam, abs=1e-6)


def test_timm_augment_changes_train_only(images):
    enc = mmkit.create("encoder", "timm", model="test_resnet", augment=True)
    assert not enc.deterministic_train
    torch.manual_seed(0)
    a = enc.preprocess(images[0], train=True)
    b = enc.preprocess(images[0], train=True)
    assert a.shape == b.shape == (3, 64, 64)
    assert not torch.equal(a, b)
    assert torch.equal(enc.preprocess(images[0]), enc.preprocess(images[0]))
    # geometry only: the set of colours stays within the image's (no colour jitter) -> the value range
    # of each channel cannot grow
    plain = enc.preprocess(images[0])
    assert a.amax() <= plain.amax() + 0.05 and a.amin() >= plain.amin() - 0.05


def test_frozen_encoder_does_not_change(images):
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "timm", model="test_resnet")
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.eval()
    probe = torch.nn.Linear(enc.dim, 1)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    probe_before = probe.weight.detach().clone()
    opt = torch.optim.AdamW(list(enc.parameters()) + list(probe.parameters()), lr=0.1, weight_decay=0.1)
    out = enc(enc.collate([enc.preprocess(im, train=True) for im in images]))
    loss = probe(out.pooled).pow(2).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(probe.weight, probe_before)  # the step happened
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running stats unchanged


def test_timm_pretrained_safetensors_round_trip(tmp_path, images):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    torch.manual_seed(2)
    enc = mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(path)).eval()
    x = enc.collate([enc.preprocess(im) for im in images])
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        got = enc(x).pooled
        fresh = mmkit.create("encoder", "timm", model="test_resnet").eval()(x).pooled
    torch.testing.assert_close(got, expected)  # classifier weights (fc.*) in the file were ignored
    assert not torch.allclose(fresh, expected)
    # a torch state dict works too (read with weights_only=True)
    pt = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), pt)
    with torch.no_grad():
        got_pt = mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(pt)).eval()(x).pooled
    torch.testing.assert_close(got_pt, expected)


def test_timm_pretrained_wrong_file_names_keys(tmp_path):
    import timm
    from safetensors.torch import save_file

    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    state = {("backbone." + k if k.startswith("conv1") else k): v.contiguous() for k, v in state.items()}
    path = tmp_path / "renamed.safetensors"
    save_file(state, str(path))
    with pytest.raises(ParameterError) as info:
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(path))
    message = str(info.value)
    assert "missing keys: conv1.0.weight" in message or "missing keys: conv1" in message
    assert "unexpected keys: backbone.conv1" in message and str(path) in message
    other = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_vit", num_classes=0).state_dict().items()},
              str(other))
    with pytest.raises(ParameterError, match="do not fit the model"):
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(other))
    with pytest.raises(ParameterError, match="not found"):
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(tmp_path / "nope.safetensors"))


# ----------------------------------------------------------------------------------- text-transformer
def test_text_transformer_contract_and_masks(shapes_rows):
    from mmkit._internal.tokenize import split_words

    texts = [r["caption"] for r in shapes_rows]
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "text-transformer", dim=32, heads=4, layers=2, max_length=16)
    enc.fit(texts)
    samples = texts[:4] + ["a red circle"]
    emb = check_encoder(enc, samples)
    lengths = [min(len(split_words(t)), 16) for t in samples]
    assert emb.token_mask.sum(1).tolist() == lengths
    assert emb.tokens.shape == (5, max(lengths), 32)
    assert bool((emb.tokens[~emb.token_mask] == 0).all())  # padding is zeroed
    masked_mean = (emb.tokens.sum(1) / emb.token_mask.sum(1, keepdim=True))
    torch.testing.assert_close(emb.pooled, masked_mean)
    # the vocabulary comes from fit: a training word has its own id, an unseen word is <unk>
    ids = enc.preprocess("red zebra")
    assert ids[0] > enc.tokenizer.unk_id and ids[1] == enc.tokenizer.unk_id
    assert len(enc.preprocess("red " * 40)) == 16


def test_text_transformer_fit_state_round_trip(shapes_rows):
    texts = [r["caption"] for r in shapes_rows]
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "text-transformer", dim=32, heads=2, layers=1)
    enc.fit(texts)
    state = json.loads(json.dumps(enc.get_fit_state()))  # JSON-serialisable
    clone = mmkit.create("encoder", "text-transformer", dim=32, heads=2, layers=1)
    clone.set_fit_state(state)
    clone.load_state_dict(enc.state_dict())
    enc.eval(), clone.eval()
    batch = texts[:3]
    with torch.no_grad():
        a = enc(enc.collate([enc.preprocess(t) for t in batch]))
        b = clone(clone.collate([clone.preprocess(t) for t in batch]))
    torch.testing.assert_close(a.pooled, b.pooled)
    with pytest.raises(ParameterError, match="divide"):
        mmkit.create("encoder", "text-transformer", dim=30, heads=4)


def test_text_transformer_wordpiece():
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "text-transformer", tokenizer="wordpiece", dim=16, heads=2, layers=1)
    assert enc.embed.num_embeddings == 30522
    emb = check_encoder(enc, ["tokenization is subword based", "a cat"])
    assert emb.token_mask.sum(1).tolist()[1] == 2


# ---------------------------------------------------------------------------------------- tabular-mlp
def _tabular_values(n=60):
    from mmkit_tabular.toy import toy_tabular

    modality = mmkit.get_registry().get("modality", "tabular").load()()
    rows = toy_tabular(n_train=n, n_val=0, n_test=0, seed=0, p_missing=0.1).splits["train"]
    return [modality.load({c: r[c] for c in ("size", "weight", "city")}) for r in rows]


def test_tabular_mlp_fit_infers_columns_and_stats():
    values = _tabular_values()
    enc = mmkit.create("encoder", "tabular-mlp", dim=16, hidden=32)
    enc.fit(values)
    state = json.loads(json.dumps(enc.get_fit_state()))
    assert state["numeric"] == ["size", "weight"] and state["categorical"] == ["city"]
    sizes = [v["size"] for v in values]
    mean = sum(sizes) / len(sizes)
    std = (sum((s - mean) ** 2 for s in sizes) / len(sizes)) ** 0.5
    assert state["mean"][0] == pytest.approx(mean) and state["std"][0] == pytest.approx(std)
    weights = [v["weight"] for v in values if v["weight"] is not None]
    assert len(weights) < len(values)  # some are missing and were left out of the mean
    assert state["mean"][1] == pytest.approx(sum(weights) / len(weights))
    assert sorted(state["vocab"]["city"]) == ["lille", "lyon", "nice", "paris"]
    assert enc.cat_embed.num_embeddings == 4 + 2  # sized by the vocabulary (+ unknown, missing)


def test_tabular_mlp_contract_missing_and_unknown():
    values = _tabular_values()
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "tabular-mlp", dim=16, hidden=32)
    enc.fit(values)
    samples = values[:5] + [{"size": 50.0, "weight": None, "city": "tokyo"}]
    emb = check_encoder(enc, samples)
    assert emb.tokens.shape == (6, 3, 16)
    item = enc.preprocess({"size": "50", "weight": float("nan"), "city": "tokyo"})
    assert item["num"].tolist() == [50.0, 0.0] and item["missing"].tolist() == [False, True]
    assert item["cat"].tolist() == [0]  # unknown city -> index 0
    assert enc.preprocess({"size": 1, "weight": 2})["cat"].tolist() == [1]  # missing category
    with pytest.raises(DataError, match=r"column 'weight'.*'heavy'"):
        enc.preprocess({"size": 1, "weight": "heavy", "city": "paris"})
    # a missing numeric is imputed with the mean (standardised 0) plus the indicator vector
    with torch.no_grad():
        missing = enc(enc.collate([enc.preprocess({"size": 50.0, "weight": None, "city": "paris"})]))
        at_mean = enc(enc.collate([enc.preprocess({"size": 50.0, "weight": float(enc.mean[1]), "city": "paris"})]))
    torch.testing.assert_close(missing.tokens[0, 1] - at_mean.tokens[0, 1], enc.num_missing[1].detach())


def test_tabular_mlp_fit_state_round_trip_and_lists():
    values = _tabular_values()
    torch.manual_seed(0)
    enc = mmkit.create("encoder", "tabular-mlp", numeric=["size"], categorical=["city"], dim=8, hidden=16)
    enc.fit(values)
    assert enc.numeric == ["size"] and enc.categorical == ["city"]  # weight: not listed, not used
    clone = mmkit.create("encoder", "tabular-mlp", numeric=["size"], categorical=["city"], dim=8, hidden=16)
    clone.set_fit_state(json.loads(json.dumps(enc.get_fit_state())))
    clone.load_state_dict(enc.state_dict())
    with torch.no_grad():
        a = enc.eval()(enc.collate([enc.preprocess(v) for v in values[:4]]))
        b = clone.eval()(clone.collate([clone.preprocess(v) for v in values[:4]]))
    torch.testing.assert_close(a.pooled, b.pooled)
    # a list of numbers is a row with columns "0", "1", ...
    modality = mmkit.get_registry().get("modality", "tabular").load()()
    rows = [modality.load([float(i), float(i * i), 1.0]) for i in range(6)]
    vec = mmkit.create("encoder", "tabular-mlp", dim=8, hidden=16)
    vec.fit(rows)
    assert vec.numeric == ["0", "1", "2"] and vec.categorical == []
    assert vec.get_fit_state()["std"][2] == 1.0  # constant column: std falls back to 1
    check_encoder(vec, rows[:3])
    with pytest.raises(DataError, match="'city'.*categorical"):
        mmkit.create("encoder", "tabular-mlp", categorical=["weight"]).fit(values)
    with pytest.raises(RuntimeError, match="fit"):
        mmkit.create("encoder", "tabular-mlp").preprocess({"a": 1})


def test_encoders_return_embeddings_for_present_rows_only(images):
    enc = mmkit.create("encoder", "timm", model="test_resnet").eval()
    with torch.no_grad():
        out = enc(enc.collate([enc.preprocess(im) for im in images[:3]]))
    assert isinstance(out, Embedding) and out.present.tolist() == [True, True, True]


# ------------------------------------------------------------------------------ timm: default pixels
def _odd_images():
    """A few images of odd sizes and modes, with content in every channel."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
           for h, w in ((23, 37), (17, 50), (64, 64), (1, 9))]
    grey = Image.fromarray(rng.integers(0, 256, (31, 13), dtype=np.uint8), "L")
    return rgb + [grey]


def _reference_pixels(image, mean, std):
    """The default decoding (mmkit 0.1): RGB at the native size, x / 255, then (x - mean) / std in float32."""
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    x = torch.from_numpy(arr).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.mark.parametrize("model", ["test_resnet", "resnet10t"])
def test_timm_default_decodes_the_same_pixels_as_before(model):
    enc = mmkit.create("encoder", "timm", model=model)
    assert enc.deterministic_train  # the default augments nothing: a frozen encoder may be cached
    for image in _odd_images():
        expected = _reference_pixels(image, enc.mean, enc.std)
        for train in (False, True):
            got = enc.preprocess(image, train=train)
            assert got.dtype == torch.float32 and got.shape == (3, image.height, image.width)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.slow
def test_training_with_randaugment_mixup_and_cutmix_runs_and_is_reproducible(tmp_path, write_tiny_recipe):
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    path = write_tiny_recipe(tmp_path / "mix.toml", 'model.encoders.image.augment="randaugment"',
                             "model.encoders.image.mixup=0.4", "model.encoders.image.cutmix=1.0",
                             "model.encoders.image.hflip=true", "train.max_steps=3", "train.log_every=1",
                             "data.options.n_train=24")
    losses = []
    for name in ("a", "b"):
        run = train(load_recipe(path, [f"run.name={name}"]), quiet=True).run_dir
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["metrics"]["loss"] for r in records if r["split"] == "train"])
    assert losses[0] and all(math.isfinite(v) for v in losses[0])
    assert losses[0] == losses[1]  # augmentation and mixing follow the run's seed
