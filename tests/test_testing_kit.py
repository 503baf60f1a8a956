"""The contract kit (``mmkit.testing``) accepts correct components and catches planted faults, each
with a message that says what is wrong."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmkit._internal.errors import DataError
from mmkit._internal.interfaces import Batch, Embedding, Encoder, Fused, Fusion, Head, Metrics, Output
from mmkit._internal.modality import Modality
from mmkit.testing import (ContractError, check_device, check_encoder, check_fusion, check_head, check_modality,
                           check_plugin_module, random_embeddings)


TEXTS = ["a", "a much longer text about shapes", "mid length"]


# ------------------------------------------------------------------------------ good components
class ByteEncoder(Encoder):
    """Bytes of a string -> embeddings; pooled = masked mean of the tokens."""

    modality = "text"
    has_tokens = True
    deterministic_train = True

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(257, dim, padding_idx=0)
        self.proj = nn.Linear(dim, dim)

    def preprocess(self, raw: Any, train: bool = False) -> torch.Tensor:
        return torch.tensor(list(str(raw).encode()[:32]), dtype=torch.long) + 1

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = nn.utils.rnn.pad_sequence(items, batch_first=True)
        return {"ids": ids, "mask": ids != 0}

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        tokens = self.proj(self.embed(inputs["ids"]))
        mask = inputs["mask"]
        present = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        return Embedding(self.pool(tokens, mask), present, tokens, mask)


class MeanFusion(Fusion):
    """Projects each modality and averages over the present ones."""

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        total = count = None
        for m, e in embeddings.items():
            part = self.proj[m](e.pooled) * e.present[:, None]
            total = part if total is None else total + part
            c = e.present.float()[:, None]
            count = c if count is None else count + c
        return Fused(total / count.clamp(min=1), inputs=dict(embeddings))


class Accuracy(Metrics):
    def __init__(self) -> None:
        super().__init__()
        self.right = 0

    def update(self, output: Output, batch: Batch) -> None:
        super().update(output, batch)
        self.right += int((output.preds["logits"].argmax(-1) == batch.targets).sum())

    def merge(self, other: "Accuracy") -> None:
        super().merge(other)
        self.right += other.right

    def compute(self) -> dict[str, float]:
        return {**super().compute(), "accuracy": self.right / max(self.count, 1)}


class LinearHead(Head):
    """Linear classifier over ``label`` in 0..num_classes-1."""

    fields = ("label",)
    monitor = "accuracy"
    monitor_mode = "max"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, num_classes: int = 3) -> None:
        super().__init__()
        self.out = nn.Linear(input_dim, num_classes)

    def preprocess_target(self, raw: Mapping[str, Any]) -> torch.Tensor:
        return torch.tensor(int(raw["label"]))

    def collate_targets(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)

    def logits(self, fused: Fused) -> torch.Tensor:
        return self.out(fused.pooled)

    def forward(self, fused: Fused, batch: Batch) -> Output:
        logits = self.logits(fused)
        loss = None if batch.targets is None else self.loss(logits, batch.targets.to(logits.device))
        return Output(loss, {"logits": logits})

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)

    def new_metrics(self) -> Accuracy:
        return Accuracy()

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"label": int(i)} for i in preds["logits"].argmax(-1)]


class NumbersModality(Modality):
    """A path to a text file of numbers, or a list of numbers."""

    name = "numbers"

    def load(self, value: Any, base_dir: Path | None = None) -> Any:
        if isinstance(value, list):
            return [float(v) for v in value]
        path = Path(value) if base_dir is None else Path(base_dir) / value
        if not path.is_file():
            raise DataError(f"numbers file not found: {path}")
        return [float(v) for v in path.read_text().split()]


def head_inputs(head: Head, n: int = 6) -> tuple[Fused, Batch]:
    g = torch.Generator().manual_seed(0)
    rows = [{"label": i % 3} for i in range(n)]
    fused = Fused(torch.randn(n, 8, generator=g), inputs=random_embeddings({"image": 4}, n))
    targets = head.collate_targets([head.preprocess_target(r) for r in rows])
    return fused, Batch({}, {"image": torch.ones(n, dtype=torch.bool)}, targets, torch.arange(n))


def test_correct_components_pass_every_check(tmp_path: Path) -> None:
    emb = check_encoder(ByteEncoder(), TEXTS)
    assert emb.pooled.shape == (3, 8) and emb.token_mask.dtype == torch.bool
    fused = check_fusion(lambda d, t: MeanFusion(d, t))
    assert fused.pooled.shape == (6, 8)
    head = LinearHead(8)
    out = check_head(head, *head_inputs(head))
    assert out.preds["logits"].shape == (6, 3)
    (tmp_path / "a.txt").write_text("1 2 3")
    assert check_modality(NumbersModality, ["a.txt", [4, 5]], tmp_path) == [[1.0, 2.0, 3.0], [4.0, 5.0]]


def test_an_explicit_device_runs_the_outputs_comparison() -> None:
    """The path CUDA takes (forward on the moved module, outputs compared with the CPU ones), on the CPU."""
    check_encoder(ByteEncoder(), TEXTS, device="cpu")
    check_fusion(lambda d, t: MeanFusion(d, t), device="cpu")
    head = LinearHead(8)
    check_head(head, *head_inputs(head), device="cpu")


# ------------------------------------------------------------------------------ planted faults
# Each fault is a small subclass of a correct component; the table below runs the check that must catch
# it and the message it must give: what is wrong and the fix.

class MaskIgnoringEncoder(ByteEncoder):
    """Fault: pooled is the mean over ALL positions, padding included."""

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return tokens.mean(1)


class PadLeakingEncoder(ByteEncoder):
    """Fault: the token mask marks the padding as real tokens."""

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = nn.utils.rnn.pad_sequence(items, batch_first=True)
        return {"ids": ids, "mask": torch.ones_like(ids, dtype=torch.bool)}


class DetachedOutputEncoder(ByteEncoder):
    """Fault: forward detaches its output -- the encoder never learns."""

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        emb = super().forward(inputs)
        return Embedding(emb.pooled.detach(), emb.present, emb.tokens.detach(), emb.token_mask)


class VocabEncoder(ByteEncoder):
    """Correct: ``fit`` learns a byte vocabulary (JSON-safe: string keys) that preprocessing uses."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__(dim)
        self.vocab: dict[str, int] = {}

    def fit(self, values: Any) -> None:
        self.vocab = {str(b): i + 1 for i, b in enumerate(sorted({b for v in values for b in str(v).encode()}))}

    def get_fit_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        self.vocab = dict(state["vocab"])

    def preprocess(self, raw: Any, train: bool = False) -> torch.Tensor:
        return torch.tensor([self.vocab.get(str(b), 256) for b in str(raw).encode()[:32]], dtype=torch.long)


