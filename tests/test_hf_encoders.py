"""hf-text, hf-vision, hf-clip on tiny random Hugging Face folders built from configs (no download):
the encoder contract, pooling and masks against transformers' own outputs, zero-shot logits equal to
the model's, freezing (cached) and fine-tuning through the engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import mmkit
from mmkit._internal.errors import ParameterError
from mmkit.testing import check_encoder

TEXTS = ["a red circle", "there is a blue square left of a green triangle", "xyz"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mmkit_hf import tiny

    root = tmp_path_factory.mktemp("hf")
    return {"bert": tiny.save_tiny_text(root / "bert"), "t5": tiny.save_tiny_text(root / "t5", "t5"),
            "vit": tiny.save_tiny_vit(root / "vit"), "clip": tiny.save_tiny_clip(root / "clip"),
            "siglip": tiny.save_tiny_clip(root / "siglip", "siglip")}


def images() -> list[Image.Image]:
    torch.manual_seed(0)
    noise = (torch.rand(50, 50, 3) * 255).to(torch.uint8).numpy()
    return [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (64, 64), (10, 200, 10)),
            Image.fromarray(noise)]


def encode(encoder, raws):
    encoder.eval()
    with torch.no_grad():
        return encoder(encoder.collate([encoder.preprocess(r) for r in raws]))


# ------------------------------------------------------------------------------------------ hf-text
@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_hf_text_passes_the_contract_kit(folders, kind):
    enc = mmkit.create("encoder", "hf-text", path=str(folders[kind]))
    emb = check_encoder(enc, TEXTS)
    assert enc.dim == 32 and enc.has_tokens and enc.modality == "text"
    # [CLS] a red circle [SEP]; the unknown word is one [UNK] token
    assert emb.token_mask.sum(1).tolist() == [5, 12, 3]


def test_hf_text_pooling_and_masks_match_the_transformers_model(folders):
    from transformers import AutoModel, AutoTokenizer

    mean = mmkit.create("encoder", "hf-text", path=str(folders["bert"]), pooling="mean")
    cls = mmkit.create("encoder", "hf-text", path=str(folders["bert"]), pooling="cls", tokens=False)
    ref_model = AutoModel.from_pretrained(folders["bert"]).eval()
    batch = AutoTokenizer.from_pretrained(folders["bert"])(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    m = batch["attention_mask"].bool()
    emb = encode(mean, TEXTS)
    torch.testing.assert_close(emb.token_mask, m)
    torch.testing.assert_close(emb.tokens[m], hidden[m], atol=1e-5, rtol=1e-4)
    assert (emb.tokens[~m] == 0).all()  # padded positions are zeros
    torch.testing.assert_close(emb.pooled, (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True),
                               atol=1e-5, rtol=1e-4)
    pooled_cls = encode(cls, TEXTS)
    assert pooled_cls.tokens is None and not cls.has_tokens
    torch.testing.assert_close(pooled_cls.pooled, hidden[:, 0], atol=1e-5, rtol=1e-4)


def test_hf_text_max_length_cuts_and_bad_values_are_errors(folders):
    enc = mmkit.create("encoder", "hf-text", path=str(folders["bert"]), max_length=6)
    ids = enc.preprocess("a red circle left of a blue square")
    assert len(ids) == 6 and ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP] kept
    capped = mmkit.create("encoder", "hf-text", path=str(folders["bert"]), max_length=10_000)
    assert capped.max_length == 32  # the tokenizer's model_max_length
    with pytest.raises(ParameterError, match="max_length must be at least 2"):
        mmkit.create("encoder", "hf-text", path=str(folders["bert"]), max_length=1)
    with pytest.raises(ParameterError, match="pooling"):
        mmkit.create("encoder", "hf-text", path=str(folders["bert"]), pooling="max")


def test_incomplete_folders_are_refused_naming_what_is_missing(folders, tmp_path):
    folder = tmp_path / "deeper"
    shutil.copytree(folders["bert"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the weights hold 2 layers: the third would be random
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParameterError, match=r"missing weights: .*layer\.2.*initialised at random"):
        mmkit.create("encoder", "hf-text", path=str(folder))
    no_tokenizer = shutil.copytree(folders["bert"], tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ParameterError, match=r"cannot load a tokenizer from .*no-tokenizer: none of tokenizer.json"):
        mmkit.create("encoder", "hf-text", path=str(no_tokenizer))
    no_processor = shutil.copytree(folders["vit"], tmp_path / "no-processor")
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(ParameterError, match=r"hf-vision: cannot load an image processor .* from .*no-processor"):
        mmkit.create("encoder", "hf-vision", path=str(no_processor))


# ---------------------------------------------------------------------------------------- hf-vision
@pytest.mark.parametrize("kind", ["vit", "clip", "siglip"])
def test_hf_vision_passes_the_contract_kit(folders, kind):
    enc = mmkit.create("encoder", "hf-vision", path=str(folders[kind]))
    emb = check_encoder(enc, images())
    assert enc.modality == "image" and enc.pooling == "pooler"
    assert emb.tokens.shape == (3, 16, 32)  # 32 px / 8 px patches = 4 x 4, class token dropped
    assert enc.num_prefix_tokens == (0 if kind == "siglip" else 1)


def _tiny_vision(arch: str):
    import transformers as tf

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "image_size": 32, "patch_size": 8}
    if arch == "dinov2-registers":
        return tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**small, num_register_tokens=4))
    if arch == "deit":
        return tf.DeiTModel(tf.DeiTConfig(**small))
    if arch == "convnext":
        return tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    return tf.SwinModel(tf.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                      window_size=4))


@pytest.mark.parametrize("arch,prefix", [("dinov2-registers", 5), ("deit", 2), ("convnext", 0), ("swin", 0)])
def test_hf_vision_architectures_give_patch_tokens_without_prefix_tokens(arch, prefix, folders, tmp_path):
    """Class, distillation and register tokens are dropped; a CNN's 4 x 4 map and Swin's last stage are
    16 tokens too."""
    from mmkit_hf.tiny import save_folder
    from transformers import AutoImageProcessor

    torch.manual_seed(0)
    processor = AutoImageProcessor.from_pretrained(folders["vit"])  # resizes to 32 px
    folder = save_folder(tmp_path / arch, _tiny_vision(arch), processor)
    enc = mmkit.create("encoder", "hf-vision", path=str(folder))
    emb = check_encoder(enc, images()[:2])
    assert enc.num_prefix_tokens == prefix and enc.pooling == "pooler"
    assert emb.tokens.shape == (2, 16, enc.dim)


def test_hf_vision_uses_the_processor_and_the_models_pooler(folders):
    from transformers import AutoImageProcessor, CLIPVisionModel, ViTModel

    imgs = images()
    for kind, cls in (("vit", ViTModel), ("clip", CLIPVisionModel)):
        enc = mmkit.create("encoder", "hf-vision", path=str(folders[kind]))
        pixels = AutoImageProcessor.from_pretrained(folders[kind])(images=imgs, return_tensors="pt")["pixel_values"]
        assert pixels.shape == (3, 3, 32, 32)
        torch.testing.assert_close(torch.stack([enc.preprocess(i) for i in imgs]), pixels)
        with torch.no_grad():
            ref = cls.from_pretrained(folders[kind]).eval()(pixel_values=pixels)
        emb = encode(enc, imgs)
        torch.testing.assert_close(emb.pooled, ref.pooler_output, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(emb.tokens, ref.last_hidden_state[:, 1:], atol=1e-5, rtol=1e-4)


def test_hf_vision_without_pooler_weights_falls_back_to_the_class_token(folders, tmp_path):
    from transformers import ViTModel

    model = ViTModel.from_pretrained(folders["vit"], add_pooling_layer=False)
    folder = tmp_path / "vit-no-pooler"
    shutil.copytree(folders["vit"], folder)
    model.save_pretrained(folder, safe_serialization=True)
    enc = mmkit.create("encoder", "hf-vision", path=str(folder))
    assert enc.pooling == "cls"  # the pooler would be random
    emb = encode(enc, images()[:2])
    with torch.no_grad():
        hidden = model.eval()(pixel_values=torch.stack([enc.preprocess(i) for i in images()[:2]])).last_hidden_state
    torch.testing.assert_close(emb.pooled, hidden[:, 0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ParameterError, match="pooler weights are not in the folder"):
        mmkit.create("encoder", "hf-vision", path=str(folder), pooling="pooler")
    with pytest.raises(ParameterError, match="no class token"):
        mmkit.create("encoder", "hf-vision", path=str(folders["siglip"]), pooling="cls")


# ------------------------------------------------------------------------------------------ hf-clip
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_clip_towers_pass_the_contract_kit(folders, kind):
    vision = mmkit.create("encoder", "hf-clip", path=str(folders[kind]), tower="vision")
    text = mmkit.create("encoder", "hf-clip", path=str(folders[kind]), tower="text")
    assert (vision.modality, text.modality) == ("image", "text")
    assert vision.dim == text.dim == (16 if kind == "clip" else 32)  # the shared (projected) space
    check_encoder(vision, images())
    check_encoder(text, TEXTS)
    if kind == "siglip":  # padded to its fixed length, as it was trained
        assert text.collate([text.preprocess("a cat")])["input_ids"].shape == (1, 32)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_zero_shot_equals_the_models_own_logits(folders, kind):
    from mmkit_hf.zeroshot import classify, prompts
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    vision = mmkit.create("encoder", "hf-clip", path=str(folders[kind]), tower="vision")
    text = mmkit.create("encoder", "hf-clip", path=str(folders[kind]), tower="text")
    labels = ["red circle", "blue square left of a green triangle", "cat"]
    probs = classify(vision, text, images(), labels)
    model = AutoModel.from_pretrained(folders[kind]).eval()
    padding = "max_length" if kind == "siglip" else True
    inputs = AutoTokenizer.from_pretrained(folders[kind])(prompts(labels), padding=padding, truncation=True,
                                                          max_length=32, return_tensors="pt")
    inputs.update(AutoImageProcessor.from_pretrained(folders[kind])(images=images(), return_tensors="pt"))
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    expected = logits.softmax(-1) if kind == "clip" else logits.sigmoid()
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    if kind == "clip":
        torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_hf_clip_refuses_other_models_and_bad_prompts(folders):
    from mmkit_hf.zeroshot import prompts

    with pytest.raises(ParameterError, match=r"holds a 'bert' model; hf-clip reads clip and siglip.*hf-text"):
        mmkit.create("encoder", "hf-clip", path=str(folders["bert"]), tower="text")
    with pytest.raises(ParameterError, match=r"tower: expected Literal\[.vision., .text.\]"):
        mmkit.create("encoder", "hf-clip", path=str(folders["clip"]), tower="audio")
    with pytest.raises(ParameterError, match=r"\{label\}"):
        prompts(["cat"], "a photo")
    with pytest.raises(ParameterError, match="has no vision tower|not an image model"):
        mmkit.create("encoder", "hf-vision", path=str(folders["t5"]))


# --------------------------------------------------------------------------- through the engine
def _run(tmp_path, write_tiny_recipe, name, *overrides):
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    recipe = write_tiny_recipe(tmp_path / f"{name}.toml", f"run.name={name}", "train.max_steps=3", *overrides)
    return train(load_recipe(recipe), quiet=True)


def test_frozen_hf_text_is_cached_and_unchanged_fine_tuned_one_moves(folders, tmp_path, write_tiny_recipe):
    from safetensors.torch import load_file

    text = f'model.encoders.text={{ type = "hf-text", path = "{folders["bert"].as_posix()}" }}'
    frozen = _run(tmp_path, write_tiny_recipe, "frozen", text, "model.encoders.text.freeze=true")
    assert "text" in frozen.summary["cache"]  # deterministic preprocessing: outputs computed once
    tuned = _run(tmp_path, write_tiny_recipe, "tuned", text, "model.encoders.text.lr_mult=0.5")
    assert "text" not in (tuned.summary["cache"] or {})
    original = load_file(str(folders["bert"] / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    for result, moved in ((frozen, False), (tuned, True)):
        weights = load_file(str(result.run_dir / "checkpoints" / "last" / "model.safetensors"))
        changed = not torch.equal(weights[f"encoders.text.model.{key}"], original[key])
        assert changed == moved


# ------------------------------------------------------------------- the bundled MiniLM as a BERT
@pytest.mark.slow
def test_bundled_minilm_as_plain_bert_matches_the_sentence_transformer_and_fine_tunes(tmp_path, write_tiny_recipe):
    """hf-text with no path loads the bundled all-MiniLM-L6-v2 through AutoModel (a BertModel); its mean
    pooling equals the sentence-transformer's, and a few fine-tuning steps lower the loss."""
    import json as _json

    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    bert = mmkit.create("encoder", "hf-text", max_length=32)
    assert type(bert.model).__name__ == "BertModel" and bert.dim == 384
    sentence = mmkit.create("encoder", "sentence-transformer", max_length=32)
    texts = ["A man is playing a guitar.", "there is a red circle", "a blue square left of a green triangle"]
    torch.testing.assert_close(encode(bert, texts).pooled, encode(sentence, texts).pooled, atol=1e-5, rtol=1e-4)

    recipe = write_tiny_recipe(
        tmp_path / "minilm.toml", "run.name=minilm", 'data.columns={ text = "caption", label = "first_color" }',
        'model.encoders={ text = { type = "hf-text", max_length = 16, lr_mult = 0.1 } }',
        'model.fusion={ type = "concat", dim = 32, dropout = 0.0 }', "data.options.n_train=160",
        "train.max_steps=12", "train.batch_size=16", "train.lr=2e-3", "train.log_every=1", "train.warmup_steps=0")
    result = train(load_recipe(recipe), quiet=True)
    lines = [_json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["metrics"]["loss"] for r in lines if r["split"] == "train" and "loss" in r["metrics"]]
    assert len(losses) == 12
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
    assert result.summary["final"]["val"]["accuracy"] > 0.5  # 4 colours: chance is 0.25


