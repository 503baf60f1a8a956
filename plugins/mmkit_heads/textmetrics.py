"""Caption metrics in pure Python (no torch): corpus BLEU-1..4, CIDEr-D and exact match.

Texts are compared as lists of lower-cased words with punctuation removed (:func:`normalize`), the
same for hypotheses and references.

* **BLEU** follows the standard ``corpus_bleu`` (Papineni et al. 2002; NLTK/``multi-bleu``): n-gram
  counts clipped by the maximum count in any reference, numerators and denominators summed over the
  corpus, uniform weights over 1..N, brevity penalty ``exp(1 - r/c)`` when ``c <= r`` where ``c`` is the
  total hypothesis length and ``r`` the sum of the closest reference lengths (ties -> the shorter).
  No smoothing: a corpus with no matching n-gram of some order scores 0. A hypothesis shorter than
  ``n`` adds nothing to the order-``n`` denominator (as ``multi-bleu.perl``, ``sacrebleu`` and
  ``pycocoevalcap``; NLTK's ``corpus_bleu`` adds 1 there, which lowers scores of very short texts).
* **CIDEr** is CIDEr-D as in ``pycocoevalcap`` (Vedantam et al. 2015): 1..4-gram tf-idf vectors where
  document frequencies come from the evaluated references (one document = one sample's reference
  set, ``idf = log(N) - log(max(1, df))``), hypothesis weights clipped by the reference's
  (``min(h, r) * r``), cosine per order, Gaussian length penalty ``exp(-(len_h - len_r)^2 / (2*6^2))``,
  averaged over orders and references, times 10. ``pycocoevalcap`` measures lengths in bigrams
  (words - 1), which gives the same length differences except for an empty sentence, whose score
  is 0 either way. The only difference is the tokenisation: :func:`normalize` rather than the PTB
  tokenizer (which needs Java).

Both are tested equal to the reference implementations on the same tokens: CIDEr-D to
``pycocoevalcap``'s scorer, BLEU-1..4 to ``sacrebleu`` (``tokenize="none"``, no smoothing) and to
torchmetrics' ``BLEUScore`` (which takes the first of equally close reference lengths, not the
shortest), on 300 generated caption sets (``tests/test_metrics.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

Tokens = list[str]


def normalize(text: str | Sequence[str]) -> Tokens:
    """Lower-cased words of ``text`` without punctuation (a list of words is lower-cased only)."""
    if isinstance(text, str):
        return _WORD.findall(text.lower())
    return [w.lower() for w in text]


def ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of the ``n``-grams of ``words``."""
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _as_tokens(hyps: Sequence[str | Sequence[str]],
               refs: Sequence[Sequence[str | Sequence[str]]]) -> tuple[list[Tokens], list[list[Tokens]]]:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    return [normalize(h) for h in hyps], [[normalize(r) for r in rs] for rs in refs]


def corpus_bleu(hyps: Sequence[str | Sequence[str]], refs: Sequence[Sequence[str | Sequence[str]]],
                max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n``: ``{"bleu1": ..., "bleu4": ...}`` in [0, 1].

    Args:
        hyps: one hypothesis per sample (a string or a list of words).
        refs: one list of references per sample.
        max_n: highest n-gram order.
    """
    hyp_toks, ref_toks = _as_tokens(hyps, refs)
    matched = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, rs in zip(hyp_toks, ref_toks):
        hyp_len += len(hyp)
        if rs:
            ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(hyp, n)
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                max_ref |= ngrams(r, n)
            matched[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    out = {}
    if hyp_len == 0:
        return {f"bleu{n}": 0.0 for n in range(1, max_n + 1)}
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    log_sum = 0.0
    for n in range(1, max_n + 1):
        if matched[n - 1] == 0 or total[n - 1] == 0:
            log_sum = -math.inf
        else:
            log_sum += math.log(matched[n - 1] / total[n - 1])
        out[f"bleu{n}"] = 0.0 if log_sum == -math.inf else bp * math.exp(log_sum / n)
    return out


def cider_d(hyps: Sequence[str | Sequence[str]], refs: Sequence[Sequence[str | Sequence[str]]],
            max_n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (mean of per-sample scores; see the module docstring for the exact variant).

    Args:
        hyps: one hypothesis per sample.
        refs: one list of references per sample; document frequencies are computed over them.
        max_n: highest n-gram order.
        sigma: width of the Gaussian length penalty.
    """
    hyp_toks, ref_toks = _as_tokens(hyps, refs)
    if not hyp_toks:
        return 0.0
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for rs in ref_toks:
        doc_freq.update({g for r in rs for n in range(1, max_n + 1) for g in ngrams(r, n)})
    log_docs = math.log(float(len(ref_toks)))

    def vec(words: Tokens) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
        vecs, norms = [], []
        for n in range(1, max_n + 1):
            v = {g: tf * (log_docs - math.log(max(1.0, doc_freq[g]))) for g, tf in ngrams(words, n).items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vecs, norms

    total = 0.0
    for hyp, rs in zip(hyp_toks, ref_toks):
        vh, nh = vec(hyp)
        score = 0.0
        for r in rs:
            vr, nr = vec(r)
            penalty = math.exp(-((len(hyp) - len(r)) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                dot = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    dot /= nh[n] * nr[n]
                score += dot * penalty / max_n
        total += 10.0 * score / max(len(rs), 1)
    return total / len(hyp_toks)


def exact_match(hyps: Sequence[str | Sequence[str]], refs: Sequence[Sequence[str | Sequence[str]]]) -> float:
    """Fraction of hypotheses equal (after :func:`normalize`) to one of their references."""
    hyp_toks, ref_toks = _as_tokens(hyps, refs)
    if not hyp_toks:
        return 0.0
    return sum(h in rs for h, rs in zip(hyp_toks, ref_toks)) / len(hyp_toks)


def caption_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and exact match of a corpus."""
    return {**corpus_bleu(hyps, refs), "cider": cider_d(hyps, refs), "exact_match": exact_match(hyps, refs)}
