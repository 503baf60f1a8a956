"""Contract checks for plugin components -- run them in your plugin's tests.

    from mmkit.testing import check_encoder, check_fusion, check_head, check_modality, check_plugin_module

    def test_my_fusion():
        check_fusion(lambda input_dims, token_inputs: MyFusion(input_dims, token_inputs, dim=32))

    def test_my_plugin_is_light():
        check_plugin_module("my_pkg.plugin")

Every check raises :class:`ContractError` (an ``AssertionError``) with a message that says what is
wrong and, where it can, how to fix it. Besides each interface's own rules, the encoder, fusion and
head checks all verify: float outputs and bool masks, a ``state_dict`` round trip, that a *fresh*
instance restored from the JSON fit state and the weights gives the same outputs (as loading a trained
model does; ``check_encoder`` fits the encoder on the samples first), a device move (to CUDA when
available, else to the ``meta`` device plus a scan for tensors that are not registered buffers), and
freezing (``requires_grad_(False)`` leaves every parameter and buffer unchanged through an optimizer
step).

A pytest fixture ``mmkit_registry`` (an isolated registry for your plugin) lives in
:mod:`mmkit.testing_plugin`.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence, cast, overload

import torch
from torch import Tensor, nn

from mmkit._internal.interfaces import (Batch, Component, Embedding, Encoder, Fused, Fusion, Head, Output, Retrieval,
                              scatter_embedding)

#: Libraries a plugin module (and its package ``__init__``) must not import: listing stays fast.
HEAVY_MODULES = ("torch", "timm", "transformers", "sentence_transformers")


class ContractError(AssertionError):
    """A component breaks the mmkit contract."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ContractError(message)


def _finite(t: Tensor, what: str) -> None:
    _require(bool(torch.isfinite(t).all()), f"{what} has NaN or inf values")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------ shared checks
def _move(value: Any, device: torch.device | str) -> Any:
    """Move tensors (nested in dicts, lists, tuples, objects with ``.to``) to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [_move(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)
    if hasattr(value, "to") and callable(value.to) and not isinstance(value, nn.Module):
        try:
            return value.to(device)
        except TypeError:
            return value
    return value


def _tensors(value: Any) -> list[Tensor]:
    """Every tensor inside ``value`` (Output/Fused/Embedding dataclasses, dicts, lists)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for name in value.__dataclass_fields__ for t in _tensors(getattr(value, name))]
    return []


def _check_state_dict(module: nn.Module, name: str | None = None) -> None:
    """Loading the state dict into a perturbed copy restores every tensor exactly."""
    name = name or type(module).__name__
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
        for b in clone.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    try:
        clone.load_state_dict(module.state_dict())
    except Exception as exc:  # noqa: BLE001 - report as a contract failure
        raise ContractError(f"{name}: load_state_dict(state_dict()) fails: {type(exc).__name__}: {exc}") from exc
    original = module.state_dict()
    restored = clone.state_dict()
    _require(original.keys() == restored.keys(), f"{name}: state_dict keys change after a round trip")
    for key, value in original.items():
        _require(torch.equal(value, restored[key]), f"{name}: state_dict round trip changed {key}")
    for (pname, a), (_, b) in zip(module.named_parameters(), clone.named_parameters()):
        _require(torch.equal(a, b), f"{name}: parameter {pname} is not restored by load_state_dict "
                                    "(is it missing from state_dict?)")


def _json_fit_state(component: Component, name: str) -> dict[str, Any]:
    """``get_fit_state()`` survives ``json.dumps``/``json.loads`` (it is saved with the model as JSON)."""
    state = component.get_fit_state()
    _require(isinstance(state, dict), f"{name}.get_fit_state() must return a dict, got {type(state).__name__}")
    try:
        text = json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{name}.get_fit_state() is not JSON-serialisable: {exc}") from exc
    return json.loads(text)


def fresh_instance(component: Component, factory: Callable[[], Component] | None = None) -> Component:
    """A new, unfitted instance of ``component``'s class, built with the arguments ``component`` was
    built with (:attr:`mmkit.Component.init_args`), or by ``factory()``; the caller's random state is
    left as it was."""
    name = type(component).__name__
    recorded: Any = getattr(component, "init_args", None)
    if factory is None and recorded is None:
        raise ContractError(f"{name}: cannot build a fresh instance (it is not an mmkit Component, or was built "
                            "without its constructor); pass factory=lambda: {name}(...) to the check")
    with torch.random.fork_rng(devices=[]):
        try:
            if factory is not None:
                return factory()
            args, kwargs = recorded
            return type(component)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{name}: building a fresh instance failed: {type(exc).__name__}: {exc}") from exc


def _restored_fresh(component: Component, name: str, factory: Callable[[], Component] | None = None) -> Component:
    """A *fresh* instance restored the way a trained model is loaded: built with the same arguments,
    then ``set_fit_state(json(get_fit_state()))``, then ``load_state_dict`` (strict)."""
    state = _json_fit_state(component, name)
    fresh = fresh_instance(component, factory)
    try:
        fresh.set_fit_state(state)
        fresh.load_state_dict(component.state_dict())
    except Exception as exc:  # noqa: BLE001
        error = " ".join(str(exc).split()).rstrip(".")
        raise ContractError(f"{name}: a fresh instance cannot be restored the way a trained model is loaded "
                            f"(set_fit_state(json(get_fit_state())), then load_state_dict): {type(exc).__name__}: "
                            f"{error}. set_fit_state must rebuild what fit() created (e.g. layers sized by a "
                            "vocabulary) before the weights are loaded") from exc
    return fresh


