"""Metrics of the built-in heads against hand-worked examples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import mmkit
from mmkit._internal.errors import ParameterError
from mmkit._internal.interfaces import Batch, Output

from mmkit_heads.captioning import CaptioningHead, CaptionMetrics
from mmkit_heads.classification import ClassificationHead, ClassificationMetrics
from mmkit_heads.contrastive import ContrastiveHead, RetrievalMetrics, recall_scores, retrieval_ranks
from mmkit_heads.regression import RegressionHead, RegressionMetrics
from mmkit_heads.textmetrics import cider_d, corpus_bleu, exact_match, normalize


def _batch(targets, n: int) -> Batch:
    return Batch({}, {}, targets, torch.arange(n))


# --------------------------------------------------------------------------------------- BLEU
def test_corpus_bleu_by_hand():
    hyps = ["the cat sat on the mat", "a dog"]
    refs = [["the cat sat on a mat"], ["a dog runs", "the dog"]]
    # sample 1 (6 words, ref 6 words):
    #   1-grams the x2 (ref has 1 -> clipped 1), cat, sat, on, mat          5/6
    #   2-grams the-cat, cat-sat, sat-on | on-the, the-mat miss             3/5
    #   3-grams the-cat-sat, cat-sat-on | sat-on-the, on-the-mat miss       2/4
    #   4-grams the-cat-sat-on | cat-sat-on-the, sat-on-the-mat miss        1/3
    # sample 2 (2 words; refs of 3 and 2 words -> closest 2):
    #   1-grams a, dog 2/2; 2-grams a-dog 1/1; no 3- or 4-grams (adds 0/0)
    # corpus: p1 = 7/8, p2 = 4/6, p3 = 2/4, p4 = 1/3; c = 8 = r -> brevity penalty exp(0) = 1
    p = [7 / 8, 4 / 6, 2 / 4, 1 / 3]
    scores = corpus_bleu(hyps, refs)
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n), rel=1e-12)
    assert scores["bleu4"] == pytest.approx((7 / 72) ** 0.25)


def test_bleu_brevity_penalty_and_zero_matches():
    # c = 2 < r = 3: BP = exp(1 - 3/2); p1 = p2 = 1
    assert corpus_bleu(["the cat"], [["the cat sat"]])["bleu2"] == pytest.approx(math.exp(-0.5))
    # closest reference length: a tie between 1 and 3 words for a 2-word hypothesis takes the shorter,
    # so r = 1 < c and BP = 1 (the longer would give exp(1 - 3/2)); p1 = 2/2
    assert corpus_bleu(["the cat"], [["the", "the cat sat"]])["bleu1"] == pytest.approx(1.0)
    assert corpus_bleu(["a b c d"], [["a b c e"]])["bleu4"] == 0.0  # no 4-gram matches, no smoothing
    assert corpus_bleu([""], [["a b"]])["bleu1"] == 0.0
    # punctuation and case do not count
    assert corpus_bleu(["The cat, sat."], [["the cat sat"]])["bleu3"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------- CIDEr
def test_cider_d_by_hand():
    # two samples -> log N = log 2; document frequencies over the references:
    #   red 1, circle 2, blue 1, "red circle" 1, "blue circle" 1  -> idf log2 except circle: 0
    # sample A: hyp "red circle" == ref: order 1 cos = 1, order 2 cos = 1, orders 3-4 empty -> 0
    #           CIDEr = 10 * (1 + 1 + 0 + 0) / 4 = 5
    # sample B: hyp "blue square" vs ref "blue circle": order 1 hyp (blue: log2, square: log2 [df 0]),
    #           ref (blue: log2, circle: 0); dot = log2^2, norms sqrt2*log2 and log2 -> 1/sqrt2;
    #           order 2 no overlap -> CIDEr = 10 * (1/sqrt2) / 4
    expected = (5.0 + 10 * (1 / math.sqrt(2)) / 4) / 2
    assert cider_d(["red circle", "blue square"], [["red circle"], ["blue circle"]]) == pytest.approx(expected)


def test_cider_d_length_penalty_and_reference_average():
    # A: hyp "red" vs ref "red circle" (all idf log2): order 1 cos 1/sqrt2, length delta -1
    #    -> 10 * (1/sqrt2) * exp(-1 / 72) / 4;   B: exact -> 5
    a = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert cider_d(["red", "blue square"], [["red circle"], ["blue square"]]) == pytest.approx((a + 5) / 2)
    # two references for B: the score is their mean; an unrelated reference adds 0
    two = cider_d(["red", "blue square"], [["red circle"], ["blue square", "green dot"]])
    assert two < (a + 5) / 2


def test_exact_match_and_normalize():
    assert normalize("A Red, circle!") == ["a", "red", "circle"]
    assert exact_match(["a red circle", "a blue one"], [["A red circle."], ["a blue square"]]) == 0.5


def test_caption_metrics_merge_equals_one_pass():
    hyps = ["a red circle", "a blue square", "a green triangle above a red circle"]
    refs = [["a red circle"], ["a blue circle"], ["a green triangle above a blue circle"]]
    whole, part1, part2 = CaptionMetrics(), CaptionMetrics(), CaptionMetrics()
    whole.update(Output(None, {"captions": hyps}), _batch({"refs": refs}, 3))
    part1.update(Output(None, {"captions": hyps[:1]}), _batch({"refs": refs[:1]}, 1))
    part2.update(Output(None, {"captions": hyps[1:]}), _batch({"refs": refs[1:]}, 2))
    part1.merge(part2)
    assert part1.compute() == whole.compute()
    assert whole.compute()["exact_match"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------- retrieval
def test_recall_at_k_with_ties_counts_ties_against():
    e1, e2, e3 = torch.eye(3)
    q = torch.stack([e1, e1, e2])
    k = torch.stack([e1, e1, e2])  # keys 0 and 1 are identical: a tie for queries 0 and 1
    # query 0: scores [1, 1, 0]; the true key (0) ties with key 1 -> pessimistic rank 2; same for query 1
    # query 2: scores [0, 0, 1] -> rank 1
    assert retrieval_ranks(q, k).tolist() == [2, 2, 1]
    out = recall_scores(q, k, "a_to_b", ks=(1, 2))
    assert out == pytest.approx({"a_to_b_r1": 1 / 3, "a_to_b_r2": 1.0, "a_to_b_mean_rank": 5 / 3})


def test_recall_at_k_by_hand_in_both_directions():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    k = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
    # q->k scores: q0 [0.8, 1.0, 0.0] true 0.8 -> rank 2; q1 [0.6, 0.0, 1.0] true 0.0 -> rank 3;
    #              q2 [0.96, 0.6, 0.8] true 0.8 -> rank 2
    # k->q scores: k0 [0.8, 0.6, 0.96] true 0.8 -> rank 2; k1 [1, 0, 0.6] true 0 -> rank 3;
    #              k2 [0, 1, 0.8] true 0.8 -> rank 2
    metrics = RetrievalMetrics("image", "text")
    present = torch.ones(3, dtype=torch.bool)
    preds = {"emb_image": q, "emb_text": k, "present_image": present, "present_text": present}
    metrics.update(Output(torch.tensor(1.5), preds), _batch({}, 3))
    out = metrics.compute()
    assert out["image_to_text_r1"] == 0.0 and out["image_to_text_r5"] == 1.0
    assert out["image_to_text_mean_rank"] == pytest.approx(7 / 3)
    assert out["text_to_image_mean_rank"] == pytest.approx(7 / 3)
    assert out["loss"] == pytest.approx(1.5)


def test_retrieval_metrics_rank_over_the_whole_split_and_skip_incomplete_pairs():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(10, 4, generator=g), dim=-1)
    k = torch.nn.functional.normalize(q + 0.8 * torch.randn(10, 4, generator=g), dim=-1)
    present = torch.ones(10, dtype=torch.bool)
    text_present = present.clone()
    text_present[3] = False
    whole = RetrievalMetrics("image", "text")
    whole.update(Output(None, {"emb_image": q, "emb_text": k, "present_image": present,
                               "present_text": text_present}), _batch({}, 10))
    halves = RetrievalMetrics("image", "text")
    for part in (slice(0, 5), slice(5, 10)):
        other = RetrievalMetrics("image", "text")
        other.update(Output(None, {"emb_image": q[part], "emb_text": k[part], "present_image": present[part],
                                   "present_text": text_present[part]}), _batch({}, 5))
        halves.merge(other)
    keep = text_present
    assert whole.compute() == pytest.approx(halves.compute())
    assert whole.compute()["image_to_text_r1"] == pytest.approx(
        float((retrieval_ranks(q[keep], k[keep]) == 1).double().mean()))


# ------------------------------------------------------------------------------ classification
def test_macro_f1_and_accuracy_by_hand():
    pred = [0, 0, 1, 2, 2, 2]
    true = [0, 1, 1, 2, 2, 0]
    # class 0: tp 1, fp 1 (sample 1), fn 1 (sample 5) -> F1 = 2/(2+1+1) = 1/2
    # class 1: tp 1, fp 0, fn 1 (sample 1)            -> F1 = 2/3
    # class 2: tp 2, fp 1 (sample 5), fn 0            -> F1 = 4/5
    # class 3: never true nor predicted -> left out of the average
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 4).float()
    m = ClassificationMetrics(4)
    m.update(Output(None, {"logits": logits[:4]}), _batch(torch.tensor(true[:4]), 4))
    other = ClassificationMetrics(4)
    other.update(Output(None, {"logits": logits[4:]}), _batch(torch.tensor(true[4:]), 2))
    m.merge(other)
    out = m.compute()
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert out["macro_f1"] == pytest.approx(sklearn.f1_score(true, pred, average="macro"))


def test_multi_label_f1_by_hand():
    pred = [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    true = [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 0 fp 1 fn 0 -> 0
    # micro: tp 2, fp 2, fn 1 -> 4/7; subset accuracy: only the last row -> 1/3
    logits = torch.tensor(pred, dtype=torch.float) * 4 - 2  # sigmoid > 0.5 exactly where pred is 1
    m = ClassificationMetrics(3, multi_label=True)
    m.update(Output(None, {"logits": logits}), _batch(torch.tensor(true, dtype=torch.float), 3))
    out = m.compute()
    assert out["macro_f1"] == pytest.approx(4 / 9)
    assert out["micro_f1"] == pytest.approx(4 / 7)
    assert out["accuracy"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------- regression
def test_rmse_mae_r2_by_hand():
    true = [1.0, 2.0, 3.0, 4.0]
    pred = [1.5, 2.0, 2.5, 4.0]
    # errors .5, 0, -.5, 0: SS_res = 0.5; mean 2.5, SS_tot = 2.25 + .25 + .25 + 2.25 = 5
    # R² = 1 - 0.5/5 = 0.9; RMSE = sqrt(0.5/4); MAE = 1/4
    m = RegressionMetrics()
    m.update(Output(None, {"value": torch.tensor(pred[:2])}), _batch(torch.tensor(true[:2]), 2))
    m.update(Output(None, {"value": torch.tensor(pred[2:])}), _batch(torch.tensor(true[2:]), 2))
    out = m.compute()
    assert out == pytest.approx({"rmse": math.sqrt(0.125), "mae": 0.25, "r2": 0.9})


# ------------------------------------------------------------------- the field's metrics, checked by hand
# Independent computations: pairwise comparisons for AUROC, precision at each positive's rank for AP,
# explicit bins for ECE (no sorting or library code shared with torchmetrics).
def _auroc(scores: list[float], positive: list[bool]) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def _average_precision(scores: list[float], positive: list[bool]) -> float:
    """Mean over the positives of the precision among the samples scored at least as high (no ties)."""
    ranked = sorted(zip(scores, positive), key=lambda t: -t[0])
    hits, total = 0, 0.0
    for i, (_, p) in enumerate(ranked, start=1):
        if p:
            hits += 1
            total += hits / i
    return total / hits


def _ece(confidence: list[float], correct: list[bool], bins: int = 15) -> float:
    """Expected calibration error: equal-width bins (right-closed), |accuracy - confidence| weighted by size."""
    out = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidence) if lo < c <= hi]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidence[i] for i in idx) / len(idx)
            out += abs(acc - conf) * len(idx) / len(confidence)
    return out


ALL_SINGLE = ["accuracy", "macro_f1", "micro_f1", "auroc", "average_precision", "log_loss", "ece", "top2_accuracy"]


def _classification_case(n: int = 23, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g) * 2 + 1.5 * torch.nn.functional.one_hot(target, classes)
    return logits, target


def _run(metrics, logits, target, chunks=(slice(None),)):
    for part in chunks:
        metrics.update(Output(None, {"logits": logits[part]}), _batch(target[part], len(target[part])))
    return metrics


def test_single_label_metrics_against_hand_computations():
    logits, target = _classification_case()
    out = _run(ClassificationMetrics(4, metrics=ALL_SINGLE), logits, target).compute()
    probs = torch.softmax(logits.double(), dim=-1)
    p, t = probs.tolist(), target.tolist()
    assert out["accuracy"] == pytest.approx(sum(max(range(4), key=r.__getitem__) == y for r, y in zip(p, t)) / 23)
    assert out["micro_f1"] == pytest.approx(out["accuracy"])  # single-label: pooled F1 is accuracy
    top2 = [y in sorted(range(4), key=lambda c: -r[c])[:2] for r, y in zip(p, t)]
    assert out["top2_accuracy"] == pytest.approx(sum(top2) / 23)
    assert out["log_loss"] == pytest.approx(-sum(math.log(r[y]) for r, y in zip(p, t)) / 23, rel=1e-9)
    present = sorted(set(t))
    assert out["auroc"] == pytest.approx(
        sum(_auroc([r[c] for r in p], [y == c for y in t]) for c in present) / len(present), rel=1e-5)
    assert out["average_precision"] == pytest.approx(
        sum(_average_precision([r[c] for r in p], [y == c for y in t]) for c in present) / len(present), rel=1e-5)
    assert out["ece"] == pytest.approx(_ece([max(r) for r in p], [max(range(4), key=r.__getitem__) == y
                                                                  for r, y in zip(p, t)]), abs=1e-6)


def test_binary_auroc_and_ap_are_those_of_class_one_and_undefined_is_nan():
    logits, target = _classification_case(n=17, classes=2, seed=1)
    out = _run(ClassificationMetrics(2, metrics=["auroc", "average_precision"]), logits, target).compute()
    p1 = torch.softmax(logits.double(), dim=-1)[:, 1].tolist()
    positive = [bool(y) for y in target.tolist()]
    assert out["auroc"] == pytest.approx(_auroc(p1, positive), rel=1e-5)
    assert out["average_precision"] == pytest.approx(_average_precision(p1, positive), rel=1e-5)
    one_class = _run(ClassificationMetrics(3, metrics=["auroc", "average_precision", "accuracy"]),
                     logits[:4, :1].repeat(1, 3), torch.zeros(4, dtype=torch.long)).compute()
    assert math.isnan(one_class["auroc"])  # no negatives for class 0, no positives for the others
    assert one_class["average_precision"] == pytest.approx(1.0)  # class 0 only: every sample is a positive


def test_multi_label_metrics_against_hand_computations():
    g = torch.Generator().manual_seed(2)
    target = (torch.rand(19, 3, generator=g) < 0.4).float()
    target[0] = torch.tensor([1.0, 1.0, 1.0])  # every label has positives and negatives
    target[1] = 0.0
    logits = torch.randn(19, 3, generator=g) + 2 * (target - 0.5)
    names = ["accuracy", "micro_f1", "macro_f1", "auroc", "average_precision", "log_loss", "ece"]
    out = _run(ClassificationMetrics(3, multi_label=True, metrics=names), logits, target).compute()
    p = torch.sigmoid(logits.double()).tolist()
    t = target.long().tolist()
    assert out["auroc"] == pytest.approx(sum(_auroc([r[c] for r in p], [y[c] == 1 for y in t])
                                             for c in range(3)) / 3, rel=1e-5)
    assert out["average_precision"] == pytest.approx(
        sum(_average_precision([r[c] for r in p], [y[c] == 1 for y in t]) for c in range(3)) / 3, rel=1e-5)
    bce = [-(y * math.log(q) + (1 - y) * math.log(1 - q)) for r, ys in zip(p, t) for q, y in zip(r, ys)]
    assert out["log_loss"] == pytest.approx(sum(bce) / len(bce), rel=1e-9)
    flat_p = [q for r in p for q in r]
    flat_t = [y for ys in t for y in ys]
    # binary calibration of every (sample, label): confidence = the probability, "accuracy" = the target
    assert out["ece"] == pytest.approx(_ece_binary(flat_p, flat_t), abs=1e-6)
    with pytest.raises(ParameterError, match="top-K accuracy needs single-label"):
        ClassificationHead(4, num_classes=3, multi_label=True, metrics=["top2_accuracy"])


def test_multi_label_with_a_single_label_uses_the_binary_metrics():
    target = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]])
    logits = torch.tensor([[2.0], [-1.0], [-0.5], [0.3], [0.1]])  # predicted 1, 0, 0, 1, 1
    names = ["accuracy", "micro_f1", "macro_f1", "auroc", "average_precision", "log_loss", "ece"]
    out = _run(ClassificationMetrics(1, multi_label=True, metrics=names), logits, target).compute()
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["macro_f1"] == out["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1
    p = torch.sigmoid(logits[:, 0]).tolist()
    assert out["auroc"] == pytest.approx(_auroc(p, [bool(y) for y in target[:, 0].tolist()]))
    assert out["average_precision"] == pytest.approx(_average_precision(p, [bool(y) for y in target[:, 0]]))


def _ece_binary(prob: list[float], target: list[int], bins: int = 15) -> float:
    out = 0.0
    for b in range(bins):
        idx = [i for i, c in enumerate(prob) if b / bins < c <= (b + 1) / bins]
        if idx:
            out += abs(sum(target[i] for i in idx) / len(idx) - sum(prob[i] for i in idx) / len(idx)) * len(idx)
    return out / len(prob)


@pytest.mark.parametrize("multi_label", [False, True])
def test_classification_merge_of_two_halves_equals_one_pass_after_pickling(multi_label):
    import pickle

    if multi_label:
        g = torch.Generator().manual_seed(3)
        target = (torch.rand(23, 4, generator=g) < 0.5).float()
        logits = torch.randn(23, 4, generator=g)
        names = [n for n in ALL_SINGLE if n != "top2_accuracy"]
    else:
        logits, target = _classification_case()
        names = ALL_SINGLE
    whole = _run(ClassificationMetrics(4, multi_label, metrics=names), logits, target, (slice(0, 10), slice(10, 23)))
    first = _run(ClassificationMetrics(4, multi_label, metrics=names), logits, target, (slice(0, 11),))
    second = _run(ClassificationMetrics(4, multi_label, metrics=names), logits, target, (slice(11, 23),))
    # as the engine does: every rank's accumulator is pickled (all_gather_object), then merged into the first
    merged = pickle.loads(pickle.dumps(first))
    merged.merge(pickle.loads(pickle.dumps(second)))
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-6)
    assert set(whole.compute()) == set(names)
    empty = ClassificationMetrics(4, multi_label, metrics=names)  # a rank that saw no batch
    empty.merge(whole)
    assert empty.compute() == pytest.approx(whole.compute(), rel=1e-6)


def test_metric_names_are_checked_and_the_monitor_follows_them():
    with pytest.raises(ParameterError,
                       match="unknown metric 'aucroc'; valid metrics: accuracy, macro_f1.*top<K>_accuracy"):
        ClassificationHead(4, metrics=["accuracy", "aucroc"])
    head = ClassificationHead(4, metrics=["log_loss", "auroc"])
    assert (head.monitor, head.monitor_mode) == ("log_loss", "min")  # accuracy not chosen: the first one
    assert ClassificationHead(4, metrics=["auroc", "accuracy"]).monitor == "accuracy"
    with pytest.raises(ParameterError, match="top5_accuracy needs more than 5 classes, there are 3"):
        ClassificationHead(4, num_classes=3, metrics=["top5_accuracy"])
    auto = ClassificationHead(4, metrics=["top3_accuracy"])
    with pytest.raises(ParameterError, match="top3_accuracy needs more than 3 classes"):
        auto.fit([{"label": v} for v in "abcab"])
    with pytest.raises(ParameterError, match="unknown metric 'r0'"):
        ContrastiveHead(4, {"image": 2, "text": 2}, metrics=["r0"])
    reg = RegressionHead(4, metrics=["spearman"])
    assert (reg.monitor, reg.monitor_mode) == ("spearman", "max")
    assert CaptioningHead(4, metrics=["cider"]).monitor == "cider"
    with pytest.raises(ParameterError, match="valid metrics: rmse, mae, r2, spearman"):
        RegressionHead(4, metrics=["mape"])


def test_metrics_is_a_recipe_key_that_mmkit_show_and_the_validator_see():
    info = mmkit.describe("head", "classification")
    param = next(p for p in info.params if p.name == "metrics")
    assert param.type == "list[str] | None" and param.default is None and "auroc" in param.doc
    with pytest.raises(ParameterError, match="metrics: expected list"):
        mmkit.create("head", "regression", context={"input_dim": 4}, metrics="rmse")


def test_spearman_and_regression_merge_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(4)
    true = torch.randn(21, generator=g).double()
    pred = (true + 0.7 * torch.randn(21, generator=g)).round(decimals=1)  # ties in the predictions
    names = ["rmse", "mae", "r2", "spearman"]
    whole = RegressionMetrics(names)
    whole.update(Output(None, {"value": pred}), _batch(true, 21))
    halves = RegressionMetrics(names)
    halves.update(Output(None, {"value": pred[:8]}), _batch(true[:8], 8))
    other = RegressionMetrics(names)
    other.update(Output(None, {"value": pred[8:]}), _batch(true[8:], 13))
    halves.merge(other)
    out = whole.compute()
    assert halves.compute() == pytest.approx(out, rel=1e-9)
    assert out["spearman"] == pytest.approx(stats.spearmanr(pred.numpy(), true.numpy()).statistic, rel=1e-6)
    err = (pred - true).numpy()
    assert out["rmse"] == pytest.approx(float((err ** 2).mean() ** 0.5), rel=1e-12)
    assert out["r2"] == pytest.approx(1 - float((err ** 2).sum() / ((true - true.mean()) ** 2).sum()), rel=1e-12)
    one = RegressionMetrics(names)
    one.update(Output(None, {"value": pred[:1]}), _batch(true[:1], 1))
    assert math.isnan(one.compute()["spearman"]) and math.isnan(one.compute()["r2"])


def test_retrieval_map_is_the_mean_reciprocal_rank_and_agrees_with_torchmetrics():
    from torchmetrics.retrieval import RetrievalMAP

    g = torch.Generator().manual_seed(5)
    q = torch.nn.functional.normalize(torch.randn(9, 6, generator=g), dim=-1)
    k = torch.nn.functional.normalize(q + 0.9 * torch.randn(9, 6, generator=g), dim=-1)
    present = torch.ones(9, dtype=torch.bool)
    m = RetrievalMetrics("image", "text", ["r1", "r3", "map", "mean_rank"])
    m.update(Output(None, {"emb_image": q, "emb_text": k, "present_image": present, "present_text": present}),
             _batch({}, 9))
    out = m.compute()
    ranks = retrieval_ranks(q, k).double()
    assert out["image_to_text_map"] == pytest.approx(float((1 / ranks).mean()))
    # torchmetrics' retrieval metrics treat a score <= 0 as "not retrieved" (precision 0 there), which does not
    # fit cosine similarities: shift them to positive values (the ranking is unchanged) to compare
    scores = (q @ k.t()).double() + 2.0
    reference = RetrievalMAP()(scores.flatten(), torch.eye(9, dtype=torch.bool).flatten(),
                               indexes=torch.arange(9).repeat_interleave(9))
    assert out["image_to_text_map"] == pytest.approx(float(reference), rel=1e-6)
    assert out["image_to_text_r3"] == pytest.approx(float((ranks <= 3).double().mean()))
    names = ("r1", "r3", "map", "mean_rank")
    assert set(out) == {f"{d}_{n}" for d in ("image_to_text", "text_to_image") for n in names}


# two processes, as the engine evaluates: each rank updates its own accumulator on its shard of an odd-sized
# split, the accumulators are gathered with all_gather_object and merged; every rank must get the numbers of
# one pass over the whole split (torchmetrics must not synchronise a second time inside compute())
def _metrics_worker(rank: int, init_file: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        logits, target = _classification_case(n=23)
        metrics = _run(ClassificationMetrics(4, metrics=ALL_SINGLE), logits[rank::2], target[rank::2])
        parts = [None, None]
        dist.all_gather_object(parts, metrics)
        merged = parts[0]
        merged.merge(parts[1])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(merged.compute()))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_single_process_metrics(tmp_path):
    import json

    import torch.multiprocessing as mp

    try:
        mp.spawn(_metrics_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    except mp.ProcessExitedException:
        if not all((tmp_path / f"rank{r}.json").exists() for r in (0, 1)):
            raise
    logits, target = _classification_case(n=23)
    single = _run(ClassificationMetrics(4, metrics=ALL_SINGLE), logits, target).compute()
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == pytest.approx(single, rel=1e-6)


# ---------------------------------------------------- caption metrics against the reference implementations
def _caption_sets(n: int = 300, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """``n`` (hypothesis, references) pairs like a captioner's: 1-5 references of 2-14 words each, and a
    hypothesis that is a copy, an edit (words replaced, dropped, cut short), a short phrase, or unrelated."""
    import random

    rng = random.Random(seed)
    colours = ["red", "blue", "green", "yellow", "white", "black"]
    shapes = ["circle", "square", "triangle", "star", "cross"]
    places = ["left of", "right of", "above", "below", "next to", "inside"]
    words = colours + shapes + ["a", "the", "big", "small", "two", "and", "on", "is"]

    def sentence() -> list[str]:
        out = ["a", rng.choice(colours), rng.choice(shapes)]
        for _ in range(rng.randrange(0, 3)):
            out += rng.choice(places).split() + [rng.choice(["a", "the"]), rng.choice(colours), rng.choice(shapes)]
        return out

    hyps, refs = [], []
    for _ in range(n):
        rs = [sentence() for _ in range(rng.randrange(1, 6))]
        kind = rng.random()
        hyp = list(rng.choice(rs))
        if kind < 0.15:
            pass  # a copy of a reference
        elif kind < 0.7:  # an edit
            hyp = [rng.choice(words) if rng.random() < 0.25 else w for w in hyp if rng.random() > 0.1]
            hyp = hyp[: rng.randrange(1, len(hyp) + 1)] if hyp and rng.random() < 0.3 else hyp
        elif kind < 0.85:
            hyp = hyp[: rng.randrange(0, 3)]  # 0-2 words
        else:
            hyp = sentence()  # unrelated
        hyps.append(" ".join(hyp))
        refs.append([" ".join(r) for r in rs])
    return hyps, refs


def test_cider_d_equals_pycocoevalcap_on_300_caption_sets():
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps, refs = _caption_sets()
    for part in (slice(0, 300), slice(0, 37), slice(100, 250)):  # CIDEr's idf depends on the corpus
        h, r = hyps[part], refs[part]
        reference, _ = cider_mod.Cider().compute_score({i: rs for i, rs in enumerate(r)},
                                                       {i: [x] for i, x in enumerate(h)})
        assert cider_d(h, r) == pytest.approx(float(reference), rel=1e-9, abs=1e-12)


def test_bleu_equals_sacrebleu_and_torchmetrics_on_300_caption_sets():
    sacrebleu = pytest.importorskip("sacrebleu.metrics")
    from torchmetrics.text import BLEUScore

    hyps, refs = _caption_sets()
    ours = corpus_bleu(hyps, refs)
    most = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(most)]  # None: fewer references
    for n in range(1, 5):
        bleu = sacrebleu.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
        assert ours[f"bleu{n}"] == pytest.approx(bleu.corpus_score(hyps, streams).score / 100, rel=1e-9)
        # torchmetrics takes the first of equally close reference lengths, sacrebleu (and mmkit) the shortest:
        # with the references sorted by length the two rules agree
        by_length = [sorted(r, key=lambda s: len(s.split())) for r in refs]
        assert ours[f"bleu{n}"] == pytest.approx(float(BLEUScore(n_gram=n)(hyps, by_length)), rel=1e-5)
