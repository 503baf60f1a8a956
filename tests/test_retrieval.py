"""The retrieval protocol (``mmkit.Retrieval``): what a head declares to be searchable. The contrastive
head implements it, and a third-party head that implements it takes part in ``search`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mmkit
from mmkit.testing import check_head, check_retrieval, random_embeddings

pytestmark = pytest.mark.usefixtures("clean_registry")

# A third-party retrieval head: its own prediction keys and sides, nothing in common with the
# contrastive head but the protocol.
DUAL_HEAD = '''
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import mmkit


class DualHead(mmkit.Head):
    """Projects two modalities into one space; loss pulls pairs together.

    Args:
        left: first modality.
        right: second modality.
        width: width of the shared space.
    """

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, left: str = "text",
                 right: str = "image", width: int = 4) -> None:
        super().__init__()
        dims = dict(modality_dims or {})
        self.left, self.right = left, right
        self.proj = nn.ModuleDict({left: nn.Linear(dims[left], width), right: nn.Linear(dims[right], width)})

    retrieval_modalities = property(lambda self: (self.left, self.right))

    def retrieval_embeddings(self, preds: Mapping[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (preds["vec:" + m], preds["has:" + m]) for m in (self.left, self.right)}

    def forward(self, fused: mmkit.Fused, batch: mmkit.Batch) -> mmkit.Output:
        vec = {m: F.normalize(self.proj[m](fused.inputs[m].pooled), dim=-1) for m in (self.left, self.right)}
        both = fused.inputs[self.left].present & fused.inputs[self.right].present
        loss = None
        if batch.targets is not None:
            loss = (1 - (vec[self.left] * vec[self.right]).sum(-1))[both].mean()
        preds = {**{"vec:" + m: v for m, v in vec.items()},
                 **{"has:" + m: fused.inputs[m].present for m in vec}}
        return mmkit.Output(loss, preds)

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{} for _ in range(preds["vec:" + self.left].shape[0])]
'''

def test_the_contrastive_head_declares_retrieval_and_passes_the_check():
    head = mmkit.create("head", "contrastive", context={"input_dim": 8, "modality_dims": {"image": 6, "text": 4}},
                        proj_dim=5)
    assert isinstance(head, mmkit.Retrieval) and head.retrieval_modalities == ("image", "text")
    fused = mmkit.Fused(torch.randn(3, 8), inputs=random_embeddings({"image": 6, "text": 4}, 3))
    batch = mmkit.Batch({}, {"image": torch.ones(3, dtype=torch.bool)}, {}, torch.arange(3))
    out = check_head(head, fused, batch)  # includes check_retrieval, since the head declares it
    pairs = check_retrieval(head, out.preds, 3)
    assert pairs["image"][0].shape == (3, 5) and pairs["text"][1].dtype == torch.bool


def test_a_third_party_retrieval_head_takes_part_in_search(tmp_path: Path, write_module, write_plugin,
                                                           write_tiny_recipe):
    write_module("tp_dual_impl", DUAL_HEAD)
    plugin = write_plugin("tp_dual", {"head": {"tp-dual": "tp_dual_impl:DualHead"}})
    recipe = write_tiny_recipe(tmp_path / "dual.toml", 'model.head={ type = "tp-dual" }', "train.max_steps=1",
                               'data.columns={ image = "image", text = "caption" }')
    from mmkit._internal.cli import cli

    result = CliRunner().invoke(cli, ["-p", plugin, "run", str(recipe), "--quiet"])
    assert result.exit_code == 0, result.output
    predictor = mmkit.load(str(tmp_path / "runs" / "tiny"))
    rows = mmkit.create("dataset", "shapes", n_train=5, n_val=0, n_test=0, image_size=32).splits["train"]
    texts = [{"caption": r["caption"]} for r in rows]
    images = [{"image": r["image"]} for r in rows]
    hits = predictor.search(texts, images, k=2)  # the head's first side ("text") queries the other
    head = predictor.model.head
    with torch.no_grad():
        t = torch.nn.functional.normalize(head.proj["text"](torch.from_numpy(predictor.embed(texts, "text"))), dim=-1)
        i = torch.nn.functional.normalize(head.proj["image"](torch.from_numpy(predictor.embed(images, "image"))),
                                          dim=-1)
    scores = t @ i.T
    for q, hit in enumerate(hits):
        assert [h["index"] for h in hit] == torch.argsort(scores[q], descending=True)[:2].tolist()
        assert [h["score"] for h in hit] == pytest.approx(scores[q].sort(descending=True).values[:2].tolist(),
                                                          abs=1e-5)
    with pytest.raises(mmkit.MmkitError, match="query_modality must be one of 'text', 'image', got 'audio'"):
        predictor.search(texts, images, query_modality="audio")
    # a head that does not declare the protocol is refused with a message naming it
    predictor.model.head = mmkit.create("head", "classification", context={"input_dim": 16, "modality_dims": {}})
    with pytest.raises(mmkit.MmkitError, match=r"search needs a head that declares mmkit.Retrieval"):
        predictor.search(texts, images)