RESTORE_FIX = ("get_fit_state() must return everything fit() learned that is not a registered parameter or "
               "buffer, as JSON (dict keys become strings), and set_fit_state() must restore all of it")


def _close(a: Tensor, b: Tensor, atol: float, rtol: float = 1e-3) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.detach().float().cpu(), b.detach().float().cpu(),
                                                      atol=atol, rtol=rtol))


def _stray_tensors(module: nn.Module) -> list[str]:
    """Attributes holding a tensor that is neither a parameter nor a buffer (it would not follow
    ``.to(device)`` nor be saved). Scans the modules of the component's own package only."""
    out = []
    for mname, sub in module.named_modules():
        if type(sub).__module__.split(".")[0] in ("torch", "timm", "transformers", "sentence_transformers"):
            continue
        for attr, value in vars(sub).items():
            if attr.startswith("__") or attr in ("_parameters", "_buffers", "_modules"):
                continue
            if isinstance(value, Tensor) and not isinstance(value, nn.Parameter):
                out.append(f"{mname + '.' if mname else ''}{attr}")
    return out


def check_device(module: nn.Module, run: Callable[[nn.Module, torch.device], Any], reference: Any | None = None,
                 *, device: str | torch.device | None = None, name: str | None = None,
                 atol: float = 1e-2) -> None:
    """Check that ``module`` can move to another device.

    Always: every parameter and buffer follows ``.to("meta")``, and no submodule keeps a tensor in a
    plain attribute (use ``register_buffer``). On CUDA (or ``device``): ``run(moved_module, device)``
    works with inputs on that device, its tensors are on that device, and they match ``reference``
    (the CPU outputs) within ``atol`` relative to their scale.
    """
    name = name or type(module).__name__
    stray = _stray_tensors(module)
    _require(not stray, f"{name}: attribute(s) {', '.join(stray)} hold a tensor that is not a parameter or a "
                        "registered buffer: it will stay on the CPU when the model moves to a GPU and is not saved; "
                        "use self.register_buffer(name, tensor) (persistent=False if it should not be saved), "
                        "or, for a tensor only preprocess() uses, keep it out of the module (a cached function)")
    meta = copy.deepcopy(module).to("meta")
    for pname, tensor in list(meta.named_parameters()) + list(meta.named_buffers()):
        _require(tensor.device.type == "meta", f"{name}: {pname} did not move with .to(device)")
    if device is None:
        if not torch.cuda.is_available():
            return
        device = "cuda"
    device = torch.device(device)
    moved = copy.deepcopy(module).to(device)
    try:
        out = run(moved, device)
    except RuntimeError as exc:
        raise ContractError(f"{name}: forward fails after .to({str(device)!r}): {exc}. Create new tensors on "
                            "the inputs' device (device=x.device) and register constant tensors as buffers") from exc
    tensors = _tensors(out)
    for i, t in enumerate(tensors):
        _require(t.device.type == device.type, f"{name}: output tensor {i} is on {t.device}, expected {device}")
    if reference is not None and device.type != "meta":
        for i, (a, b) in enumerate(zip(_tensors(reference), tensors)):
            if a.is_floating_point():
                scale = float(a.detach().abs().max()) if a.numel() else 1.0
                _require(_close(a, b, atol * max(scale, 1.0), 1e-2),
                         f"{name}: output tensor {i} on {device} differs from the CPU result")
            else:
                _require(torch.equal(a.cpu(), b.cpu()),
                         f"{name}: output tensor {i} on {device} differs from the CPU result")


def check_frozen(module: nn.Module, run: Callable[[nn.Module], Any], *, name: str | None = None) -> None:
    """Freezing works as the engine does it: ``requires_grad_(False)``, then ``train()`` and ``eval()``
    (the model's ``train()`` is called every epoch). A forward pass ``run(frozen)``, a backward of its
    outputs when they carry a gradient, and an optimizer step must leave every parameter and buffer
    unchanged, with no gradient on any parameter."""
    name = name or type(module).__name__
    frozen = copy.deepcopy(module)
    frozen.requires_grad_(False)
    frozen.train()
    frozen.eval()
    before = {k: v.detach().clone() for k, v in frozen.state_dict().items()}
    params = list(frozen.parameters())
    optimizer = torch.optim.SGD(params, lr=1.0, momentum=0.9) if params else None
    out = run(frozen)
    live = [t for t in _tensors(out) if t.is_floating_point() and t.requires_grad]
    if live:
        torch.stack([t.float().pow(2).mean() for t in live]).sum().backward()
    for pname, p in frozen.named_parameters():
        _require(not p.requires_grad, f"{name}: parameter {pname} has requires_grad=True again after "
                                      "requires_grad_(False), train() and eval(): do not turn gradients back on "
                                      "in train(), eval() or forward() -- freezing is the engine's job")
        _require(p.grad is None, f"{name}: frozen parameter {pname} received a gradient")
    if optimizer is not None:
        optimizer.step()
    after = frozen.state_dict()
    for key, value in before.items():
        _require(key in after and torch.equal(value, after[key]),
                 f"{name}: {key} changed although the module is frozen and in eval mode "
                 "(an in-place update in forward, or a buffer updated in eval mode)")


