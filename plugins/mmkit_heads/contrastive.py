"""Contrastive (CLIP-style) head: symmetric InfoNCE between two modalities, retrieval metrics."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Batch, Fused, Head, Metrics, Output, ParameterError

from mmkit_heads.common import refuse_mixing
from mmkit_heads.metricset import TorchMetricSet, choose_metrics, metric_direction, pick_monitor, torchmetric

#: retrieval metric names (reported per direction, e.g. image_to_text_r1) -> better direction
RETRIEVAL_METRICS = {"mean_rank": "min", "map": "max"}
RETRIEVAL_PATTERNS = {r"r([1-9]\d*)": "max"}
RETRIEVAL_DEFAULTS = ["r1", "r5", "r10", "mean_rank", "map"]


def gather_with_grad(t: Tensor) -> tuple[Tensor, int]:
    """All-gather ``t`` (rows may differ per rank) and return ``(global rows, offset of ours)``.

    The gather is differentiable (``torch.distributed.nn``): in backward each rank's rows receive the
    gradients that *every* rank's loss sends them, so with DDP's gradient averaging the update equals
    the single-process one on the global batch (negatives and gradients span all ranks). Without an
    initialised ``torch.distributed`` group (or with one rank) it is the identity.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t, 0
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s) for s in sizes_t]
    padded = F.pad(t, (0, 0) * (t.dim() - 1) + (0, max(sizes) - t.shape[0]))
    parts = [p[:s] for p, s in zip(all_gather(padded.contiguous()), sizes)]
    return torch.cat(parts), sum(sizes[:rank])


def info_nce(q: Tensor, k: Tensor, scale: Tensor, gather: bool = True) -> Tensor:
    """Symmetric InfoNCE of L2-normalised pairs ``q[i] <-> k[i]`` (mean of both directions).

    Under torch.distributed (when ``gather``) the negatives are the global batch.
    """
    gq, offset = gather_with_grad(q) if gather else (q, 0)
    gk, _ = gather_with_grad(k) if gather else (k, 0)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    n = max(q.shape[0], 1)
    loss_qk = F.cross_entropy(scale * q @ gk.t(), labels, reduction="sum")
    loss_kq = F.cross_entropy(scale * k @ gq.t(), labels, reduction="sum")
    return (loss_qk + loss_kq) / (2 * n)


