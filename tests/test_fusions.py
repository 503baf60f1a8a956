"""Contract and behaviour tests of the built-in fusions (plugins/mmkit_fusion), built through the registry."""

from __future__ import annotations

import pytest
import torch

import mmkit
from mmkit._internal.interfaces import Embedding
from mmkit.testing import check_fusion, presence_patterns, random_embeddings
from mmkit.testing import perturb_hidden as kit_perturb_hidden

FUSIONS = ["concat", "attention", "cross-attention", "autoencoder", "transformer"]
DIMS = {"image": 12, "text": 8, "tabular": 5}
TOKENS = {"image": 4, "text": 6}


@pytest.fixture(autouse=True)
def _threads():
    # the models here are tiny: one thread is several times faster than two on a shared 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small_params(name: str, **overrides) -> dict:
    params = {"latent_dim": 16, "dim": 32} if name == "autoencoder" else {"dim": 32}
    if name in ("cross-attention", "transformer"):
        params["heads"] = 4
    return params | overrides


def build(name: str, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, **params):
    token_inputs = token_inputs if token_inputs is not None else {m: m in TOKENS for m in input_dims}
    return mmkit.create("fusion", name, context={"input_dims": dict(input_dims), "token_inputs": dict(token_inputs)},
                        **small_params(name, **params))


def embeddings(dims=None, batch: int = 6, tokens=TOKENS, seed: int = 0) -> dict[str, Embedding]:
    dims = dict(dims or DIMS)
    pres = presence_patterns(list(dims), batch, seed)
    return random_embeddings(dims, batch, {m: t for m, t in tokens.items() if m in dims}, pres, seed)


def perturb_hidden(embs: dict[str, Embedding], seed: int = 7) -> dict[str, Embedding]:
    """Replace absent rows and padded tokens with large random values."""
    return kit_perturb_hidden(embs, seed, scale=100.0)


# ------------------------------------------------------------------------------ registry / docs
def test_all_five_fusions_are_registered():
    names = {c.name for c in mmkit.list_components("fusion") if c.plugin == "fusion"}
    assert set(FUSIONS) <= names


def test_plugin_module_is_light_and_valid():
    from mmkit.testing import check_plugin_module

    registry = check_plugin_module("mmkit_fusion.plugin")
    assert {c.name for c in registry.list("fusion")} == set(FUSIONS)


@pytest.mark.parametrize("name", FUSIONS)
def test_every_parameter_is_typed_defaulted_and_documented(name):
    info = mmkit.describe("fusion", name)
    assert info.summary
    assert info.params, f"{name} has no parameters"
    names = {p.name for p in info.params}
    assert "modality_dropout" in names and not names & {"input_dims", "token_inputs"}
    for p in info.params:
        assert p.type != "Any", f"{name}.{p.name} has no type annotation"
        assert not p.required, f"{name}.{p.name} has no default"
        assert p.doc, f"{name}.{p.name} is not documented"


def test_transformer_parameters_and_defaults():
    info = mmkit.describe("fusion", "transformer")
    defaults = {p.name: p.default for p in info.params}
    assert defaults == {"dim": None, "layers": 2, "heads": None, "dropout": 0.0, "ff_mult": 4, "modality_dropout": 0.0,
                        "pooling": "cls"}
    context = {"input_dims": {"image": 512, "text": 16}, "token_inputs": {"image": True, "text": True}}
    # dim follows the widest encoder within [128, 256]; heads of 32 channels
    wide = mmkit.create("fusion", "transformer", context=context)
    assert (wide.dim, wide.layers[0].self_attn.num_heads) == (256, 8)
    context["input_dims"] = {"image": 40, "text": 16}
    assert mmkit.create("fusion", "transformer", context=context).dim == 128
    assert mmkit.create("fusion", "transformer", context=context, dim=96).layers[0].self_attn.num_heads == 3


@pytest.mark.parametrize("name,params,match", [
    ("transformer", {"dim": 30, "heads": 4}, "divide"),
    ("cross-attention", {"query": "audio"}, "audio"),
    ("concat", {"modality_dropout": 1.0}, "modality_dropout"),
    ("attention", {"dimm": 8}, "dim"),
])
def test_bad_parameters_fail_clearly(name, params, match):
    with pytest.raises(mmkit.ParameterError, match=match):
        mmkit.create("fusion", name, context={"input_dims": {"image": 4, "text": 4},
                                              "token_inputs": {"image": False, "text": False}}, **params)


