"""Contract checks for Encoder, Fusion and Head -- run them in your plugin's tests.

    from mmkit.testing import check_encoder, check_fusion, check_head

    def test_my_fusion():
        check_fusion(lambda input_dims, token_inputs: MyFusion(input_dims, token_inputs, dim=32))

Every check raises :class:`ContractError` with a message that says what is wrong.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmkit.interfaces import Batch, Embedding, Encoder, Fused, Fusion, Head, Output, scatter_embedding


class ContractError(AssertionError):
    """A component breaks the mmkit contract."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ContractError(message)


def _finite(t: Tensor, what: str) -> None:
    _require(bool(torch.isfinite(t).all()), f"{what} has NaN or inf values")


# ------------------------------------------------------------------------------------------ encoder
def check_encoder(encoder: Encoder, raw_samples: Sequence[Any], *, atol: float = 1e-4) -> Embedding:
    """Check an encoder on a few loaded raw values (at least 2, ideally of different sizes/lengths).

    Checks: eval preprocessing is deterministic; ``forward`` gives ``pooled [P, dim]`` (and tokens with
    a bool mask when ``has_tokens``), finite; a sample's output does not depend on the other samples
    it is batched with (padding is masked); absent samples scatter to zeros; gradients reach the
    trainable parameters; ``state_dict`` round-trips.
    """
    _require(len(raw_samples) >= 2, "check_encoder needs at least two raw samples")
    _require(isinstance(getattr(encoder, "dim", None), int) and encoder.dim > 0,
             f"{type(encoder).__name__}.dim must be a positive int")
    _require(bool(encoder.modality), f"{type(encoder).__name__}.modality must name a modality")
    encoder.eval()
    items = [encoder.preprocess(r, train=False) for r in raw_samples]
    again = [encoder.preprocess(r, train=False) for r in raw_samples]
    for i, (a, b) in enumerate(zip(items, again)):
        _require(_same(a, b), f"preprocess(train=False) is not deterministic (sample {i})")
    with torch.no_grad():
        emb = encoder(encoder.collate(items))
    _check_embedding_rows(encoder, emb, len(items))
    # batch invariance: each sample alone gives the same result as inside the batch (mask honoured)
    with torch.no_grad():
        for i in range(len(items)):
            alone = encoder(encoder.collate([items[i]]))
            _require(torch.allclose(alone.pooled[0], emb.pooled[i], atol=atol, rtol=1e-3),
                     f"pooled output of sample {i} changes when it is batched with other samples: "
                     "padding or the token mask is not honoured")
    present = torch.tensor([True, False] + [True] * (len(items) - 1))
    full = scatter_embedding(emb, present)
    _require(bool((full.pooled[1] == 0).all()), "scatter of an absent sample is not zero")
    # gradients reach trainable parameters only
    encoder.train()
    out = encoder(encoder.collate([encoder.preprocess(r, train=True) for r in raw_samples]))
    loss = out.pooled.float().pow(2).mean() + (out.tokens.float().pow(2).mean() if out.tokens is not None else 0)
    encoder.zero_grad(set_to_none=True)
    loss.backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in encoder.named_parameters() if not p.requires_grad]
    if trainable:
        _require(any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable),
                 "no trainable parameter received a gradient")
    for name, p in frozen:
        _require(p.grad is None, f"frozen parameter {name} received a gradient")
    encoder.zero_grad(set_to_none=True)
    _check_state_dict(encoder)
    encoder.eval()
    return emb


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        import numpy as np

        if isinstance(a, np.ndarray):
            return bool(np.array_equal(a, b))
    except ImportError:  # pragma: no cover
        pass
    return a == b


def _check_embedding_rows(encoder: Encoder, emb: Embedding, n: int) -> None:
    name = type(encoder).__name__
    _require(isinstance(emb, Embedding), f"{name}.forward must return an Embedding, got {type(emb).__name__}")
    _require(tuple(emb.pooled.shape) == (n, encoder.dim),
             f"{name}: pooled has shape {tuple(emb.pooled.shape)}, expected ({n}, {encoder.dim})")
    _require(emb.pooled.is_floating_point(), f"{name}: pooled must be a float tensor")
    _finite(emb.pooled, f"{name} pooled output")
    if encoder.has_tokens:
        _require(emb.tokens is not None, f"{name}.has_tokens is True but forward returned no tokens")
        _require(emb.tokens.dim() == 3 and emb.tokens.shape[0] == n and emb.tokens.shape[2] == encoder.dim,
                 f"{name}: tokens must be [{n}, T, {encoder.dim}], got {tuple(emb.tokens.shape)}")
        _require(emb.token_mask is not None and emb.token_mask.dtype == torch.bool
                 and tuple(emb.token_mask.shape) == tuple(emb.tokens.shape[:2]),
                 f"{name}: token_mask must be a bool [B, T] tensor")
        _require(bool(emb.token_mask.any(dim=1).all()), f"{name}: a present sample has no real token")
        _finite(emb.tokens, f"{name} tokens")


