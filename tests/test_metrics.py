"""Metrics of the built-in heads against hand-worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from mmkit.interfaces import Batch, Output

from mmkit_heads.captioning import CaptionMetrics
from mmkit_heads.classification import ClassificationMetrics
from mmkit_heads.contrastive import RetrievalMetrics, recall_scores, retrieval_ranks
from mmkit_heads.regression import RegressionMetrics
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