# ------------------------------------------------------------------------------ the contract kit
@pytest.mark.parametrize("name", FUSIONS)
@pytest.mark.parametrize("tokens", ["tokens", "pooled-only"])
def test_check_fusion(name, tokens):
    token_map = TOKENS if tokens == "tokens" else {}

    def factory(input_dims, token_inputs):
        return build(name, input_dims, token_inputs)

    check_fusion(factory, dims=DIMS, tokens=token_map)


@pytest.mark.parametrize("name", FUSIONS)
def test_check_fusion_with_modality_dropout(name):
    check_fusion(lambda d, t: build(name, d, t, modality_dropout=0.5))


@pytest.mark.parametrize("name", FUSIONS)
def test_missing_key_equals_all_absent(name):
    """A modality missing from the dict behaves exactly like one absent for every sample."""
    fusion = build(name, {"image": 12, "text": 8}).eval()
    embs = embeddings({"image": 12, "text": 8})
    embs["image"] = Embedding(embs["image"].pooled, torch.ones(6, dtype=torch.bool), embs["image"].tokens,
                              embs["image"].token_mask | ~embs["image"].token_mask.any(1, keepdim=True))
    absent_text = Embedding(torch.zeros(6, 8), torch.zeros(6, dtype=torch.bool), torch.zeros(6, 6, 8),
                            torch.zeros(6, 6, dtype=torch.bool))
    with torch.no_grad():
        only = fusion({"image": embs["image"]})
        both = fusion({"image": embs["image"], "text": absent_text})
    assert torch.isfinite(only.pooled).all()
    torch.testing.assert_close(only.pooled, both.pooled)


@pytest.mark.parametrize("name", FUSIONS)
def test_gradients_reach_every_parameter(name):
    fusion = build(name, DIMS, modality_dropout=0.0, dropout=0.0).train()
    embs = embeddings(batch=8)
    out = fusion(embs)
    loss = out.pooled.pow(2).mean() + (out.tokens.pow(2).mean() if out.tokens is not None else 0.0)
    (loss + sum(out.aux_losses.values(), torch.tensor(0.0))).backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname} has no finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} receives a zero gradient"


@pytest.mark.parametrize("name", FUSIONS)
def test_unknown_modality_is_an_error(name):
    fusion = build(name, {"image": 12})
    with pytest.raises(ValueError, match="audio"):
        fusion({"image": embeddings({"image": 12})["image"], "audio": embeddings({"audio": 3}, tokens={})["audio"]})


# ------------------------------------------------------------------------------ modality dropout
def test_drop_modalities_never_empties_a_sample():
    from mmkit_fusion.common import drop_modalities

    g = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 3, generator=g) > 0.3
    present[:10] = False  # samples with nothing stay empty
    for p in (0.3, 0.9, 0.999):
        keep = drop_modalities(present, p, generator=g)
        assert not (keep & ~present).any(), "dropout made an absent modality present"
        assert torch.equal(keep.any(dim=1), present.any(dim=1)), "a sample lost all its modalities"
        dropped = (present & ~keep).sum() / present.sum()
        assert dropped > 0.1  # it really drops
    keep = drop_modalities(present, 0.3, generator=g)
    single = present.sum(1) == 1
    assert torch.equal(keep[single], present[single])  # a sample's only modality is never dropped
    assert torch.equal(drop_modalities(present, 0.0), present)


@pytest.mark.parametrize("name", FUSIONS)
def test_modality_dropout_only_in_training(name):
    fusion = build(name, DIMS, modality_dropout=0.9, dropout=0.0)
    embs = embeddings()
    fusion.eval()
    with torch.no_grad():
        a, b = fusion(embs).pooled, fusion(embs).pooled
    torch.testing.assert_close(a, b)
    fusion.train()
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [fusion(embs).pooled for _ in range(4)]
    assert all(torch.isfinite(o).all() for o in outs)
    assert any(not torch.allclose(outs[0], o) for o in outs[1:]), "modality dropout has no effect in training"


