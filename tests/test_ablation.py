"""Modality ablation: removing a field marks it absent in every row (the fusion's missing-modality
path), metrics are recomputed, the drop is full - ablated, and attention weights are averaged.

The mechanics are checked on a small model that is built and fitted but not trained (the identities
hold for any weights); a tiny trained run checks loading from a run directory and ``mmkit ablate``.
Whether the numbers mean something -- both modalities needed on the ``shapes`` claim task -- is shown
in docs/compare.md with the quickstart model (a model that learns the claim task takes minutes on CPU).
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from mmkit._internal.ablation import ablate, ablate_model, load_run_model, without
from mmkit._internal.assembly import assemble, load_splits, make_fields, plan_data
from mmkit._internal.recipe import load_recipe
from mmkit._internal.registry import get_registry
from mmkit._internal.trainer import train


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared 2-core machine: one torch thread avoids oversubscription (measured:
    # an ablation pass took 6.7 s with 2 threads under load and 0.2 s with 1)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


ATTENTION = 'model.fusion={ type = "attention", dim = 16 }'  # the tiny recipe, with attention fusion


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, write_tiny_recipe):
    """(recipe, fitted untrained model, plan) of the tiny attention-fusion classifier."""
    root = tmp_path_factory.mktemp("ablation")
    path = write_tiny_recipe(root / "tiny.toml", "run.name=abl", "run.seed=1", "data.options.n_val=24",
                             ATTENTION)
    recipe = load_recipe(path)
    registry = get_registry()
    torch.manual_seed(0)
    plan = plan_data(recipe, load_splits(recipe, registry))
    model = assemble(recipe, registry, plan).eval()
    return recipe, model, plan


def _run(model, plan, rows):
    fields = make_fields(model, plan, get_registry())
    return ablate_model(model, fields, plan.target_columns, rows, batch_size=8)


def test_without_marks_every_row_absent(tiny):
    _, model, plan = tiny
    from mmkit._internal.data import Collator, MultimodalDataset

    fields = make_fields(model, plan, get_registry())
    rows = plan.splits.splits["val"][:5]
    ds = MultimodalDataset(rows, fields, model.head, plan.target_columns, base_dir=None, source="t")
    batch = Collator(fields, model.head)([ds[i] for i in range(5)])
    cut = without(batch, "image")
    assert cut.inputs["image"] is None and not cut.present["image"].any()
    assert cut.inputs["text"] is batch.inputs["text"] and cut.present["text"].all()
    assert batch.present["image"].all()  # the original batch is untouched
    with torch.no_grad():
        _, fused = model(cut, return_fused=True)
    assert torch.equal(fused.weights[:, fused.weight_names.index("image")], torch.zeros(5))


def test_ablation_equals_data_without_the_modality_and_reports_drops(tiny):
    recipe, model, plan = tiny
    rows = plan.splits.splits["val"]
    result = ablate(model, recipe=recipe, device="cpu")
    assert result["split"] == "val" and result["samples"] == len(rows) == 24
    assert result["fields"] == ["image", "text"] and result["metric"] == "accuracy"
    assert set(result["full"]) == {"loss", "accuracy", "macro_f1"}
    full = _run(model, plan, rows)["full"]
    assert result["full"] == pytest.approx(full)
    for name, column in (("image", "image"), ("text", "claim")):
        ab = result["ablations"][name]
        # removing a field == evaluating data in which that column is empty in every row
        blank = [{**r, column: None} for r in rows]
        assert ab["metrics"] == pytest.approx(_run(model, plan, blank)["full"])
        for metric, value in ab["metrics"].items():
            assert ab["drop"][metric] == pytest.approx(result["full"][metric] - value)
        assert ab["metrics"]["loss"] != pytest.approx(result["full"]["loss"], abs=1e-6)  # the input mattered


def test_attention_weights_are_averaged_over_rows_with_any_input(tiny):
    recipe, model, plan = tiny
    rows = plan.splits.splits["val"]
    result = ablate(model, rows=rows, recipe=recipe, device="cpu")
    att = result["attention"]
    assert att["rows"] == 24
    assert sum(att["mean"].values()) == pytest.approx(1.0, abs=1e-5)
    assert att["when_present"] == pytest.approx(att["mean"])
    # half the rows lack the claim: they weight the image fully, the rest split their weight
    mixed = [{**r, "claim": None} if i % 2 else r for i, r in enumerate(rows)]
    att2 = ablate(model, rows=mixed, recipe=recipe, device="cpu")["attention"]
    assert sum(att2["mean"].values()) == pytest.approx(1.0, abs=1e-5)
    assert att2["when_present"]["image"] == pytest.approx(att2["mean"]["image"])
    assert att2["mean"]["text"] == pytest.approx(att2["when_present"]["text"] * 12 / 24)
    assert att2["mean"]["image"] == pytest.approx((12 * 1.0 + 12 * (1 - att2["when_present"]["text"])) / 24)


def test_a_fusion_without_weights_reports_none(tiny):
    recipe, _, plan = tiny
    from dataclasses import replace

    concat = replace(recipe, fusion=replace(recipe.fusion, type="concat", params={"dim": 16}))
    model = assemble(concat, get_registry(), plan).eval()
    result = ablate(model, recipe=concat, device="cpu")
    assert result["attention"] is None and set(result["ablations"]) == {"image", "text"}


def test_ablate_a_run_directory_and_the_cli(tiny):
    recipe, _, _ = tiny
    run = train(recipe, quiet=True).run_dir
    loaded = load_run_model(run)
    assert loaded.checkpoint.name == "best" or loaded.checkpoint.name == "last"
    direct = ablate(loaded.model, recipe=loaded.recipe, split="test", device="cpu")
    from mmkit._internal.cli_compare import ablate_cmd

    result = CliRunner().invoke(ablate_cmd, [str(run), "--split", "test", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["run_dir"] == str(run) and out["samples"] == 8 and out["split"] == "test"
    assert out["model"] == str(run) and out["source"] == "shapes:test" and out["weights"]["kind"] == "attention"
    assert out["full"] == pytest.approx(direct["full"])
    assert out["ablations"]["text"]["metrics"] == pytest.approx(direct["ablations"]["text"]["metrics"])
    table = CliRunner().invoke(ablate_cmd, [str(run), "--device", "cpu"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "without image" in table.output and "mean attention weight" in table.output
    assert f"modality ablation of {run} on shapes:val" in table.output
    missing = CliRunner().invoke(ablate_cmd, [str(run), "--split", "nope"])
    assert missing.exit_code != 0 and "nope" in str(missing.exception)


def test_eval_ablate_cli_reports_each_modality(tmp_path, write_tiny_recipe):
    """`mmkit eval MODEL --data DATASET --ablate` runs the same ablation from a saved model."""
    import json as _json

    from click.testing import CliRunner

    from mmkit._internal.cli import cli
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.trainer import train

    # seed 0 and lr 3e-4: the recipe defaults this run has always used
    recipe = write_tiny_recipe(tmp_path / "tiny.toml", "run.name=abl", "run.seed=0", "data.options.n_test=16",
                               ATTENTION, "train.max_steps=2", "train.lr=3e-4")
    run = train(load_recipe(recipe), quiet=True).run_dir
    result = CliRunner().invoke(cli, ["eval", str(run), "--data", "shapes", "--split", "test", "--ablate", "--json"])
    assert result.exit_code == 0, result.output
    report = _json.loads(result.output)
    assert set(report["ablations"]) == {"image", "text"}
    assert report["samples"] == 16
    for name, part in report["ablations"].items():
        for metric, drop in part["drop"].items():
            assert drop == pytest.approx(report["full"][metric] - part["metrics"][metric]), (name, metric)
    assert sum(report["attention"]["mean"].values()) == pytest.approx(1.0, abs=1e-5)


def test_weights_that_do_not_sum_to_one_are_reported_as_gates(tiny):
    """A gated fusion's sigmoid gates are not attention: the report says gate, not attention weight."""
    from mmkit._internal.ablation import _Weights
    from mmkit._internal.cli_compare import print_ablation

    recipe, model, plan = tiny
    result = ablate(model, recipe=recipe, device="cpu")
    assert result["weights"]["kind"] == "attention" and result["attention"] == result["weights"]
    assert result["model"] == "model 'abl' (in memory)" and result["source"] == "shapes:val"
    gates = _Weights()
    everywhere = torch.ones(4, dtype=torch.bool)
    batch = type("B", (), {"present": {"image": everywhere, "text": everywhere}})
    gates.update(torch.tensor([[0.9, 0.8], [0.2, 0.1], [0.5, 0.5], [1.0, 1.0]]), ["image", "text"], batch)
    report = gates.result()
    assert report["kind"] == "gate" and report["mean"] == pytest.approx({"image": 0.65, "text": 0.6})
    shown = {**result, "weights": report, "attention": None}
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        print_ablation(shown)
    assert "mean gate value" in out.getvalue() and "attention" not in out.getvalue()