class ContrastiveHead(Head):
    """Aligns two modalities' pooled embeddings (from ``Fused.inputs``) with a CLIP loss.

    Each side has a linear projection to ``proj_dim`` followed by L2 normalisation; the similarity
    logits are scaled by a learnable ``exp(logit_scale)`` (initialised to ``1/temperature``, clamped
    at ``max_logit_scale``). Only samples where both modalities are present count. The head needs no
    target column. Metrics over the whole evaluated split, in both directions (``image_to_text_r1``,
    ``text_to_image_map``): recall@K (``r1``, ``r5``, ``r10``, any ``r<K>``), ``mean_rank`` and ``map``
    (mean average precision; with one true match per query it is the mean of 1 / rank). A tie with
    the true match counts against it (pessimistic).

    Args:
        query: modality whose embeddings are the queries (e.g. "image").
        key: modality whose embeddings are retrieved (e.g. "text").
        proj_dim: width of the shared embedding space.
        temperature: initial softmax temperature (logit scale = 1 / temperature).
        learn_temperature: learn the logit scale (False keeps it fixed).
        max_logit_scale: upper clamp of exp(logit_scale).
        gather_distributed: under torch.distributed, use the whole global batch as negatives.
        metrics: metrics to report per direction (None = ["r1", "r5", "r10", "mean_rank", "map"]).
    """

    monitor_mode = "max"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, query: str = "image",
                 key: str = "text", proj_dim: int = 128, temperature: float = 0.07,
                 learn_temperature: bool = True, max_logit_scale: float = 100.0,
                 gather_distributed: bool = True, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.metrics = choose_metrics("contrastive", metrics, RETRIEVAL_METRICS, RETRIEVAL_DEFAULTS,
                                      RETRIEVAL_PATTERNS)
        dims = dict(modality_dims or {})
        for side, name in (("query", query), ("key", key)):
            if name not in dims:
                raise ParameterError(f"contrastive head: {side} = {name!r} is not an encoded modality "
                                     f"(modalities: {', '.join(sorted(dims)) or 'none'})")
        if query == key:
            raise ParameterError(f"contrastive head: query and key must differ, both are {query!r}")
        self.query, self.key = query, key
        self.fields = ()
        directions = {n: metric_direction(n, RETRIEVAL_METRICS, RETRIEVAL_PATTERNS) for n in self.metrics}
        monitor, self.monitor_mode = pick_monitor("r1", self.metrics, directions)
        self.monitor = f"{query}_to_{key}_{monitor}"
        self.proj_q = nn.Linear(dims[query], proj_dim)
        self.proj_k = nn.Linear(dims[key], proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)),
                                        requires_grad=learn_temperature)
        self.max_logit_scale = max_logit_scale
        self.gather_distributed = gather_distributed

    def forward(self, fused: Fused, batch: Batch) -> Output:
        refuse_mixing(batch, "contrastive")
        missing = [m for m in (self.query, self.key) if m not in fused.inputs]
        if missing:
            raise ParameterError(f"contrastive head: Fused.inputs lacks {missing} (has {sorted(fused.inputs)})")
        eq, ek = fused.inputs[self.query], fused.inputs[self.key]
        zq = F.normalize(self.proj_q(eq.pooled).float(), dim=-1) * eq.present[:, None]
        zk = F.normalize(self.proj_k(ek.pooled).float(), dim=-1) * ek.present[:, None]
        scale = self.logit_scale.exp().clamp(max=self.max_logit_scale)
        loss = None
        if batch.targets is not None:
            both = eq.present & ek.present
            # gather only in training: evaluation shards may differ in batch count across ranks
            loss = info_nce(zq[both], zk[both], scale, self.gather_distributed and self.training)
        preds = {f"emb_{self.query}": zq, f"emb_{self.key}": zk,
                 f"present_{self.query}": eq.present, f"present_{self.key}": ek.present}
        return Output(loss, preds, {"logit_scale": scale.detach()})

    def new_metrics(self) -> RetrievalMetrics:
        return RetrievalMetrics(self.query, self.key, self.metrics)

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        sides = [(m, preds[f"emb_{m}"].detach().float().cpu(), preds[f"present_{m}"].cpu())
                 for m in (self.query, self.key)]
        for i in range(sides[0][1].shape[0]):
            rows.append({f"embedding_{m}": emb[i].tolist() if bool(pres[i]) else None for m, emb, pres in sides})
        return rows

    # mmkit.Retrieval: what makes a trained model searchable (Predictor.search)
    @property
    def retrieval_modalities(self) -> tuple[str, str]:
        return (self.query, self.key)

    def retrieval_embeddings(self, preds: Mapping[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
        return {m: (preds[f"emb_{m}"], preds[f"present_{m}"]) for m in (self.query, self.key)}


# -------------------------------------------------------------------------------- metrics
def retrieval_ranks(q: Tensor, k: Tensor, tie_tol: float = 1e-6, chunk: int = 1024) -> Tensor:
    """1-based rank of ``k[i]`` among all rows of ``k`` for query ``q[i]`` (cosine/dot scores).

    A score within ``tie_tol`` of the true pair's counts as a tie, and ties rank the true match last.
    """
    ranks = []
    q, k = q.double(), k.double()
    for start in range(0, q.shape[0], chunk):
        s = q[start:start + chunk] @ k.t()
        rows = torch.arange(s.shape[0])
        true = s[rows, rows + start]
        ranks.append((s >= true[:, None] - tie_tol).sum(dim=1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def retrieval_scores(ranks: Tensor, prefix: str, names: Sequence[str]) -> dict[str, float]:
    """``{prefix}_{name}`` for each metric name (``r<K>``, ``mean_rank``, ``map``) from 1-based ranks."""
    if ranks.numel() == 0:
        return {}
    ranks = ranks.double()
    out = {}
    for name in names:
        if name == "mean_rank":
            out[f"{prefix}_{name}"] = float(ranks.mean())
        elif name == "map":  # one relevant key per query: average precision = precision at its rank = 1 / rank
            out[f"{prefix}_{name}"] = float((1.0 / ranks).mean())
        else:
            out[f"{prefix}_{name}"] = float((ranks <= int(name[1:])).double().mean())
    return out


def recall_scores(q: Tensor, k: Tensor, prefix: str, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """``{prefix}_r1`` ... recall@K (fractions) and ``{prefix}_mean_rank`` for queries ``q`` over keys ``k``."""
    return retrieval_scores(retrieval_ranks(q, k), prefix, [*(f"r{n}" for n in ks), "mean_rank"])


class RetrievalMetrics(TorchMetricSet):
    """Collects the paired embeddings of a whole evaluation (torchmetrics ``CatMetric`` states, merged
    with ``merge_state``); ``compute`` ranks every query against every key, in both directions."""

    def __init__(self, query: str, key: str, metrics: list[str] | None = None) -> None:
        self.query, self.key = query, key
        super().__init__([], helpers=["q", "k"])
        self.names = list(metrics or RETRIEVAL_DEFAULTS)

    def build(self, name: str) -> Any:
        return torchmetric("CatMetric", "aggregation", nan_strategy="disable")

    def prepare(self, output: Output, batch: Batch) -> dict[str, Any] | None:
        p = output.preds
        both = (p[f"present_{self.query}"] & p[f"present_{self.key}"]).cpu()
        return {"n": int(both.sum()), "q": p[f"emb_{self.query}"].detach().float().cpu()[both],
                "k": p[f"emb_{self.key}"].detach().float().cpu()[both]}

    def feed(self, name: str, meter: Any, prepared: dict[str, Any]) -> None:
        meter.update(prepared[name])

    def compute(self) -> dict[str, float]:
        out = Metrics.compute(self)
        if not self.samples:
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            q, k = self.meters["q"].compute(), self.meters["k"].compute()
        out.update(retrieval_scores(retrieval_ranks(q, k), f"{self.query}_to_{self.key}", self.names))
        out.update(retrieval_scores(retrieval_ranks(k, q), f"{self.key}_to_{self.query}", self.names))
        return out