def test_attention_weights_under_modality_dropout_stay_normalised():
    fusion = build("attention", DIMS, modality_dropout=0.9).train()
    embs = embeddings(batch=64)
    pres = torch.stack([embs[m].present for m in sorted(DIMS)], dim=1)
    torch.manual_seed(0)
    w = fusion(embs).weights.detach()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(64))  # no sample was emptied
    assert (w[~pres] == 0).all()
    assert ((w > 0).sum(1) < pres.sum(1)).any(), "nothing was dropped"


# ------------------------------------------------------------------------------ attention
def test_attention_weights_sum_to_one_over_present_and_zero_for_absent():
    fusion = build("attention", DIMS).eval()
    embs = embeddings(batch=16)
    with torch.no_grad():
        out = fusion(embs)
    assert out.weight_names == sorted(DIMS)
    pres = torch.stack([embs[m].present for m in out.weight_names], dim=1)
    assert out.weights.shape == (16, 3)
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(16))
    assert (out.weights[~pres] == 0).all()
    assert (out.weights[pres] > 0).all()
    single = pres.sum(1) == 1
    assert single.any()
    torch.testing.assert_close(out.weights[single], pres[single].float())
    # a modality missing from the dict gets weight 0 in its column
    with torch.no_grad():
        partial = fusion({"image": embs["image"], "text": embs["text"]})
    assert (partial.weights[:, out.weight_names.index("tabular")] == 0).all()


def test_attention_pooled_is_the_weighted_sum_before_the_mlp():
    """Hand-check: with mlp=False, pooled = LayerNorm(sum_m w_m * proj_m(x_m))."""
    fusion = build("attention", {"image": 12, "text": 8}, mlp=False).eval()
    embs = embeddings({"image": 12, "text": 8})
    with torch.no_grad():
        out = fusion(embs)
        vecs = torch.stack([fusion.proj[m](embs[m].pooled) * embs[m].present[:, None] for m in out.weight_names], 1)
        expected = fusion.norm((out.weights[..., None] * vecs).sum(1))
    torch.testing.assert_close(out.pooled, expected)


# ------------------------------------------------------------------------------ concat
def test_concat_uses_the_learned_missing_vector():
    fusion = build("concat", {"image": 12, "text": 8}).eval()
    embs = embeddings({"image": 12, "text": 8}, batch=6)
    with torch.no_grad():
        before = fusion(embs).pooled
        fusion.missing[fusion.modalities.index("text")].add_(1.0)
        after = fusion(embs).pooled
    text_absent = ~embs["text"].present
    assert text_absent.any()
    assert not torch.allclose(before[text_absent], after[text_absent])
    torch.testing.assert_close(before[~text_absent], after[~text_absent])


# ------------------------------------------------------------------------------ autoencoder
def _manual_recon(fusion, latent, embs, m):
    e = embs[m]
    err = (fusion.decode(latent, m) - e.pooled * e.present[:, None]).pow(2).mean(-1)
    return fusion.recon_weight * (err * e.present).sum() / e.present.sum()


def test_autoencoder_aux_losses_are_per_modality_masked_mse():
    fusion = build("autoencoder", DIMS, recon_weight=0.5, dropout=0.0, modality_dropout=0.0).eval()
    embs = embeddings(batch=8)
    with torch.no_grad():
        out = fusion(embs)
        assert set(out.aux_losses) == {f"recon_{m}" for m in DIMS}
        assert fusion.dim == 16 and out.pooled.shape == (8, 16)
        for m in DIMS:
            assert out.aux_losses[f"recon_{m}"] > 0
            torch.testing.assert_close(out.aux_losses[f"recon_{m}"], _manual_recon(fusion, out.pooled, embs, m))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_autoencoder_recon_loss_ignores_absent_values(mode):
    fusion = build("autoencoder", DIMS, dropout=0.0, modality_dropout=0.0).train(mode == "train")
    embs = embeddings(batch=8)
    with torch.no_grad():
        a = fusion(embs)
        b = fusion(perturb_hidden(embs))
    for key in a.aux_losses:
        torch.testing.assert_close(a.aux_losses[key], b.aux_losses[key])
    torch.testing.assert_close(a.pooled, b.pooled)