def test_lr_mult_auto_fine_tunes_a_pretrained_encoder_at_1e_5(folders, tmp_path, write_tiny_recipe):
    """``lr_mult`` unset (auto): an encoder that loaded weights trains at 1e-5, the rest at train.lr; an
    explicit ``lr_mult`` wins; ``mmkit check`` says so."""
    from click.testing import CliRunner

    from mmkit._internal.assembly import assemble
    from mmkit._internal.cli import cli
    from mmkit._internal.optim import Schedule, make_optimizer, param_groups
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.registry import get_registry

    text = f'model.encoders.text={{ type = "hf-text", path = "{folders["bert"].as_posix()}", max_length = 16 }}'

    def lrs(*overrides: str) -> dict[str, set[float]]:
        recipe = load_recipe(write_tiny_recipe(tmp_path / "r.toml", text, "train.lr=1e-3", *overrides))
        model = assemble(recipe, get_registry())
        groups = param_groups(model, recipe)
        # the rate that progress lines and metrics.jsonl report is train.lr's, whichever group comes first
        schedule = Schedule.from_recipe({**recipe.train, "warmup_steps": 0, "schedule": "constant"}, 10)
        assert schedule.apply(make_optimizer(groups, recipe), 3) == pytest.approx(1e-3)
        by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
        return {part: {by_param[id(p)] for n, p in model.named_parameters() if n.startswith(part)}
                for part in ("encoders.text.", "encoders.image.", "fusion.")}

    assert lrs() == {"encoders.text.": {1e-5}, "encoders.image.": {1e-3}, "fusion.": {1e-3}}
    assert lrs("model.encoders.text.lr_mult=0.5")["encoders.text."] == {5e-4}
    out = CliRunner().invoke(cli, ["check", str(tmp_path / "r.toml"), "--set", "model.encoders.text.lr_mult='auto'",
                                    "--no-rows"])
    assert out.exit_code == 0, out.output
    assert "lr 1e-05 (x0.01: pretrained, lr_mult auto)" in out.output
    with pytest.raises(Exception, match=r"model\.encoders\.text\.lr_mult: expected a finite number >= 0"):
        lrs("model.encoders.text.lr_mult=-1.0")
