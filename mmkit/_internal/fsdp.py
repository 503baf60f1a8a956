"""FSDP2: ``train.strategy = "fsdp"`` shards parameters, gradients and optimizer state over the ranks.

The model is sharded with ``torch.distributed.fsdp.fully_shard`` unit by unit: each encoder, each
block of the fusion's layer lists, the fusion, the head, then the root (whatever is left). A unit's
parameters are gathered just before its forward and freed after it, so a rank holds one unit's full
weights at a time. A frozen encoder is its own unit (its weights are gathered only when it runs; with
the frozen-encoder cache it never runs in training). ``bf16`` precision adds a
``MixedPrecisionPolicy`` (bf16 parameters in compute, fp32 gradient reduction).

Checkpoints: the model's weights are gathered into the usual ``model.safetensors`` (rank 0 writes;
inference and resuming need no process group); the optimizer state is saved sharded with
``torch.distributed.checkpoint`` into ``optimizer/`` inside the checkpoint folder, which loads into
any world size (resharded by DCP), including one process without FSDP.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkit._internal.distributed import Dist, Strategy, absent_field_reasons
from mmkit._internal.errors import MmkitError, RecipeError
from mmkit._internal.rundir import OPTIMIZER_SHARDS


def fsdp_units(model: nn.Module) -> list[str]:
    """The names of the modules ``fully_shard`` wraps, in order (the root last, as ``""``): each
    encoder, each element of the fusion's ``nn.ModuleList`` children, the fusion, the head."""
    units: list[str] = []
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, nn.ModuleDict):
        units += [f"encoders.{name}" for name, enc in encoders.items() if any(True for _ in enc.parameters())]
    fusion = getattr(model, "fusion", None)
    if isinstance(fusion, nn.Module):
        for child_name, child in fusion.named_children():
            if isinstance(child, nn.ModuleList):
                units += [f"fusion.{child_name}.{i}" for i, block in enumerate(child)
                          if any(True for _ in block.parameters())]
        if any(True for _ in fusion.parameters()):
            units.append("fusion")
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        units.append("head")
    return [*units, ""]


def fsdp_unit_sizes(model: nn.Module, units: list[str]) -> dict[str, tuple[int, bool]]:
    """Each unit's own parameter count (not those of the units inside it) and whether all are frozen."""
    owner: dict[str, str] = {}
    for name, _ in model.named_parameters():
        inside = [u for u in units if u == "" or name.startswith(u + ".")]
        owner[name] = max(inside, key=len)
    out: dict[str, tuple[int, bool]] = {}
    for unit in units:
        params = [p for n, p in model.named_parameters() if owner[n] == unit]
        out[unit] = (sum(p.numel() for p in params), bool(params) and not any(p.requires_grad for p in params))
    return out