# ------------------------------------------------------------------------------------------ encoder
def check_encoder(encoder: Encoder, raw_samples: Sequence[Any], *, atol: float = 1e-4,
                  device: str | torch.device | None = None, fit: bool = True,
                  factory: Callable[[], Encoder] | None = None) -> Embedding:
    """Check an encoder on a few loaded raw values (at least 2, ideally of different sizes/lengths).

    The checks run on a copy (``encoder`` itself is left as it is), which is first fitted on
    ``raw_samples`` (``fit=False`` keeps the state it has). Checks:
    eval preprocessing is deterministic; ``forward`` gives float ``pooled [P, dim]`` (and float tokens
    with a bool mask when ``has_tokens``), finite, with ``present`` all True; a sample's output does
    not depend on the other samples it is batched with (padding is masked); absent samples scatter to
    zeros; gradients flow to the outputs and reach the trainable parameters; ``state_dict`` round-trips;
    a *fresh* instance (built with the same arguments, or by ``factory()``) restored from the JSON fit
    state and the ``state_dict`` gives the fitted encoder's outputs; the encoder moves to another device
    (``device``, else CUDA when available, else ``meta``); a frozen copy stays unchanged through an
    optimizer step.
    """
    name = type(encoder).__name__
    _require(len(raw_samples) >= 2, "check_encoder needs at least two raw samples")
    _require(isinstance(getattr(encoder, "dim", None), int) and encoder.dim > 0, f"{name}.dim must be a positive int")
    _require(isinstance(encoder.modality, str) and bool(encoder.modality), f"{name}.modality must name a modality")
    encoder = copy.deepcopy(encoder)
    if fit:
        encoder.fit(list(raw_samples))
    encoder.eval()
    items = [encoder.preprocess(r, train=False) for r in raw_samples]
    again = [encoder.preprocess(r, train=False) for r in raw_samples]
    for i, (a, b) in enumerate(zip(items, again)):
        _require(_same(a, b), f"{name}: preprocess(train=False) is not deterministic (sample {i}): draw "
                              "augmentation randomness only when train=True")
    collated = encoder.collate(items)
    with torch.no_grad():
        emb = encoder(collated)
    _check_embedding_rows(encoder, emb, len(items))
    _check_batch_invariance(encoder, items, emb, atol)
    present = torch.tensor([True, False] + [True] * (len(items) - 1))
    full = scatter_embedding(emb, present)
    _require(bool((full.pooled[1] == 0).all()), f"{name}: scatter of an absent sample is not zero")
    _check_encoder_gradients(encoder, raw_samples)
    _check_state_dict(encoder, name)
    with torch.no_grad():  # the train-mode pass may have updated buffers (BatchNorm statistics)
        ref = encoder(collated)
    fresh = cast(Encoder, _restored_fresh(encoder, name, factory))
    fresh.eval()
    with torch.no_grad():
        restored = fresh(fresh.collate([fresh.preprocess(r, train=False) for r in raw_samples]))
    _require(_close(restored.pooled, ref.pooled, atol),
             f"{name}: a fresh instance restored from the JSON fit state and the state_dict gives different "
             f"outputs than the fitted encoder: {RESTORE_FIX}")

    def run_on(module: nn.Module, dev: torch.device) -> Embedding:
        with torch.no_grad():
            return module(_move(collated, dev))

    check_device(encoder, run_on, ref, device=device, name=name)

    def run_frozen(module: nn.Module) -> Embedding:
        enc = cast(Encoder, module)
        return enc(enc.collate([enc.preprocess(r, train=False) for r in raw_samples]))

    check_frozen(encoder, run_frozen, name=name)
    return emb


def _check_batch_invariance(encoder: Encoder, items: list[Any], emb: Embedding, atol: float) -> None:
    """Each sample alone gives the same result as inside the batch: padding is masked everywhere."""
    name = type(encoder).__name__
    with torch.no_grad():
        for i in range(len(items)):
            alone = encoder(encoder.collate([items[i]]))
            tokens = _token_pairs(encoder, alone, emb)
            if tokens is not None:
                (alone_tokens, alone_mask), (batch_tokens, batch_mask) = tokens
                n, m = int(alone_mask[0].sum()), int(batch_mask[i].sum())
                _require(m == n, f"{name}: sample {i} has {n} real tokens alone but {m} in a batch: padded "
                                 "positions leak into token_mask (it must be False wherever collate padded)")
            diff = (alone.pooled[0].float() - emb.pooled[i].float()).abs().max().item()
            _require(_close(alone.pooled[0], emb.pooled[i], atol),
                     f"{name}: pooled output of sample {i} changes when it is batched with other samples "
                     f"(max difference {diff:.3g}): padding or the token mask is not honoured; leave padded "
                     "positions out of pooling, attention and normalisation")
            if tokens is not None:
                _require(_close(alone_tokens[0][alone_mask[0]], batch_tokens[i][batch_mask[i]], atol),
                         f"{name}: the real tokens of sample {i} change when it is batched with other samples: "
                         "padded positions leak into real ones (mask attention and convolutions)")


def _token_pairs(encoder: Encoder, alone: Embedding, emb: Embedding) -> Any:
    """``((alone tokens, mask), (batch tokens, mask))`` when the encoder yields tokens, else None."""
    if not encoder.has_tokens or alone.tokens is None or emb.tokens is None:
        return None
    if alone.token_mask is None or emb.token_mask is None:
        return None
    return (alone.tokens, alone.token_mask), (emb.tokens, emb.token_mask)