def _check_state_dict(module: torch.nn.Module) -> None:
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        with torch.no_grad():
            p.add_(1.0)
    clone.load_state_dict(module.state_dict())
    for (name, a), b in zip(module.state_dict().items(), clone.state_dict().values()):
        _require(torch.equal(a, b), f"state_dict round trip changed {name}")


# ------------------------------------------------------------------------------------------- fusion
def random_embeddings(dims: Mapping[str, int], batch: int, tokens: Mapping[str, int] | None = None,
                      present: Mapping[str, Tensor] | None = None, seed: int = 0) -> dict[str, Embedding]:
    """Random embeddings for ``dims`` (modality -> dim), with ``tokens`` (modality -> max T) for
    token-yielding modalities and random token lengths; absent rows are zero as the engine makes them."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in dims.items():
        pres = present[m] if present is not None else torch.ones(batch, dtype=torch.bool)
        pooled = torch.randn(batch, d, generator=g) * pres[:, None]
        t = (tokens or {}).get(m)
        if t:
            lengths = torch.randint(1, t + 1, (batch,), generator=g)
            mask = (torch.arange(t)[None, :] < lengths[:, None]) & pres[:, None]
            toks = torch.randn(batch, t, d, generator=g) * mask[..., None]
            out[m] = Embedding(pooled, pres.clone(), toks, mask)
        else:
            out[m] = Embedding(pooled, pres.clone())
    return out


def presence_patterns(modalities: Sequence[str], batch: int, seed: int = 0) -> dict[str, Tensor]:
    """Random presence masks in which every sample has at least one modality, sample 0 has all of
    them and (with 2+ modalities) sample 1 has only the first one."""
    g = torch.Generator().manual_seed(seed)
    pres = torch.rand(batch, len(modalities), generator=g) > 0.4
    pres[0] = True
    if len(modalities) > 1 and batch > 1:
        pres[1] = False
        pres[1, 0] = True
    empty = ~pres.any(dim=1)
    pres[empty, 0] = True
    return {m: pres[:, i] for i, m in enumerate(modalities)}


def _perturb_hidden(embs: Mapping[str, Embedding], seed: int = 1) -> dict[str, Embedding]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, e in embs.items():
        pooled = torch.where(e.present[:, None], e.pooled, torch.randn(e.pooled.shape, generator=g) * 50)
        tokens = e.tokens
        if tokens is not None:
            tokens = torch.where(e.token_mask[..., None], tokens, torch.randn(tokens.shape, generator=g) * 50)
        out[m] = Embedding(pooled, e.present, tokens, e.token_mask)
    return out


def check_fusion(factory: Callable[[dict[str, int], dict[str, bool]], Fusion], *,
                 dims: Mapping[str, int] | None = None, tokens: Mapping[str, int] | None = None,
                 batch: int = 6, atol: float = 1e-5, seed: int = 0) -> Fused:
    """Check a fusion built by ``factory(input_dims, token_inputs)`` for 1, 2 and 3 modalities.

    Checks: ``pooled [B, dim]`` finite; tokens/mask shapes; finite outputs for samples with a single
    modality; absent rows and padded tokens have no effect on the output; gradients reach the inputs
    of present samples and the fusion's parameters; ``aux_losses`` are finite scalars.
    """
    dims = dict(dims or {"image": 12, "text": 8, "tabular": 5})
    tokens = dict(tokens if tokens is not None else {"image": 4, "text": 6})
    names = list(dims)
    last: Fused | None = None
    for k in range(1, len(names) + 1):
        sub = {m: dims[m] for m in names[:k]}
        token_inputs = {m: m in tokens for m in sub}
        torch.manual_seed(seed)
        fusion = factory(dict(sub), token_inputs)
        fusion.eval()
        pres = presence_patterns(list(sub), batch, seed)
        embs = random_embeddings(sub, batch, {m: t for m, t in tokens.items() if m in sub}, pres, seed)
        name = f"{type(fusion).__name__} with {k} modalit{'y' if k == 1 else 'ies'}"
        with torch.no_grad():
            out = fusion(embs)
            _check_fused(fusion, out, batch, name)
            again = fusion(_perturb_hidden(embs, seed + 1))
        _require(torch.allclose(out.pooled, again.pooled, atol=atol, rtol=1e-4),
                 f"{name}: changing absent rows or padded tokens changed the pooled output "
                 "(masks are not honoured)")
        # gradients
        fusion.train()
        torch.manual_seed(seed)
        leaves = {m: Embedding(e.pooled.clone().requires_grad_(True), e.present,
                               None if e.tokens is None else e.tokens.clone().requires_grad_(True), e.token_mask)
                  for m, e in embs.items()}
        out = fusion(leaves)
        loss = out.pooled.float().pow(2).mean() + sum(out.aux_losses.values(), torch.tensor(0.0))
        loss.backward()
        grads = [e.pooled.grad for e in leaves.values()] + [e.tokens.grad for e in leaves.values()
                                                             if e.tokens is not None]
        _require(any(g is not None and bool(g.abs().sum() > 0) for g in grads),
                 f"{name}: no gradient reaches the input embeddings")
        params = [p for p in fusion.parameters() if p.requires_grad]
        if params:
            _require(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params),
                     f"{name}: no parameter of the fusion receives a gradient")
        for m, e in leaves.items():
            if e.pooled.grad is not None:
                _finite(e.pooled.grad, f"{name}: gradient wrt {m} pooled")
        _check_state_dict(fusion)
        last = out
    assert last is not None
    return last


def _check_fused(fusion: Fusion, out: Fused, batch: int, name: str) -> None:
    _require(isinstance(out, Fused), f"{name}: forward must return Fused, got {type(out).__name__}")
    _require(tuple(out.pooled.shape) == (batch, fusion.dim),
             f"{name}: pooled has shape {tuple(out.pooled.shape)}, expected ({batch}, {fusion.dim})")
    _finite(out.pooled, f"{name}: pooled output")
    if fusion.has_tokens:
        _require(out.tokens is not None and out.mask is not None, f"{name}: has_tokens but no tokens/mask")
    if out.tokens is not None:
        _require(out.tokens.shape[0] == batch and out.tokens.shape[2] == fusion.dim,
                 f"{name}: tokens must be [B, T, {fusion.dim}], got {tuple(out.tokens.shape)}")
        _require(out.mask is not None and out.mask.dtype == torch.bool and out.mask.shape == out.tokens.shape[:2],
                 f"{name}: mask must be a bool [B, T] tensor matching tokens")
        _finite(out.tokens[out.mask], f"{name}: real tokens")
    for key, value in out.aux_losses.items():
        _require(isinstance(value, Tensor) and value.dim() == 0, f"{name}: aux_losses[{key!r}] must be a scalar")
        _finite(value, f"{name}: aux_losses[{key!r}]")
    if out.weights is not None:
        _require(out.weights.shape[0] == batch, f"{name}: weights must be batch-first")
        _finite(out.weights, f"{name}: weights")


# --------------------------------------------------------------------------------------------- head
def check_head(head: Head, fused: Fused, batch: Batch) -> Output:
    """Check a head on a fused batch whose ``targets`` were made by the head's own
    ``preprocess_target``/``collate_targets``.

    Checks: training loss is a finite scalar with a gradient reaching the head's parameters and the
    fused input; eval gives finite predictions; metrics compute to floats; ``decode`` gives one dict
    per row; predict mode (no targets) works and returns no loss.
    """
    name = type(head).__name__
    head.train()
    pooled = fused.pooled.detach().clone().requires_grad_(True)
    tokens = None if fused.tokens is None else fused.tokens.detach().clone().requires_grad_(True)
    fused_in = Fused(pooled, tokens, fused.mask, inputs=fused.inputs)
    out = head(fused_in, batch)
    _require(isinstance(out, Output), f"{name}.forward must return Output")
    _require(out.loss is not None and out.loss.dim() == 0, f"{name}: training loss must be a scalar tensor")
    _finite(out.loss, f"{name}: loss")
    _require(out.loss.requires_grad, f"{name}: the loss has no gradient (is it detached?)")
    head.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for p in head.parameters() if p.requires_grad]
    if params:
        _require(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params),
                 f"{name}: no head parameter receives a gradient from the loss")
    used_inputs = [t for t in (pooled, tokens) if t is not None] + [
        e.pooled for e in fused.inputs.values() if e.pooled.requires_grad]
    _require(any(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in used_inputs if t.is_leaf)
             or any(e.pooled.requires_grad for e in fused.inputs.values()),
             f"{name}: the loss does not depend on the fused input")
    head.eval()
    with torch.no_grad():
        out = head(fused, batch)
        metrics = head.new_metrics()
        metrics.update(out, batch)
        values = metrics.compute()
        _require(isinstance(values, dict) and all(isinstance(v, float) for v in values.values()),
                 f"{name}: metrics.compute() must return dict[str, float], got {values!r}")
        for key, value in out.preds.items():
            if isinstance(value, Tensor) and value.is_floating_point():
                _finite(value, f"{name}: preds[{key!r}]")
        rows = head.decode(out.preds)
        _require(len(rows) == batch.size, f"{name}.decode returned {len(rows)} rows for a batch of {batch.size}")
        unlabeled = Batch(batch.inputs, batch.present, None, batch.index)
        pred_out = head(fused, unlabeled)
        _require(pred_out.loss is None, f"{name}: without targets the loss must be None")
    _require(head.monitor in values or head.monitor == "loss",
             f"{name}.monitor={head.monitor!r} is not among the metrics it reports: {sorted(values)}")
    return out