class FSDPStrategy(Strategy):
    """FSDP2 over all ranks (one mesh dimension). See the module docstring."""

    name = "fsdp"
    sharded_optimizer = True

    def __init__(self, dist: Dist, device: torch.device, dtype: torch.dtype | None = None) -> None:
        super().__init__(dist, device, dtype)
        self.units: list[str] = []

    def prepare(self, model: nn.Module, plan: Any, registry: Any, say: Any = None) -> None:
        """Refuse data that would make ranks run different units; list the units."""
        absent = absent_field_reasons(model, plan, registry, ("train", "val", "test"), trainable_only=False)
        if absent:
            raise RecipeError("train.strategy = 'fsdp' needs every rank to run every encoder in every step "
                              "(each runs a collective), but a batch without a field skips its encoder: "
                              + "; ".join(absent) + ". Use train.strategy = 'ddp' for data with absent modalities")
        self.units = fsdp_units(model)
        if say is not None:
            say(f"fsdp: sharding {len(self.units) - 1} units then the root over {self.dist.world} ranks"
                + (f", {str(self.dtype).replace('torch.', '')} parameters in compute" if self.dtype else ""))

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.dist.world,))
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self.dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=torch.float32)
        for name in self.units or fsdp_units(model):
            fully_shard(model.get_submodule(name) if name else model, **kwargs)
        if not self.dist.main:  # the same warning from every rank: rank 0's copy is enough
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        return model

    def no_sync(self, net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        return _gradient_sync(net, sync)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> None:
        """The global norm over every shard (a DTensor norm made full), then the scaling."""
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, 2.0)
        if isinstance(total, DTensor):
            total = total.full_tensor()
        torch.nn.utils.clip_grads_with_norm_([p for p in model.parameters() if p.grad is not None], max_norm, total)

    def state_module(self, model: nn.Module) -> nn.Module:
        """Every rank takes part in gathering the full weights; rank 0 gets a CPU copy to save."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return _StateHolder(full)  # type: ignore[arg-type]  # a model state dict holds tensors

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, saved: Any) -> None:
        """A plain ``optimizer.state_dict()`` (a checkpoint of a run in one process): its parameter
        numbers become names, then each rank keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = {id(p): n for n, p in model.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        state = {order[int(k)]: v for k, v in saved["state"].items()}
        groups = [{**g, "params": [order[int(i)] for i in g["params"]]} for g in saved["param_groups"]]
        # strict=False: a parameter that never had a gradient has no state yet (a fresh one is used)
        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                                 options=StateDictOptions(full_state_dict=True, strict=False))

    def eval_batches(self, net: nn.Module, loader: Any) -> Iterator[Any]:
        """This rank's batches, and a discarded forward pass on its last batch for every batch another
        rank still has (evaluation shards differ by up to one batch; every forward is collective).
        Before each batch the ranks agree whether any has one left: one all-reduce of one integer."""
        batches, last = iter(loader), None
        while True:
            batch = next(batches, None)
            if not self.dist.max_int(int(batch is not None), self.device):
                return
            if batch is not None:
                last = batch
                yield batch
            elif last is None:
                raise MmkitError(f"fsdp: rank {self.dist.rank} has no evaluation rows (fewer rows than processes)")
            else:
                net(last.to(self.device))  # result discarded

    def save_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> bool:
        """Every rank writes its shard of the optimizer state into ``folder/optimizer``."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)},
                 checkpoint_id=str(folder / OPTIMIZER_SHARDS))
        return True


def load_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path) -> None:
    """Load ``checkpoint/optimizer`` (saved by any world size) into ``optimizer``, FSDP-sharded or
    not: DCP reads the pieces each rank needs."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    try:
        with warnings.catch_warnings():  # one process reads every shard: what DCP warns about is the intent
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(checkpoint / OPTIMIZER_SHARDS))
    except Exception as exc:  # noqa: BLE001 - a missing or damaged shard must name the folder
        raise MmkitError(f"{checkpoint / OPTIMIZER_SHARDS}: cannot load the sharded optimizer state: "
                         f"{type(exc).__name__}: {exc}") from exc
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


class _StateHolder(nn.Module):
    """A module whose ``state_dict()`` is a given (gathered) state dict, for the safetensors writer."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        # own storage per tensor: gathered tensors can be views of one buffer, which safetensors refuses
        self._full = {k: v.detach().clone().contiguous() for k, v in state.items()}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return dict(self._full)


@contextmanager
def _gradient_sync(net: nn.Module, sync: bool) -> Iterator[None]:
    """FSDP2's accumulation switch: no reduce-scatter on the micro-batches before the last."""
    if sync or not hasattr(net, "set_requires_gradient_sync"):
        yield
        return
    switch: Any = net.set_requires_gradient_sync  # FSDPModule's method (added by fully_shard)
    switch(False)
    try:
        yield
    finally:
        switch(True)


__all__ = ["FSDPStrategy", "fsdp_unit_sizes", "fsdp_units", "load_sharded_optimizer"]