def _check_encoder_gradients(encoder: Encoder, raw_samples: Sequence[Any]) -> None:
    """In train mode the outputs carry a gradient that reaches the trainable parameters, and only them."""
    name = type(encoder).__name__
    encoder.train()
    out = encoder(encoder.collate([encoder.preprocess(r, train=True) for r in raw_samples]))
    _require(isinstance(out, Embedding) and out.pooled.is_floating_point(),
             f"{name}: forward in train mode must return an Embedding with float pooled")
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in encoder.named_parameters() if not p.requires_grad]
    outputs = [t for t in (out.pooled, out.tokens) if t is not None]
    if trainable:
        _require(all(t.requires_grad for t in outputs),
                 f"{name}: the output carries no gradient in train mode (is it detached, or computed under "
                 "torch.no_grad()?): the encoder would never learn; do not detach in forward -- freezing is "
                 "the engine's job")
    live = [t.float().pow(2).mean() for t in outputs if t.requires_grad]
    if live:
        encoder.zero_grad(set_to_none=True)
        torch.stack(live).sum().backward()
    if trainable:
        _require(any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable),
                 f"{name}: no trainable parameter received a gradient")
    for pname, p in frozen:
        _require(p.grad is None, f"{name}: frozen parameter {pname} received a gradient")
    encoder.zero_grad(set_to_none=True)
    encoder.eval()


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
    _require(isinstance(emb.pooled, Tensor) and tuple(emb.pooled.shape) == (n, encoder.dim),
             f"{name}: pooled has shape {tuple(getattr(emb.pooled, 'shape', ()))}, expected ({n}, {encoder.dim})")
    _require(emb.pooled.is_floating_point(), f"{name}: pooled must be a float tensor, got {emb.pooled.dtype}")
    _finite(emb.pooled, f"{name} pooled output")
    _require(isinstance(emb.present, Tensor) and emb.present.dtype == torch.bool and tuple(emb.present.shape) == (n,),
             f"{name}: present must be a bool [{n}] tensor (all True: forward only sees present samples)")
    _require(bool(emb.present.all()), f"{name}: present must be all True for the samples forward receives")
    if not encoder.has_tokens:
        return
    tokens, mask = emb.tokens, emb.token_mask
    if tokens is None:
        raise ContractError(f"{name}.has_tokens is True but forward returned no tokens")
    _require(tokens.dim() == 3 and tokens.shape[0] == n and tokens.shape[2] == encoder.dim,
             f"{name}: tokens must be [{n}, T, {encoder.dim}], got {tuple(tokens.shape)}")
    _require(tokens.is_floating_point(), f"{name}: tokens must be a float tensor, got {tokens.dtype}")
    if mask is None or mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ContractError(f"{name}: token_mask must be a bool [B, T] tensor")
    _require(bool(mask.any(dim=1).all()), f"{name}: a present sample has no real token")
    _finite(tokens, f"{name} tokens")


# ----------------------------------------------------------------------------------------- modality
_AUTO: Any = object()


def _resolve(cell: Any, base_dir: Path | None) -> Path | None:
    if not isinstance(cell, (str, os.PathLike)):
        return None
    text = os.fspath(cell)
    if not text.strip() or "\n" in text or len(text) > 4096:
        return None
    path = Path(os.path.expanduser(text.strip()))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def check_modality(modality: Any, cells: Sequence[Any], base_dir: str | Path | None = None, *,
                   missing: Any = _AUTO) -> list[Any]:
    """Check a :class:`mmkit.Modality` (a class or an instance) on a few present ``cells``.

    Checks: the class builds without arguments (the engine does ``Modality()``) and pickles (DataLoader
    workers); ``name`` is set; ``is_absent`` is True for ``None``, ``""``, ``"  "`` and NaN, and False for
    every given cell; ``load(cell, base_dir)`` of each cell returns a value; loading a file that does
    not exist raises (preferably :class:`mmkit.DataError`) instead of returning something.

    ``missing`` is the cell to try as a missing file; by default it is derived from the first cell that
    names an existing file (a sibling name that does not exist), and skipped when no cell is a file.
    Returns the loaded values.
    """
    if isinstance(modality, type):
        try:
            inst = modality()
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{modality.__name__}() fails: the engine builds a modality without arguments "
                                f"({type(exc).__name__}: {exc})") from exc
    else:
        inst = modality
    name = type(inst).__name__
    base = Path(base_dir) if base_dir is not None else None
    _require(isinstance(inst.name, str) and bool(inst.name), f"{name}.name must name the modality (e.g. 'audio')")
    _require(isinstance(inst.default_encoder, str), f"{name}.default_encoder must be a str ('' for none)")
    try:
        pickle.loads(pickle.dumps(inst))
    except Exception as exc:  # noqa: BLE001
        raise ContractError(f"{name} must pickle (DataLoader workers receive it): {type(exc).__name__}: {exc}") from exc
    for empty in (None, "", "  ", float("nan")):
        _require(bool(inst.is_absent(empty)),
                 f"{name}.is_absent({empty!r}) must be True: an empty cell means the sample has no {inst.name}")
    _require(len(cells) >= 1, "check_modality needs at least one present cell")
    values = []
    for i, cell in enumerate(cells):
        _require(not inst.is_absent(cell), f"{name}.is_absent says cell {i} ({_short(cell)}) is absent, "
                                           "but it was given as a present cell")
        try:
            value = inst.load(cell, base)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{name}.load of cell {i} ({_short(cell)}) raised "
                                f"{type(exc).__name__}: {exc}") from exc
        _require(value is not None, f"{name}.load of cell {i} ({_short(cell)}) returned None: return the loaded "
                                    "value (absence is decided by is_absent, before load is called)")
        values.append(value)
    if missing is _AUTO:
        missing = None
        for cell in cells:
            path = _resolve(cell, base)
            if path is not None:
                text = os.fspath(cell).strip()
                missing = str(Path(text).with_name(f"does-not-exist-{Path(text).name}"))
                break
    if missing is not None:
        try:
            value = inst.load(missing, base)
        except Exception:  # noqa: BLE001 - any error is fine; the engine adds file/row/column
            pass
        else:
            raise ContractError(f"{name}.load({_short(missing)}) returned {_short(value, 40)} for a file that does "
                                "not exist: a missing file must raise mmkit.DataError (an empty cell, not a "
                                "missing file, is what makes a sample absent)")
    return values


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