def test_autoencoder_reconstructs_dropped_modalities():
    """Under modality dropout the encoder sees fewer inputs, but every TRULY present one is still a target."""
    from mmkit_fusion.common import apply_presence, drop_modalities, presence

    fusion = build("autoencoder", DIMS, dropout=0.0, modality_dropout=0.7).train()
    embs = embeddings(batch=32)
    torch.manual_seed(3)
    with torch.no_grad():
        out = fusion(embs)
        torch.manual_seed(3)
        pres = presence(embs, fusion.modalities, 32, torch.device("cpu"))
        keep = drop_modalities(pres, 0.7)
        assert (pres & ~keep).any()
        latent = fusion.encode(apply_presence(embs, fusion.modalities, keep))
    torch.testing.assert_close(out.pooled, latent)
    for m in DIMS:
        torch.testing.assert_close(out.aux_losses[f"recon_{m}"], _manual_recon(fusion, latent, embs, m))


def test_autoencoder_impute_hides_the_target_modality():
    fusion = build("autoencoder", {"image": 12, "text": 8}, dropout=0.0).eval()
    embs = embeddings({"image": 12, "text": 8}, batch=6)
    changed = dict(embs)
    changed["text"] = Embedding(embs["text"].pooled + 5.0, embs["text"].present, embs["text"].tokens,
                                embs["text"].token_mask)
    with torch.no_grad():
        a = fusion.impute(embs, "text")
        b = fusion.impute(changed, "text")
        c = fusion.impute({"text": embs["text"]}, "text")  # nothing else to impute from: still finite
    assert a.shape == (6, 8)
    torch.testing.assert_close(a, b)
    assert torch.isfinite(c).all() and c.shape == (6, 8)
    with pytest.raises(ValueError):
        fusion.impute(embs, "audio")


# ------------------------------------------------------------------------------ transformer / cross-attention
@pytest.mark.parametrize("name", ["transformer", "cross-attention"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padded_token_values_do_not_matter(name, mode):
    fusion = build(name, DIMS, dropout=0.0).train(mode == "train")
    embs = embeddings(batch=8)
    assert (~embs["text"].token_mask & embs["text"].present[:, None]).any(), "no padding to test"
    with torch.no_grad():
        a = fusion(embs)
        b = fusion(perturb_hidden(embs))
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.tokens, b.tokens)
    assert torch.equal(a.mask, b.mask)
    assert (a.tokens[~a.mask] == 0).all()


@pytest.mark.parametrize("name", ["transformer", "cross-attention"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_extra_padding_does_not_matter(name, mode):
    """Appending padded token positions leaves every sample's pooled output unchanged (the mask is used,
    not merely zeroed values)."""
    fusion = build(name, DIMS, dropout=0.0).train(mode == "train")
    embs = embeddings(batch=8)
    padded = dict(embs)
    for m in ("image", "text"):
        e = embs[m]
        padded[m] = Embedding(e.pooled, e.present, torch.cat([e.tokens, torch.randn(8, 3, e.tokens.shape[2])], 1),
                              torch.cat([e.token_mask, torch.zeros(8, 3, dtype=torch.bool)], 1))
    with torch.no_grad():
        a = fusion(embs)
        b = fusion(padded)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["transformer", "cross-attention"])
def test_train_without_dropout_equals_eval(name):
    """PyTorch's eval fast path must not change results (padded positions included)."""
    fusion = build(name, DIMS, dropout=0.0)
    embs = embeddings(batch=8)
    with torch.no_grad():
        train_out = fusion.train()(embs)
        eval_out = fusion.eval()(embs)
    torch.testing.assert_close(train_out.pooled, eval_out.pooled, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(train_out.tokens, eval_out.tokens, atol=1e-5, rtol=1e-4)


def test_transformer_tokens_layout():
    fusion = build("transformer", DIMS).eval()
    embs = embeddings(batch=6)
    with torch.no_grad():
        out = fusion(embs)
    # CLS + image tokens + tabular (pooled as one token) + text tokens
    assert out.tokens.shape == (6, 1 + 4 + 1 + 6, 32)
    assert fusion.has_tokens and out.mask[:, 0].all()
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])
    expected = torch.cat([torch.ones(6, 1, dtype=torch.bool), embs["image"].token_mask,
                          embs["tabular"].present[:, None], embs["text"].token_mask], dim=1)
    assert torch.equal(out.mask, expected)


def test_transformer_sample_with_only_one_modality_matches_it_alone():
    """A sample's output depends only on its own present modalities."""
    fusion = build("transformer", DIMS).eval()
    embs = embeddings(batch=6)
    row = 1  # presence_patterns: sample 1 has only the first modality ("image")
    assert embs["image"].present[row] and not embs["text"].present[row] and not embs["tabular"].present[row]
    with torch.no_grad():
        full = fusion(embs).pooled[row]
        alone = fusion({"image": embs["image"]}).pooled[row]
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=1e-4)