class NoOpRestoreEncoder(VocabEncoder):
    """Fault: set_fit_state does nothing (the kit used to restore into a copy of the fitted encoder,
    which this passed)."""

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        pass


class IntKeyVocabEncoder(VocabEncoder):
    """Fault: the fitted vocabulary has int keys, which JSON turns into strings."""

    def fit(self, values: Any) -> None:
        self.vocab = {b: i + 1 for i, b in enumerate(sorted({b for v in values for b in str(v).encode()}))}

    def preprocess(self, raw: Any, train: bool = False) -> torch.Tensor:
        return torch.tensor([self.vocab.get(b, 256) for b in str(raw).encode()[:32]], dtype=torch.long)


class UnsavedStatsEncoder(ByteEncoder):
    """Fault: fit learns a scale kept in a non-persistent buffer -- neither the fit state nor the
    state_dict saves it, so a loaded model differs."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__(dim)
        self.register_buffer("scale", torch.ones(()), persistent=False)

    def fit(self, values: Any) -> None:
        self.scale.fill_(1.0 + sum(len(str(v)) for v in values) / len(values))

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        emb = super().forward(inputs)
        return Embedding(emb.pooled * self.scale, emb.present, emb.tokens, emb.token_mask)


class SizedByFitEncoder(ByteEncoder):
    """Fault: fit builds a layer sized by what it saw; set_fit_state keeps the size but does not
    rebuild the layer, so the saved weights cannot be loaded into a fresh instance."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__(dim)
        self.size = 0

    def fit(self, values: Any) -> None:
        self.size = max(len(str(v)) for v in values)
        self.extra = nn.Linear(self.size, 1)

    def get_fit_state(self) -> dict[str, Any]:
        return {"size": self.size}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        self.size = int(state["size"])


class SetFitStateEncoder(VocabEncoder):
    """Fault: the fit state holds a set, which JSON cannot store."""

    def get_fit_state(self) -> dict[str, Any]:
        return {"bytes": set(self.vocab)}