def perturb_hidden(embs: Mapping[str, Embedding], seed: int = 1, scale: float = 50.0) -> dict[str, Embedding]:
    """Replace absent rows and padded tokens with large random values (``scale`` x N(0, 1)): a fusion
    that honours its masks gives the same output for the result."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, e in embs.items():
        pooled = torch.where(e.present[:, None], e.pooled, torch.randn(e.pooled.shape, generator=g) * scale)
        tokens = e.tokens
        if tokens is not None and e.token_mask is not None:
            tokens = torch.where(e.token_mask[..., None], tokens, torch.randn(tokens.shape, generator=g) * scale)
        out[m] = Embedding(pooled, e.present, tokens, e.token_mask)
    return out


def _absent_note(embs: Mapping[str, Embedding], rows: Iterable[int]) -> str:
    notes = []
    for r in rows:
        absent = [m for m, e in embs.items() if not bool(e.present[r])]
        notes.append(f"sample {r}: {', '.join(absent) + ' absent' if absent else 'all present'}")
    return "; ".join(notes)


def _finite_rows(t: Tensor, embs: Mapping[str, Embedding], what: str) -> None:
    bad = (~torch.isfinite(t.float())).reshape(t.shape[0], -1).any(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero(as_tuple=True)[0].tolist()
        raise ContractError(f"{what} has NaN or inf values for samples {rows} ({_absent_note(embs, rows)}); a "
                            "fusion must give finite outputs when some modalities are absent (e.g. guard "
                            "divisions by the number of present modalities, use masked means, never softmax "
                            "over an all-masked row)")


def check_fusion(factory: Callable[[dict[str, int], dict[str, bool]], Fusion], *,
                 dims: Mapping[str, int] | None = None, tokens: Mapping[str, int] | None = None,
                 batch: int = 6, atol: float = 1e-5, seed: int = 0,
                 device: str | torch.device | None = None) -> Fused:
    """Check a fusion built by ``factory(input_dims, token_inputs)`` for 1, 2 and 3 modalities.

    Checks: float ``pooled [B, dim]`` finite (the message names the samples and their absent
    modalities otherwise); tokens/bool mask shapes; absent rows and padded tokens have no effect on the
    output; a modality missing from the dict entirely works; gradients reach the inputs of present
    samples and the fusion's parameters; ``aux_losses`` are finite scalars; ``state_dict`` and fit
    state round-trip; the fusion moves to another device; a frozen copy stays unchanged.
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
        _require(isinstance(getattr(fusion, "dim", None), int) and fusion.dim > 0,
                 f"{type(fusion).__name__}.dim must be a positive int")
        fusion.eval()
        pres = presence_patterns(list(sub), batch, seed)
        embs = random_embeddings(sub, batch, {m: t for m, t in tokens.items() if m in sub}, pres, seed)
        name = f"{type(fusion).__name__} with {k} modalit{'y' if k == 1 else 'ies'}"
        with torch.no_grad():
            out = fusion(embs)
            _check_fused(fusion, out, batch, name, embs)
            again = fusion(perturb_hidden(embs, seed + 1))
        _require(_close(out.pooled, again.pooled, atol, 1e-4),
                 f"{name}: changing absent rows or padded tokens changed the pooled output (masks are not "
                 "honoured: ignore rows whose present is False and tokens whose token_mask is False)")
        if k > 1:  # a modality may be missing from the dict altogether
            partial = {m: e for m, e in embs.items() if m != names[k - 1]}
            with torch.no_grad():
                try:
                    part = fusion(partial)
                except Exception as exc:  # noqa: BLE001
                    raise ContractError(f"{name}: forward fails when {names[k - 1]!r} is missing from the input "
                                        f"dict: {type(exc).__name__}: {exc}") from exc
            _check_fused(fusion, part, batch, f"{name} ({names[k - 1]!r} missing from the dict)", partial)
        leaves = _check_fusion_gradients(fusion, embs, name, seed)
        _check_state_dict(fusion, name)
        with torch.no_grad():
            ref = fusion(embs).pooled
            fresh = _restored_fresh(fusion, name, functools.partial(factory, dict(sub), token_inputs))
            restored = fresh.eval()(embs).pooled
        _require(_close(ref, restored, atol, 1e-4),
                 f"{name}: a fresh instance restored from the JSON fit state and the state_dict gives different "
                 f"outputs: {RESTORE_FIX}")

        def run_on(module: nn.Module, dev: torch.device, embs: dict[str, Embedding] = embs) -> Tensor:
            with torch.no_grad():
                return module({m: e.to(dev) for m, e in embs.items()}).pooled

        check_device(fusion, run_on, out.pooled, device=device, name=name)

        def run_frozen(module: nn.Module, leaves: dict[str, Embedding] = leaves) -> Fused:
            inputs = {m: Embedding(e.pooled.detach().clone().requires_grad_(True), e.present,
                                   None if e.tokens is None else e.tokens.detach().clone().requires_grad_(True),
                                   e.token_mask) for m, e in leaves.items()}
            return module(inputs)

        check_frozen(fusion, run_frozen, name=name)
        last = out
    assert last is not None
    return last