def test_transformer_pooled_only_modality_reaches_the_cls_without_attention():
    """A modality without tokens is added to the CLS token where present: with every attention and
    feed-forward branch silenced the CLS still carries the tabular vector, and only where it is present."""
    fusion = build("transformer", DIMS).eval()
    assert fusion.pooled_only == ["tabular"]
    with torch.no_grad():
        for layer in fusion.layers:
            for lin in (layer.self_attn.out_proj, layer.linear2):
                lin.weight.zero_(), lin.bias.zero_()
    embs = embeddings(batch=6)
    changed = dict(embs, tabular=Embedding(embs["tabular"].pooled + 1.0, embs["tabular"].present))
    with torch.no_grad():
        a, b = fusion(embs).pooled, fusion(changed).pooled
    present = embs["tabular"].present
    assert present.any() and (~present).any()
    assert (a[present] - b[present]).abs().amax(dim=1).gt(1e-3).all()
    torch.testing.assert_close(a[~present], b[~present])
    # saved with a trained model; a model saved before this existed (no key) keeps the CLS without it
    assert fusion.get_fit_state() == {"pooled_in_cls": True}
    fusion.set_fit_state({})
    with torch.no_grad():
        torch.testing.assert_close(fusion(embs).pooled, fusion(changed).pooled)
    # a fusion built without token information (token_inputs unknown) adds nothing to the CLS
    assert mmkit.create("fusion", "transformer", context={"input_dims": DIMS}, dim=32, heads=4).pooled_only == []


def test_transformer_query_and_key_start_at_single_matrix_xavier_scale():
    """q and k rows of the packed in-projection are sqrt(2) wider than v's (PyTorch's packed init)."""
    torch.manual_seed(0)
    fusion = build("transformer", DIMS, dim=128, heads=4)
    for layer in fusion.layers:
        w = layer.self_attn.in_proj_weight.detach()
        q, k, v = w[:128].std(), w[128:256].std(), w[256:].std()
        assert abs(q / v - 2 ** 0.5) < 0.05 and abs(k / v - 2 ** 0.5) < 0.05


def test_cross_attention_explicit_query_and_key_and_fallbacks():
    fusion = build("cross-attention", {"image": 12, "text": 8}, query="text", key="image").eval()
    assert fusion.query == "text" and fusion.keys == ["image"]
    embs = embeddings({"image": 12, "text": 8}, batch=8)
    with torch.no_grad():
        out = fusion(embs)
        text_only = fusion({"text": embs["text"]})  # key absent everywhere -> query's own representation
        image_only = fusion({"image": embs["image"]})  # query absent everywhere -> key's representation
    no_key = embs["text"].present & ~embs["image"].present
    no_query = ~embs["text"].present & embs["image"].present
    both = embs["text"].present & embs["image"].present
    assert no_key.any() and no_query.any() and both.any()
    torch.testing.assert_close(out.pooled[no_key], text_only.pooled[no_key])
    torch.testing.assert_close(out.pooled[no_query], image_only.pooled[no_query])
    assert not torch.allclose(out.pooled[both], text_only.pooled[both])  # the key is really attended to
    assert torch.isfinite(text_only.pooled).all() and torch.isfinite(image_only.pooled).all()
    assert out.mask.any(dim=1).all()  # every sample keeps at least one real token


def test_cross_attention_defaults():
    two = build("cross-attention", {"text": 8, "image": 12})
    assert two.query == "image" and two.keys == ["text"]
    three = build("cross-attention", DIMS)
    assert three.query == "image" and three.keys == ["tabular", "text"]
    one = build("cross-attention", {"text": 8})
    assert one.query == "text" and one.keys == ["text"]