class UnfreezingEncoder(ByteEncoder):
    """Fault: ``train()`` turns gradients back on, so a frozen encoder trains anyway."""

    def train(self, mode: bool = True) -> "UnfreezingEncoder":
        super().train(mode)
        if mode:
            self.proj.requires_grad_(True)
        return self


class IntMaskEncoder(ByteEncoder):
    """Fault: the token mask is a 0/1 long tensor instead of bool."""

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        emb = super().forward(inputs)
        return Embedding(emb.pooled, emb.present, emb.tokens, emb.token_mask.long())


class StrayTensorEncoder(ByteEncoder):
    """Fault: a constant tensor kept in a plain attribute (stays on the CPU, not saved)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__(dim)
        self.scale = torch.ones(dim)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        emb = super().forward(inputs)
        return Embedding(emb.pooled * self.scale, emb.present, emb.tokens, emb.token_mask)


class NaNFusion(MeanFusion):
    """Fault: L2-normalises each modality's vector -- an absent (all-zero) row gives 0/0 = NaN."""

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        parts = [self.proj[m](e.pooled / e.pooled.norm(dim=-1, keepdim=True)) for m, e in embeddings.items()]
        return Fused(torch.stack(parts).mean(0), inputs=dict(embeddings))


class LeakyFusion(MeanFusion):
    """Fault: sums the pooled vectors without looking at ``present``."""

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        return Fused(sum(self.proj[m](e.pooled) for m, e in embeddings.items()), inputs=dict(embeddings))


class DetachingFusion(MeanFusion):
    """Fault: detaches its inputs -- the fusion learns, the encoders never do."""

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        return super().forward({m: e.detach() for m, e in embeddings.items()})


class WrongDeviceFusion(MeanFusion):
    """Fault: creates a tensor on the CPU in forward (breaks as soon as the model is on a GPU)."""

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        out = super().forward(embeddings)
        return Fused(out.pooled + torch.zeros(self.dim), inputs=out.inputs)