def _check_fusion_gradients(fusion: Fusion, embs: Mapping[str, Embedding], name: str,
                            seed: int) -> dict[str, Embedding]:
    """In train mode gradients reach the present inputs and the fusion's parameters, finite."""
    fusion.train()
    torch.manual_seed(seed)
    leaves = {m: Embedding(_leaf(e.pooled), e.present, _leaf(e.tokens), e.token_mask) for m, e in embs.items()}
    out_train = fusion(leaves)
    loss = out_train.pooled.float().pow(2).mean() + sum(out_train.aux_losses.values(), torch.tensor(0.0))
    _require(loss.requires_grad, f"{name}: the fused output carries no gradient (is it detached, or computed "
                                 "under torch.no_grad()?): nothing before or in the fusion would learn")
    loss.backward()
    grads = [e.pooled.grad for e in leaves.values()] + [e.tokens.grad for e in leaves.values()
                                                         if e.tokens is not None]
    _require(any(g is not None and bool(g.abs().sum() > 0) for g in grads),
             f"{name}: no gradient reaches the input embeddings (are they detached?): the encoders would "
             "never learn; do not detach the inputs")
    params = [p for p in fusion.parameters() if p.requires_grad]
    if params:
        _require(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params),
                 f"{name}: no parameter of the fusion receives a gradient")
    for m, e in leaves.items():
        if e.pooled.grad is not None:
            _finite(e.pooled.grad, f"{name}: gradient wrt {m} pooled")
    fusion.zero_grad(set_to_none=True)
    fusion.eval()
    return leaves


def _check_fused(fusion: Fusion, out: Fused, batch: int, name: str,
                 embs: Mapping[str, Embedding] | None = None) -> None:
    _require(isinstance(out, Fused), f"{name}: forward must return Fused, got {type(out).__name__}")
    _require(tuple(out.pooled.shape) == (batch, fusion.dim),
             f"{name}: pooled has shape {tuple(out.pooled.shape)}, expected ({batch}, {fusion.dim})")
    _require(out.pooled.is_floating_point(), f"{name}: pooled must be a float tensor, got {out.pooled.dtype}")
    if embs is not None:
        _finite_rows(out.pooled, embs, f"{name}: pooled output")
    else:
        _finite(out.pooled, f"{name}: pooled output")
    if fusion.has_tokens:
        _require(out.tokens is not None and out.mask is not None, f"{name}: has_tokens but no tokens/mask")
    if out.tokens is not None:
        _require(out.tokens.shape[0] == batch and out.tokens.shape[2] == fusion.dim,
                 f"{name}: tokens must be [B, T, {fusion.dim}], got {tuple(out.tokens.shape)}")
        _require(out.tokens.is_floating_point(), f"{name}: tokens must be a float tensor")
        _require(out.mask is not None and out.mask.dtype == torch.bool and out.mask.shape == out.tokens.shape[:2],
                 f"{name}: mask must be a bool [B, T] tensor matching tokens")
        _finite(out.tokens[out.mask], f"{name}: real tokens")
    for key, value in out.aux_losses.items():
        _require(isinstance(value, Tensor) and value.dim() == 0, f"{name}: aux_losses[{key!r}] must be a scalar")
        _require(value.is_floating_point(), f"{name}: aux_losses[{key!r}] must be a float tensor")
        _finite(value, f"{name}: aux_losses[{key!r}]")
    if out.weights is not None:
        _require(out.weights.shape[0] == batch, f"{name}: weights must be batch-first")
        _require(out.weights.is_floating_point(), f"{name}: weights must be a float tensor")
        _finite(out.weights, f"{name}: weights")
        if out.weight_names is not None:
            _require(len(out.weight_names) == out.weights.shape[-1],
                     f"{name}: weight_names has {len(out.weight_names)} names for {out.weights.shape[-1]} columns")


# --------------------------------------------------------------------------------------------- head
def check_head(head: Head, fused: Fused, batch: Batch, *, device: str | torch.device | None = None,
               factory: Callable[[], Head] | None = None) -> Output:
    """Check a (fitted) head on a fused batch whose ``targets`` were made by the head's own
    ``preprocess_target``/``collate_targets``.

    Checks: training loss is a finite float scalar with a gradient reaching the head's parameters and
    the fused input; eval gives finite predictions; metrics compute to floats; ``decode`` gives one
    JSON-serialisable dict per row; predict mode (no targets) works and returns no loss;
    ``state_dict`` round-trips; a *fresh* instance (same arguments, or ``factory()``) restored from the
    JSON fit state and the ``state_dict`` predicts the same; a head that declares
    :class:`mmkit.Retrieval` returns well-formed retrieval embeddings; the head moves to another
    device; a frozen copy stays unchanged through an optimizer step.
    """
    name = type(head).__name__
    _require(isinstance(head.fields, tuple) and all(isinstance(f, str) for f in head.fields),
             f"{name}.fields must be a tuple of field names, got {head.fields!r}")
    out = _check_head_training(head, fused, batch)
    out = _check_head_eval(head, fused, batch)
    if isinstance(head, Retrieval):
        check_retrieval(head, out.preds, batch.size)
    _check_state_dict(head, name)
    fresh = _restored_fresh(head, name, factory)
    fresh.eval()
    with torch.no_grad():
        again = fresh(fused, batch)
    for key, value in out.preds.items():
        if isinstance(value, Tensor) and value.is_floating_point():
            _require(key in again.preds and _close(value, again.preds[key], 1e-5),
                     f"{name}: a fresh instance restored from the JSON fit state and the state_dict predicts a "
                     f"different preds[{key!r}] than the fitted head: {RESTORE_FIX}")

    def run_on(module: nn.Module, dev: torch.device) -> Tensor | None:
        moved = Fused(fused.pooled.to(dev), None if fused.tokens is None else fused.tokens.to(dev),
                      None if fused.mask is None else fused.mask.to(dev),
                      inputs={m: e.to(dev) for m, e in fused.inputs.items()})
        with torch.no_grad():
            return module(moved, batch.to(dev)).loss

    check_device(head, run_on, out.loss, device=device, name=name)

    def run_frozen(module: nn.Module) -> Output:
        module_in = Fused(fused.pooled.detach().clone().requires_grad_(True),
                          None if fused.tokens is None else fused.tokens.detach().clone().requires_grad_(True),
                          fused.mask, inputs=fused.inputs)
        return module(module_in, batch)

    check_frozen(head, run_frozen, name=name)
    head.eval()
    return out


