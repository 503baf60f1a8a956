"""Built-in heads: contract kit, losses against hand-computed values, label mapping, decoding."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
import math

import pytest
import torch

import mmkit
from mmkit._internal.errors import DataError, ParameterError
from mmkit._internal.interfaces import Batch, Embedding, Fused
from mmkit.testing import check_head, random_embeddings

from mmkit_heads.captioning import CaptioningHead
from mmkit_heads.classification import ClassificationHead
from mmkit_heads.contrastive import ContrastiveHead, gather_with_grad, info_nce
from mmkit_heads.decoder import beam_decode, greedy_decode
from mmkit_heads.regression import RegressionHead


DIM = 16
MODALITY_DIMS = {"image": 12, "text": 8}
CAPTIONS = ["a red circle", "a blue square left of a red circle", "a green triangle above a blue square",
            "a yellow circle", "a red square left of a green circle above a blue triangle", "a blue circle"]


def make_fused(batch: int, tokens: int | None = 5, present: dict[str, torch.Tensor] | None = None,
               grad_inputs: bool = False, seed: int = 0) -> Fused:
    """A Fused with random pooled/tokens and per-modality ``inputs`` embeddings."""
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(batch, DIM, generator=g)
    toks = mask = None
    if tokens:
        toks = torch.randn(batch, tokens, DIM, generator=g)
        mask = torch.arange(tokens)[None] < torch.randint(1, tokens + 1, (batch,), generator=g)[:, None]
    inputs = random_embeddings(MODALITY_DIMS, batch, present=present, seed=seed)
    if grad_inputs:
        inputs = {m: Embedding(e.pooled.clone().requires_grad_(True), e.present) for m, e in inputs.items()}
    return Fused(pooled, toks, mask, inputs=inputs)


def make_batch(head, rows: list[dict], present: dict[str, torch.Tensor] | None = None) -> Batch:
    targets = head.collate_targets([head.preprocess_target(r) for r in rows])
    present = present or {m: torch.ones(len(rows), dtype=torch.bool) for m in MODALITY_DIMS}
    return Batch(inputs={}, present=present, targets=targets, index=torch.arange(len(rows)))


def build(name: str, **params):
    return mmkit.create("head", name, context={"input_dim": DIM, "modality_dims": MODALITY_DIMS}, **params)


# ------------------------------------------------------------------------------------- registry
def test_the_four_heads_are_registered_and_built_through_the_registry():
    names = {c.name for c in mmkit.list_components("head")}
    assert {"classification", "regression", "contrastive", "captioning"} <= names
    head = build("classification", num_classes=3, hidden=8)
    assert isinstance(head, ClassificationHead) and head.fields == ("label",)
    assert build("regression", field="price").fields == ("price",)
    assert build("contrastive").fields == ()
    assert build("captioning", dim=32).fields == ("caption",)
    with pytest.raises(ParameterError, match="beam"):
        build("captioning", beam=3)


# -------------------------------------------------------------------------------- check_head
def test_check_head_classification_single_label():
    head = build("classification", hidden=8, dropout=0.1, label_smoothing=0.1)
    rows = [{"label": v} for v in ["cat", "dog", "bird", "dog", "cat", "bird"]]
    head.fit(rows)
    assert head.labels == ["bird", "cat", "dog"] and head.out.out_features == 3
    out = check_head(head, make_fused(6), make_batch(head, rows))
    assert out.preds["logits"].shape == (6, 3)
    row = head.decode(out.preds)[0]
    assert row["label"] in {"cat", "dog", "bird"} and set(row["probs"]) == {"bird", "cat", "dog"}
    assert math.isclose(sum(row["probs"].values()), 1.0, rel_tol=1e-5)


def test_check_head_classification_multi_label():
    head = build("classification", multi_label=True)
    rows = [{"label": "a|b"}, {"label": ["c"]}, {"label": ""}, {"label": "b | c"}]
    head.fit(rows)
    assert head.labels == ["a", "b", "c"] and head.monitor == "micro_f1"
    batch = make_batch(head, rows)
    assert batch.targets.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 1]]
    out = check_head(head, make_fused(4), batch)
    assert set(head.decode(out.preds)[0]) == {"labels", "probs"}


def test_check_head_regression():
    head = build("regression", loss="huber", hidden=8)
    rows = [{"target": v} for v in [1.0, 3.0, "5", 7]]
    head.fit(rows)
    out = check_head(head, make_fused(4), make_batch(head, rows))
    assert [set(r) for r in head.decode(out.preds)] == [{"value"}] * 4


def test_check_head_contrastive_with_missing_modalities():
    present = {"image": torch.tensor([True, True, False, True, True]),
               "text": torch.tensor([True, True, True, False, True])}
    head = build("contrastive", proj_dim=8)
    assert head.monitor == "image_to_text_r1" and head.monitor_mode == "max"
    fused = make_fused(5, present=present, grad_inputs=True)
    out = check_head(head, fused, make_batch(head, [{}] * 5, present))
    rows = head.decode(out.preds)
    assert rows[2]["embedding_image"] is None and len(rows[2]["embedding_text"]) == 8
    metrics = head.new_metrics()
    metrics.update(out, make_batch(head, [{}] * 5, present))
    values = metrics.compute()
    assert {"image_to_text_r1", "image_to_text_r10", "text_to_image_mean_rank"} <= set(values)
    assert values["image_to_text_mean_rank"] <= 3  # 3 complete pairs


@pytest.mark.parametrize("tokens", [5, None])
@pytest.mark.parametrize("beam", [1, 3])
def test_check_head_captioning(tokens, beam):
    head = build("captioning", dim=32, heads=4, layers=2, max_len=12, beam_size=beam)
    rows = [{"caption": c} for c in CAPTIONS]
    head.fit(rows)
    assert head.decoder.vocab_size == len(head.tokenizer.itos) < 30
    out = check_head(head, make_fused(6, tokens=tokens), make_batch(head, rows))
    assert out.preds["tokens"].shape[0] == 6 and out.preds["tokens"].shape[1] <= 13
    assert [set(r) for r in head.decode(out.preds)] == [{"caption"}] * 6


def test_check_head_captioning_wordpiece_and_reference_lists():
    head = build("captioning", tokenizer="wordpiece", dim=32, max_len=8)
    rows = [{"caption": ["a red circle", "one red circle"]}, {"caption": "a blue square"}]
    head.fit(rows)
    assert head.decoder.vocab_size == 30522
    batch = make_batch(head, rows)
    assert batch.targets["refs"][0] == ["a red circle", "one red circle"]
    assert batch.targets["ids"][0, 0] == head.tokenizer.bos_id
    check_head(head, make_fused(2), batch)


# ----------------------------------------------------------------------- hand-computed losses
def _log_softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def _linear_classifier(head, weight):
    with torch.no_grad():
        head.out.weight.copy_(torch.tensor(weight))
        head.out.bias.zero_()


def test_cross_entropy_with_label_smoothing_and_class_weights_by_hand():
    x = [[1.0, 0.0], [0.0, 2.0]]
    weight = [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]  # logits row0: [2, 0, -1]; row1: [0, 2, 1]
    logits = [[2.0, 0.0, -1.0], [0.0, 2.0, 1.0]]
    y, eps, w = [0, 2], 0.1, [1.0, 2.0, 3.0]
    fused = Fused(torch.tensor(x))
    batch = Batch({}, {}, torch.tensor(y), torch.arange(2))

    head = ClassificationHead(2, num_classes=3, label_smoothing=eps)
    _linear_classifier(head, weight)
    # smoothed CE = (1 - eps) * -log p_y + eps * mean_k(-log p_k)
    expected = sum((1 - eps) * -_log_softmax(lg)[t] + eps * -sum(_log_softmax(lg)) / 3
                   for lg, t in zip(logits, y)) / 2
    assert head(fused, batch).loss.item() == pytest.approx(expected, rel=1e-5)

    head = ClassificationHead(2, num_classes=3, class_weights=w)
    _linear_classifier(head, weight)
    # weighted mean: sum_i w[y_i] * nll_i / sum_i w[y_i]
    expected = sum(w[t] * -_log_softmax(lg)[t] for lg, t in zip(logits, y)) / (w[0] + w[2])
    assert head(fused, batch).loss.item() == pytest.approx(expected, rel=1e-5)


def test_binary_cross_entropy_multi_label_by_hand():
    head = ClassificationHead(2, num_classes=3, multi_label=True)
    _linear_classifier(head, [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    fused = Fused(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # logits [[2, 0, -1], [0, 2, 1]]
    target = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    out = head(fused, Batch({}, {}, torch.tensor(target), torch.arange(2)))
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    logits = [[2.0, 0.0, -1.0], [0.0, 2.0, 1.0]]
    expected = -sum(t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z))
                    for lr, tr in zip(logits, target) for z, t in zip(lr, tr)) / 6
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_regression_loss_on_standardized_targets_by_hand(kind):
    head = RegressionHead(1, loss=kind)
    head.fit([{"target": v} for v in (1.0, 3.0, 5.0)])
    mean, std = 3.0, math.sqrt(8 / 3)  # population std of 1, 3, 5
    assert head.mean == pytest.approx(mean) and head.std == pytest.approx(std)
    with torch.no_grad():
        head.out.weight.fill_(1.0)
        head.out.bias.zero_()
    z = [0.5, -2.0, 1.0]  # the network's standardized predictions
    y = [5.0, 1.0, 3.0]
    out = head(Fused(torch.tensor(z)[:, None]), Batch({}, {}, torch.tensor(y), torch.arange(3)))
    tz = [(v - mean) / std for v in y]
    d = [a - b for a, b in zip(z, tz)]
    if kind == "mse":
        expected = sum(e * e for e in d) / 3
    else:  # delta 1: 0.5 e^2 where |e| <= 1, else |e| - 0.5
        expected = sum(0.5 * e * e if abs(e) <= 1 else abs(e) - 0.5 for e in d) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.preds["value"].tolist() == pytest.approx([mean + std * v for v in z], rel=1e-5)
    assert head.decode(out.preds)[1]["value"] == pytest.approx(mean - 2 * std, rel=1e-5)


# ------------------------------------------------------------------------------- mixed batches
def _mixed_batch(targets, lam: float = 0.3) -> Batch:
    """A batch whose image encoder mixed its present rows 0, 2, 3 (row 1 has no image) with perm [1, 0, 2]:
    row 0 with row 2, row 2 with row 0, row 3 with itself."""
    present = torch.tensor([True, False, True, True])
    mix = {"lam": torch.tensor(lam), "perm": torch.tensor([1, 0, 2])}
    return Batch({"image": {"pixels": torch.zeros(3, 3, 4, 4), "mix": mix}}, {"image": present},
                 torch.tensor(targets), torch.arange(4))


def test_classification_mixes_targets_as_the_encoder_mixed_the_images():
    head = ClassificationHead(2, num_classes=3)
    _linear_classifier(head, [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    fused = Fused(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.5, -1.0]]))
    logits = [[2.0, 0.0, -1.0], [0.0, 2.0, 1.0], [2.0, 1.0, -0.5], [1.0, -1.0, -1.0]]
    y, lam = [0, 1, 2, 1], 0.3
    soft = [[lam, 0, 1 - lam], [0, 1, 0], [1 - lam, 0, lam], [0, 1, 0]]  # row 1 (no image) stays one-hot
    expected = sum(-sum(q * lp for q, lp in zip(qs, _log_softmax(lg))) for qs, lg in zip(soft, logits)) / 4
    assert head(fused, _mixed_batch(y, lam)).loss.item() == pytest.approx(expected, rel=1e-5)
    plain = head(fused, Batch({}, {}, torch.tensor(y), torch.arange(4))).loss.item()
    assert plain == pytest.approx(sum(-_log_softmax(lg)[t] for lg, t in zip(logits, y)) / 4, rel=1e-5)
    multi = ClassificationHead(2, num_classes=3, multi_label=True)
    _linear_classifier(multi, [[2.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    hot = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    mixed = [[lam * a + (1 - lam) * b for a, b in zip(hot[0], hot[2])], hot[1],
             [lam * a + (1 - lam) * b for a, b in zip(hot[2], hot[0])], hot[3]]
    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    expected = -sum(t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z))
                    for lr, tr in zip(logits, mixed) for z, t in zip(lr, tr)) / 12
    assert multi(fused, _mixed_batch(hot, lam)).loss.item() == pytest.approx(expected, rel=1e-5)


def test_regression_mixes_targets_and_other_heads_refuse_mixing():
    head = RegressionHead(1, standardize=False)
    with torch.no_grad():
        head.out.weight.fill_(1.0)
        head.out.bias.zero_()
    z, y, lam = [0.5, -2.0, 1.0, 0.0], [5.0, 1.0, 3.0, 2.0], 0.25
    mixed = [lam * 5.0 + (1 - lam) * 3.0, 1.0, lam * 3.0 + (1 - lam) * 5.0, 2.0]
    out = head(Fused(torch.tensor(z)[:, None]), _mixed_batch(y, lam))
    assert out.loss.item() == pytest.approx(sum((a - b) ** 2 for a, b in zip(z, mixed)) / 4, rel=1e-5)
    contrastive = build("contrastive", proj_dim=8)
    with pytest.raises(ParameterError, match="contrastive head cannot mix its targets.*encoder 'image'"):
        contrastive(make_fused(4), _mixed_batch([0, 0, 0, 0]))
    captioning = build("captioning", dim=16, layers=1, heads=2)
    with pytest.raises(ParameterError, match="captioning head cannot mix"):
        captioning(make_fused(4), _mixed_batch([0, 0, 0, 0]))


def test_info_nce_2x2_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # scale 10: q->k logits [[10, 6], [0, 8]]; k->q logits [[10, 0], [6, 8]]
    sp = lambda d: math.log1p(math.exp(-d))  # -log softmax of the right one, margin d  # noqa: E731
    expected = ((sp(4) + sp(8)) / 2 + (sp(10) + sp(2)) / 2) / 2
    assert info_nce(q, k, torch.tensor(10.0)).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_head_loss_uses_complete_pairs_only():
    head = ContrastiveHead(4, {"image": 2, "text": 2}, proj_dim=2, temperature=0.1)
    with torch.no_grad():
        for proj in (head.proj_q, head.proj_k):
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
    assert head.logit_scale.exp().item() == pytest.approx(10.0)
    img = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 3.0]])   # row 1 has no text
    txt = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.6, 0.8]])
    present_t = torch.tensor([True, False, True])
    fused = Fused(torch.zeros(3, 4), inputs={"image": Embedding(img, torch.ones(3, dtype=torch.bool)),
                                             "text": Embedding(txt, present_t)})
    out = head(fused, Batch({}, {}, {}, torch.arange(3)))
    sp = lambda d: math.log1p(math.exp(-d))  # noqa: E731
    assert out.loss.item() == pytest.approx(((sp(4) + sp(8)) / 2 + (sp(10) + sp(2)) / 2) / 2, rel=1e-5)
    # no complete pair: a zero loss that still backpropagates (DDP needs every parameter used)
    fused.inputs["text"] = Embedding(txt, torch.zeros(3, dtype=torch.bool))
    loss = head(fused, Batch({}, {}, {}, torch.arange(3))).loss
    loss.backward()
    assert loss.item() == 0.0


def test_logit_scale_is_clamped_at_max():
    head = ContrastiveHead(4, {"image": 2, "text": 2}, temperature=0.001, max_logit_scale=100.0)
    fused = make_fused(3)
    fused.inputs = {"image": Embedding(torch.randn(3, 2), torch.ones(3, dtype=torch.bool)),
                    "text": Embedding(torch.randn(3, 2), torch.ones(3, dtype=torch.bool))}
    assert head(fused, Batch({}, {}, {}, torch.arange(3))).aux["logit_scale"].item() == pytest.approx(100.0)


def test_gather_with_grad_is_identity_without_distributed():
    t = torch.randn(3, 4, requires_grad=True)
    out, offset = gather_with_grad(t)
    assert out is t and offset == 0


def _gather_worker(rank: int, init_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        t = torch.full((rank + 1, 2), float(rank + 1), requires_grad=True)  # rank 0: 1 row, rank 1: 2 rows
        out, offset = gather_with_grad(t)
        assert out.tolist() == [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]], out
        assert offset == rank
        (out * torch.arange(1.0, 4.0)[:, None]).sum().backward()
        # the gather is differentiable: each row gets the gradient of both ranks' (identical) losses
        assert t.grad.tolist() == [[2.0 * (i + offset + 1)] * 2 for i in range(rank + 1)]
        (Path(init_file).parent / f"ok{rank}").touch()  # every check of this rank passed
        dist.barrier()  # neither rank tears gloo down while the other still talks to it (aborted once in CI)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_with_grad_two_processes_with_different_row_counts(tmp_path):
    import torch.multiprocessing as mp

    try:
        mp.spawn(_gather_worker, args=(str(tmp_path / "init"),), nprocs=2, join=True)
    except mp.ProcessExitedException:
        # a gloo teardown abort after both ranks passed every check is torch's, not the gather's
        if not all((tmp_path / f"ok{r}").exists() for r in (0, 1)):
            raise


def test_contrastive_rejects_unknown_modality():
    with pytest.raises(ParameterError, match="audio"):
        ContrastiveHead(4, {"image": 2, "text": 2}, query="audio")


# --------------------------------------------------------------------------- label mapping
def test_label_mapping_survives_fit_state_round_trip():
    head = ClassificationHead(DIM, hidden=8)
    rows = [{"label": v} for v in ["cat", "dog", "bird", "dog"]]
    head.fit(rows)
    state = json.loads(json.dumps(head.get_fit_state()))
    fresh = ClassificationHead(DIM, hidden=8)
    fresh.set_fit_state(state)
    fresh.load_state_dict(head.state_dict())  # the layer was resized before loading, as the engine does
    head.eval(), fresh.eval()
    fused = make_fused(4)
    batch = make_batch(fresh, rows)
    assert batch.targets.tolist() == [1, 2, 0, 2]
    a, b = head(fused, batch), fresh(fused, batch)
    assert torch.allclose(a.preds["logits"], b.preds["logits"])
    assert head.decode(a.preds) == fresh.decode(b.preds)


def test_integer_labels_and_csv_strings_map_to_the_same_class():
    head = ClassificationHead(DIM)
    head.fit([{"label": v} for v in [0, 1, 1, 0]])
    assert head.labels == [0, 1]
    assert head.preprocess_target({"label": "1"}).item() == 1
    assert head.preprocess_target({"label": 1.0}).item() == 1
    assert json.loads(json.dumps(head.decode({"logits": torch.tensor([[0.0, 3.0]])})))[0]["label"] == 1
    fixed = ClassificationHead(DIM, num_classes=5)
    fixed.fit([{"label": 0}, {"label": 3}])
    assert fixed.labels == [0, 1, 2, 3, 4]  # int labels in range keep their index
    with pytest.raises(DataError, match="num_classes = 2"):
        ClassificationHead(DIM, num_classes=2).fit([{"label": v} for v in "abc"])


def test_unseen_label_is_a_clear_data_error():
    head = ClassificationHead(DIM)
    head.fit([{"label": "cat"}, {"label": "dog"}])
    with pytest.raises(DataError, match=r"'zebra' was not seen in training; known labels: 'cat', 'dog'"):
        head.preprocess_target({"label": "zebra"})
    multi = ClassificationHead(DIM, multi_label=True)
    multi.fit([{"label": "cat|dog"}])
    with pytest.raises(DataError, match="'cow'"):
        multi.preprocess_target({"label": "cat|cow"})
    with pytest.raises(DataError, match="missing label"):
        head.preprocess_target({"label": None})


def test_regression_and_caption_fit_state_round_trip():
    reg = RegressionHead(DIM)
    reg.fit([{"target": v} for v in (2.0, 4.0)])
    fresh = RegressionHead(DIM)
    fresh.set_fit_state(json.loads(json.dumps(reg.get_fit_state())))
    assert (fresh.mean, fresh.std) == (3.0, 1.0)
    with pytest.raises(DataError, match="not a number"):
        reg.preprocess_target({"target": "n/a"})

    cap = CaptioningHead(DIM, dim=32)
    cap.fit([{"caption": c} for c in CAPTIONS])
    again = CaptioningHead(DIM, dim=32)
    again.set_fit_state(json.loads(json.dumps(cap.get_fit_state())))
    again.load_state_dict(cap.state_dict())
    assert again.tokenizer.itos == cap.tokenizer.itos
    cap.eval(), again.eval()
    fused = make_fused(3)
    assert torch.equal(cap.generate(fused), again.generate(fused))


# ------------------------------------------------------------------------------- decoding
def _caption_head(**params) -> CaptioningHead:
    torch.manual_seed(0)
    head = CaptioningHead(DIM, dim=32, heads=4, layers=2, max_len=10, dropout=0.0, **params)
    head.fit([{"caption": c} for c in CAPTIONS])
    _randomize(head, 0.3)
    return head.eval()


def _randomize(head, std: float) -> None:
    """Large random weights: a freshly initialised decoder predicts nearly the same token everywhere,
    which would make decoding tests trivial."""
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, std)


def test_beam_search_with_one_beam_equals_greedy():
    head = _caption_head()
    fused = make_fused(8, seed=3)
    greedy = head.generate(fused, beam_size=1)
    memory, mask = head.memory(fused)
    for penalty in (0.0, 1.0, 2.0):  # with one beam the length penalty cannot matter
        beam1 = beam_decode(head.decoder, head.decoder.memory_kv(memory), mask, bos=2, eos=3, pad=0,
                            max_steps=11, beam_size=1, length_penalty=penalty)
        assert torch.equal(greedy, beam1)
    assert greedy.shape[1] > 2


def test_cached_decoding_equals_uncached():
    head = _caption_head()
    fused = make_fused(6, seed=1)
    memory, mask = head.memory(fused)
    kv = head.decoder.memory_kv(memory)
    kw = dict(bos=2, eos=3, pad=0, max_steps=11)
    tok_c, logits_c = greedy_decode(head.decoder, kv, mask, use_cache=True, **kw)
    tok_u, logits_u = greedy_decode(head.decoder, kv, mask, use_cache=False, **kw)
    assert tok_c.shape[1] > 3
    assert torch.equal(tok_c, tok_u)
    assert torch.allclose(logits_c, logits_u, atol=1e-4, rtol=1e-4)
    beam_c = beam_decode(head.decoder, kv, mask, beam_size=3, use_cache=True, **kw)
    beam_u = beam_decode(head.decoder, kv, mask, beam_size=3, use_cache=False, **kw)
    assert torch.equal(beam_c, beam_u)
    head.use_cache = False
    assert torch.equal(head.generate(fused, beam_size=3), beam_c)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_exhaustive_beam_search_finds_the_best_sequence(length_penalty):
    """With as many beams as sequences, beam search must return the brute-force optimum."""
    torch.manual_seed(0)
    head = CaptioningHead(DIM, dim=16, heads=2, layers=1, max_len=2, dropout=0.0, length_penalty=length_penalty)
    head.fit([{"caption": "a b"}])  # vocabulary: 4 specials + 2 words
    _randomize(head, 0.6)
    head.eval()
    fused = make_fused(6, seed=5)
    memory, mask = head.memory(fused)
    kv = head.decoder.memory_kv(memory)
    vocab, steps, eos, pad = head.decoder.vocab_size, 3, 3, 0
    found = beam_decode(head.decoder, kv, mask, bos=2, eos=eos, pad=pad, max_steps=steps,
                        beam_size=vocab ** steps, length_penalty=length_penalty)
    full = torch.tensor(list(itertools.product(range(vocab), repeat=steps)))  # every length-3 sequence
    ids = torch.cat([torch.full((len(full), 1), 2), full[:, :-1]], dim=1)
    for row in range(6):
        sub_kv = [(k[row:row + 1].expand(len(full), -1, -1, -1), v[row:row + 1].expand(len(full), -1, -1, -1))
                  for k, v in kv]
        logits = head.decoder(ids, sub_kv, mask[row:row + 1])  # [V^3, 3, V]
        logits[..., [0, 2]] = -math.inf  # padding and BOS are never generated
        logp = torch.log_softmax(logits, -1)
        step_logp = logp.gather(2, full[..., None])[..., 0].tolist()
        best, best_seq = -math.inf, None
        for j, seq in enumerate(full.tolist()):
            for length in range(1, steps + 1):  # shorter sequences are prefixes of a length-3 one
                prefix = seq[:length]
                if eos in prefix[:-1] or (length < steps and prefix[-1] != eos) or {0, 2} & set(prefix):
                    continue  # EOS ends a caption; padding and BOS are never generated
                score = sum(step_logp[j][:length]) / length ** length_penalty
                if score > best + 1e-9:
                    best, best_seq = score, tuple(prefix)
        got = found[row].tolist()
        got = got[: got.index(eos) + 1] if eos in got else got
        assert tuple(got) == best_seq
    greedy = head.generate(fused, beam_size=1)
    assert not torch.equal(greedy, found[:, : greedy.shape[1]])  # the search is not trivially greedy


def test_eval_forward_generates_captions_and_training_forward_does_not():
    head = _caption_head()
    rows = [{"caption": c} for c in CAPTIONS[:3]]
    batch = make_batch(head, rows)
    head.train()
    assert head(make_fused(3), batch).preds == {}
    head.eval()
    with torch.no_grad():
        out = head(make_fused(3), batch)
    assert len(out.preds["captions"]) == 3 and all(isinstance(c, str) for c in out.preds["captions"])
    metrics = head.new_metrics()
    metrics.update(out, batch)
    assert {"bleu1", "bleu4", "cider", "exact_match", "loss"} <= set(metrics.compute())