class DetachedLossHead(LinearHead):
    """Fault: the loss is computed on detached logits -- no gradient ever reaches the model."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.detach(), targets)


class DetachedInputHead(LinearHead):
    """Fault: the head detaches the fused vector -- the head learns, the encoders never do."""

    def logits(self, fused: Fused) -> torch.Tensor:
        return self.out(fused.pooled.detach())


class LabelMapHead(LinearHead):
    """Fault: fit learns a label order that decode uses, but set_fit_state ignores it."""

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, num_classes: int = 3) -> None:
        super().__init__(input_dim, modality_dims, num_classes)
        self.register_buffer("bias", torch.zeros(num_classes), persistent=False)

    def fit(self, values: Any) -> None:
        self.bias.copy_(torch.arange(self.bias.numel(), dtype=torch.float))

    def get_fit_state(self) -> dict[str, Any]:
        return {"bias": self.bias.tolist()}

    def logits(self, fused: Fused) -> torch.Tensor:
        return self.out(fused.pooled) + self.bias


def _fitted_head(cls: type[LinearHead]) -> Output:
    head = cls(8)
    head.fit([{"label": i % 3} for i in range(6)])
    return check_head(head, *head_inputs(head))


def _meta_device_run(fusion_cls: type[MeanFusion]) -> None:
    embs = random_embeddings({"image": 4}, 3)

    def run(module: nn.Module, device: torch.device) -> torch.Tensor:
        return module({m: e.to(device) for m, e in embs.items()}).pooled

    check_device(fusion_cls({"image": 4}), run, device="meta")


def _heavy_plugin(write_module: Any) -> None:
    write_module("tp_kit_heavy_impl", "import torch\nFusion = object\n")
    check_plugin_module(write_module("tp_kit_heavy_plugin", HEAVY_PLUGIN))


HEAVY_PLUGIN = '''
import mmkit
import tp_kit_heavy_impl  # a component module imported eagerly: it imports torch


@mmkit.hookimpl
def register_fusions(register):
    register("heavy", "tp_kit_heavy_impl:Fusion")
'''

#: fault -> (the check that must catch it, called with the write_module fixture; what the message must say)
FAULTS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "encoder ignores the mask in pooling": (
        lambda w: check_encoder(MaskIgnoringEncoder(), TEXTS),
        r"pooled output of sample 0 changes when it is batched with other samples .*the token mask is not "
        r"honoured; leave padded positions out of pooling, attention and normalisation"),
    "padded tokens leak into the token mask": (
        lambda w: check_encoder(PadLeakingEncoder(), TEXTS),
        r"sample 0 has 1 real tokens alone but \d+ in a batch: padded positions leak into token_mask \(it must "
        r"be False wherever collate padded\)"),
    "fusion ignores `present` (reads absent rows)": (
        lambda w: check_fusion(lambda d, t: LeakyFusion(d, t)),
        r"changing absent rows or padded tokens changed the pooled output \(masks are not honoured: ignore rows "
        r"whose present is False and tokens whose token_mask is False\)"),
    "fusion gives NaN when a modality is absent": (
        lambda w: check_fusion(lambda d, t: NaNFusion(d, t)),
        r"pooled output has NaN or inf values for samples \[1.*\] \(sample 1: text absent.*guard divisions"),
    "no-op set_fit_state": (
        lambda w: check_encoder(NoOpRestoreEncoder(), TEXTS),
        r"a fresh instance restored from the JSON fit state and the state_dict gives different outputs than "
        r"the fitted encoder: get_fit_state\(\) must return everything fit\(\) learned .*set_fit_state\(\) must "
        r"restore all of it"),
    "fit state with int keys (does not survive JSON)": (
        lambda w: check_encoder(IntKeyVocabEncoder(), TEXTS),
        r"a fresh instance restored from the JSON fit state .*\(dict keys become strings\)"),
    "fitted statistic neither in the fit state nor in the state_dict": (
        lambda w: check_encoder(UnsavedStatsEncoder(), TEXTS),
        r"a fresh instance restored from the JSON fit state .*not a registered parameter or buffer"),
    "set_fit_state does not rebuild a layer fit() created": (
        lambda w: check_encoder(SizedByFitEncoder(), TEXTS),
        r"a fresh instance cannot be restored the way a trained model is loaded .*Unexpected key.*extra.*"
        r"set_fit_state must rebuild what fit\(\) created"),
    "fit state that JSON cannot store": (
        lambda w: check_encoder(SetFitStateEncoder(), TEXTS),
        r"get_fit_state\(\) is not JSON-serialisable: Object of type set"),
    "head with a no-op set_fit_state": (
        lambda w: _fitted_head(LabelMapHead),
        r"LabelMapHead: a fresh instance restored .*predicts a different preds\['logits'\].*set_fit_state\(\) must"),
    "tensor in a plain attribute (does not move to the GPU)": (
        lambda w: check_encoder(StrayTensorEncoder(), TEXTS),
        r"attribute\(s\) scale hold a tensor that is not a parameter or a registered buffer.*"
        r"self.register_buffer\(name, tensor\)"),
    "tensor created on the CPU in forward": (
        lambda w: _meta_device_run(WrongDeviceFusion),
        r"forward fails after \.to\('meta'\).*Create new tensors on the inputs' device \(device=x.device\)"),
    "encoder output detached": (
        lambda w: check_encoder(DetachedOutputEncoder(), TEXTS),
        r"the output carries no gradient in train mode \(is it detached.*do not detach in forward"),
    "fusion detaches its inputs": (
        lambda w: check_fusion(lambda d, t: DetachingFusion(d, t)),
        r"no gradient reaches the input embeddings \(are they detached\?\).*do not detach the inputs"),
    "head loss detached": (
        lambda w: _fitted_head(DetachedLossHead),
        r"the loss has no gradient \(is it detached, or computed under torch.no_grad\(\)\?\)"),
    "head detaches the fused input": (
        lambda w: _fitted_head(DetachedInputHead),
        r"the loss does not depend on the fused input .*do not detach the fused input"),
    "train() turns gradients back on (freezing undone)": (
        lambda w: check_encoder(UnfreezingEncoder(), TEXTS),
        r"parameter proj.weight has requires_grad=True again after requires_grad_\(False\), train\(\) and "
        r"eval\(\): do not turn gradients back on"),
    "token mask of ints": (
        lambda w: check_encoder(IntMaskEncoder(), TEXTS),
        r"token_mask must be a bool"),
    "heavy import in the plugin module": (
        _heavy_plugin,
        r"importing tp_kit_heavy_plugin imports torch \(tp_kit_heavy_plugin -> tp_kit_heavy_impl -> torch\).*"
        r"register components by import string"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_caught_with_a_message_naming_the_fix(fault: str, write_module) -> None:
    check, message = FAULTS[fault]
    with pytest.raises(ContractError, match=message):
        check(write_module)


def test_the_correct_twin_of_the_fit_state_faults_passes() -> None:
    """The fit-state faults are caught because of the fault, not because fitting is unsupported."""
    emb = check_encoder(VocabEncoder(), TEXTS)
    assert emb.pooled.shape == (3, 8)
    head = LinearHead(8)
    head.fit([{"label": 1}])
    check_head(head, *head_inputs(head))


def test_check_encoder_fits_a_copy_and_leaves_the_encoder_as_it_was() -> None:
    encoder = VocabEncoder()
    check_encoder(encoder, TEXTS)
    assert encoder.vocab == {} and encoder.init_args == ((), {})
    fitted = VocabEncoder()
    fitted.fit(["zzz"])
    check_encoder(fitted, TEXTS, fit=False)  # its own fit state is what gets restored
    assert fitted.vocab == {str(ord("z")): 1}


def test_a_correct_fusion_runs_on_the_meta_device() -> None:
    embs = random_embeddings({"image": 4}, 3)

    def run(module: nn.Module, device: torch.device) -> torch.Tensor:
        return module({m: e.to(device) for m, e in embs.items()}).pooled

    check_device(MeanFusion({"image": 4}), run, device="meta")  # the correct fusion runs on meta tensors


class NoneForMissingFile(NumbersModality):
    """Fault: a missing file is silently loaded as nothing."""

    def load(self, value: Any, base_dir: Path | None = None) -> Any:
        try:
            return super().load(value, base_dir)
        except DataError:
            return []


class NaNIsPresent(NumbersModality):
    """Fault: NaN (an empty CSV cell) is not treated as absent."""

    def is_absent(self, value: Any) -> bool:
        return value is None or (isinstance(value, str) and not value.strip())


def test_modality_faults_are_caught(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1 2")
    with pytest.raises(ContractError, match=r"load\('does-not-exist-a.txt'\) returned \[\] for a file that does "
                                            r"not exist: a missing file must raise"):
        check_modality(NoneForMissingFile, ["a.txt"], tmp_path)
    with pytest.raises(ContractError, match=r"is_absent\(nan\) must be True"):
        check_modality(NaNIsPresent(), ["a.txt"], tmp_path)
    with pytest.raises(ContractError, match=r"load of cell 0 \('b.txt'\) raised DataError: numbers file not found"):
        check_modality(NumbersModality, ["b.txt"], tmp_path)


# ------------------------------------------------------------------------------ plugin modules
UNDOCUMENTED_PLUGIN = '''
import mmkit


@mmkit.hookimpl
def register_fusions(register):
    register("undocumented", "tp_kit_undoc_impl:Undocumented", summary="no Args section")
'''

UNDOCUMENTED_IMPL = '''
class Undocumented:
    """A fusion whose parameters are typed but not documented."""

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool], dim: int = 8) -> None:
        pass
'''


def test_plugin_module_with_an_undocumented_parameter_is_caught(write_module) -> None:
    write_module("tp_kit_undoc_impl", UNDOCUMENTED_IMPL)
    name = write_module("tp_kit_undoc_plugin", UNDOCUMENTED_PLUGIN)
    with pytest.raises(ContractError, match=r"fusion 'undocumented' .*parameter 'dim' is not documented"):
        check_plugin_module(name)
    registry = check_plugin_module(name, require_docs=False)
    assert [c.name for c in registry.list()] == ["undocumented"]


def test_builtin_plugin_modules_are_light_and_documented() -> None:
    registry = check_plugin_module("mmkit_fusion.plugin")
    assert {c.name for c in registry.list("fusion")} >= {"concat", "transformer"}


# ------------------------------------------------------------------------------ the fixture
def test_mmkit_registry_fixture_is_isolated(mmkit_registry, write_plugin) -> None:
    """The fixture comes from mmkit's pytest11 entry point: no import needed."""
    assert mmkit_registry.list() == [] and mmkit_registry.plugins == {}
    name = write_plugin("tp_kit_fixture_plugin", {"fusion": {"mean": f"{__name__}:MeanFusion"}})
    mmkit_registry.register_plugin(__import__(name))
    assert [(c.name, c.plugin) for c in mmkit_registry.list()] == [("mean", name)]
    fusion = mmkit_registry.create("fusion", "mean", context={"input_dims": {"image": 4}}, dim=6)
    assert isinstance(fusion, MeanFusion) and fusion.dim == 6
    with torch.no_grad():
        assert not math.isnan(float(fusion(random_embeddings({"image": 4}, 2)).pooled.sum()))