@overload
def _leaf(t: Tensor) -> Tensor: ...
@overload
def _leaf(t: None) -> None: ...
def _leaf(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().clone().requires_grad_(True)


def _check_head_training(head: Head, fused: Fused, batch: Batch) -> Output:
    """A finite float scalar loss whose gradient reaches the head's parameters and the fused input."""
    name = type(head).__name__
    head.train()
    pooled, tokens = _leaf(fused.pooled), _leaf(fused.tokens)
    inputs = {m: Embedding(_leaf(e.pooled), e.present, _leaf(e.tokens), e.token_mask) for m, e in fused.inputs.items()}
    out = head(Fused(pooled, tokens, fused.mask, inputs=inputs), batch)
    _require(isinstance(out, Output), f"{name}.forward must return Output")
    _require(out.loss is not None and out.loss.dim() == 0, f"{name}: training loss must be a scalar tensor")
    _require(out.loss.is_floating_point(), f"{name}: the loss must be a float tensor, got {out.loss.dtype}")
    _finite(out.loss, f"{name}: loss")
    _require(out.loss.requires_grad, f"{name}: the loss has no gradient (is it detached, or computed under "
                                     "torch.no_grad()?): training would not change the model")
    head.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for p in head.parameters() if p.requires_grad]
    if params:
        _require(any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params),
                 f"{name}: no head parameter receives a gradient from the loss")
    leaves = [t for t in (pooled, tokens) if t is not None]
    leaves += [t for e in inputs.values() for t in (e.pooled, e.tokens) if t is not None]
    _require(any(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in leaves),
             f"{name}: the loss does not depend on the fused input (is the input detached?): the encoders "
             "and the fusion would never learn; do not detach the fused input")
    head.zero_grad(set_to_none=True)
    return out


def _check_head_eval(head: Head, fused: Fused, batch: Batch) -> Output:
    """Eval predictions are finite, metrics are floats and include ``monitor``, ``decode`` gives JSON
    rows, and without targets the loss is None."""
    name = type(head).__name__
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
        _require(all(isinstance(r, dict) for r in rows), f"{name}.decode must return a list of dicts")
        try:
            json.dumps(rows)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{name}.decode rows must be JSON-serialisable (mmkit predict writes JSON): "
                                f"{exc}") from exc
        pred_out = head(fused, Batch(batch.inputs, batch.present, None, batch.index))
        _require(pred_out.loss is None, f"{name}: without targets the loss must be None")
    _require(head.monitor in values or head.monitor == "loss",
             f"{name}.monitor={head.monitor!r} is not among the metrics it reports: {sorted(values)}")
    _require(head.monitor_mode in ("min", "max"), f"{name}.monitor_mode must be 'min' or 'max'")
    return out


def check_retrieval(head: Any, preds: Mapping[str, Any], batch: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Check a head's :class:`mmkit.Retrieval` declaration on the ``preds`` of a batch of ``batch`` rows:
    at least two distinct ``retrieval_modalities``, and for each an ``(embeddings [B, D] float, present
    [B] bool)`` pair with one ``D`` for all. Returns the pairs."""
    name = type(head).__name__
    sides: Any = getattr(head, "retrieval_modalities", None)
    _require(isinstance(sides, tuple) and len(sides) >= 2 and len(set(sides)) == len(sides)
             and all(isinstance(m, str) for m in sides),
             f"{name}.retrieval_modalities must be a tuple of two or more distinct modality names, got {sides!r}")
    pairs = head.retrieval_embeddings(preds)
    _require(isinstance(pairs, Mapping) and set(sides) <= set(pairs),
             f"{name}.retrieval_embeddings(preds) must map each of {sides} to (embeddings, present)")
    dims = set()
    for m in sides:
        emb, present = pairs[m]
        _require(isinstance(emb, Tensor) and emb.dim() == 2 and emb.shape[0] == batch and emb.is_floating_point(),
                 f"{name}.retrieval_embeddings: {m!r} embeddings must be a float [B={batch}, D] tensor")
        _require(isinstance(present, Tensor) and present.dtype == torch.bool and tuple(present.shape) == (batch,),
                 f"{name}.retrieval_embeddings: {m!r} present must be a bool [B={batch}] tensor")
        dims.add(int(emb.shape[1]))
    _require(len(dims) == 1, f"{name}.retrieval_embeddings: the modalities have different widths {sorted(dims)}; "
                             "they must share one embedding space")
    return {m: pairs[m] for m in sides}


# ------------------------------------------------------------------------------------------- plugin
def imported_modules(code: str, *, python: str | None = None, env: Mapping[str, str] | None = None,
                     timeout: float = 120) -> list[tuple[int, str]]:
    """``(depth, module)`` for every module a fresh ``python -X importtime -c CODE`` imports, in the
    order ``importtime`` prints them (a module after the modules it imported; depth 0 = top level).

    The child runs without ``MMKIT_PLUGINS``, with this process's ``sys.path`` on its ``PYTHONPATH``."""
    run_env = dict(os.environ if env is None else env)
    for key in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS"):
        run_env.pop(key, None)
    # the child finds what this process finds (e.g. folders a test put on sys.path)
    paths = [p for p in sys.path if p and os.path.isdir(p)] + run_env.get("PYTHONPATH", "").split(os.pathsep)
    run_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    proc = subprocess.run([python or sys.executable, "-X", "importtime", "-c", code], env=run_env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
        raise ContractError(f"`python -c {code!r}` failed (exit {proc.returncode}):\n" + "\n".join(lines[-20:]))
    out = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            field = line.rsplit("|", 1)[1]
            module = field.strip()
            if module == "imported package":
                continue
            depth = (len(field) - len(field.lstrip()) - 1) // 2
            out.append((depth, module))
    return out


def _import_chain(records: list[tuple[int, str]], index: int) -> list[str]:
    """The chain of importers of ``records[index]`` (outermost first)."""
    depth, module = records[index]
    chain = [module]
    for d, m in records[index + 1:]:
        if d < depth:
            chain.append(m)
            depth = d
        if depth == 0:
            break
    return chain[::-1]


def check_plugin_module(module_name: str, *, heavy: Sequence[str] = HEAVY_MODULES, require_docs: bool = True,
                        python: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    """Check a plugin module (``"my_pkg.plugin"``): light, loadable, and its registrations valid.

    * Importing it in a fresh interpreter (``python -X importtime -c "import MODULE"``) imports none of
      ``heavy`` (torch, timm, transformers, sentence_transformers); the message shows the import chain.
    * Registered into an isolated :class:`mmkit.Registry` it loads without error, registers
      something, makes no duplicate registration, and every component's parameters can be read from
      source: each has a type annotation and (with ``require_docs``) an ``Args:`` description.

    Returns the isolated registry holding just this plugin.
    """
    import importlib

    from mmkit._internal.registry import Registry

    records = imported_modules(f"import {module_name}", python=python, env=env)
    for i, (_, module) in enumerate(records):
        if module.split(".")[0] in heavy:
            chain = _import_chain(records, i)
            first = next(j for j, m in enumerate(chain) if m.split(".")[0] in heavy)
            shown = " -> ".join(chain[: first + 1])
            raise ContractError(
                f"importing {module_name} imports {module.split('.')[0]} ({shown}): a plugin module and its "
                "package __init__ must import only mmkit and the standard library; register components by "
                "import string ('pkg.module:Class') so heavy libraries load only when a component is built")
    registry = Registry(entry_points=False, env=False)
    registry.register_plugin(importlib.import_module(module_name), name=module_name)
    info = registry.plugins.get(module_name)
    if info is None:
        raise ContractError(f"{module_name} was not registered (is it blocked?)")
    _require(info.error is None, f"plugin {module_name} fails to load: {info.error}")
    _require(not registry.problems, f"plugin {module_name}: {'; '.join(registry.problems)}")
    components = registry.list()
    _require(bool(components) or bool(info.hooks),
             f"plugin {module_name} implements no mmkit hook (decorate the hooks with @mmkit.hookimpl)")
    for component in components:
        where = f"{component.kind} {component.name!r} ({component.target})"
        try:
            described = registry.describe(component.kind, component.name)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(f"{where}: its parameters cannot be read: {exc}") from exc
        for p in described.params or ():
            _require(p.type != "Any", f"{where}: parameter {p.name!r} has no type annotation; recipes are "
                                      "validated against it (e.g. `dim: int = 64`)")
            if require_docs:
                _require(bool(p.doc), f"{where}: parameter {p.name!r} is not documented; add it to the "
                                      "'Args:' section of the class docstring (mmkit show prints it)")
    return registry


def check_public_imports(paths: str | Path | Iterable[str | Path], own_package: str | None = None) -> None:
    """Check that the plugin source in ``paths`` (files or folders) uses only mmkit's public API --
    the ``__all__`` of ``mmkit``, ``mmkit.testing`` and ``mmkit.testing_plugin`` -- and imports no other
    plugin's package (``mmkit_*`` other than ``own_package``): internal modules may change in any
    release. The message lists every use, with the public name to use instead where there is one."""
    from mmkit._internal.publicapi import files_violations

    found = files_violations([paths] if isinstance(paths, (str, Path)) else paths, own_package)
    _require(not found, f"{len(found)} use(s) of non-public mmkit names or of another plugin's modules:\n"
                        + "\n".join(f"  {v}" for v in found))


def heavy_modules(modules: Iterable[str], heavy: Sequence[str] = HEAVY_MODULES) -> set[str]:
    """The names in ``modules`` that belong to a heavy library."""
    return {m for m in modules if m.split(".")[0] in heavy}


__all__ = [
    "HEAVY_MODULES",
    "ContractError",
    "check_device",
    "check_encoder",
    "check_frozen",
    "check_fusion",
    "check_head",
    "check_modality",
    "check_plugin_module",
    "check_public_imports",
    "check_retrieval",
    "fresh_instance",
    "heavy_modules",
    "imported_modules",
    "perturb_hidden",
    "presence_patterns",
    "random_embeddings",
]
