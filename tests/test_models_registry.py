"""The model registry: built-in cards build, names are safe, versions are unique, resolution, listing.

Registry operations are file operations (no torch); the run directories here hold a real resolved
recipe and opaque weight bytes. Loading real trained models is in test_predictor.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_kit import RESOLVED, make_run

from mmkit._internal import models
from mmkit._internal.cli_models import models_group, register_cmd
from mmkit._internal.errors import MmkitError

CARDS = ["autoencoder-fusion", "claim-classifier", "clip-tiny", "shapes-captioner", "tabular-text-regressor"]

@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "registry"
    monkeypatch.setenv("MMKIT_REGISTRY", str(path))
    return path


# ----------------------------------------------------------------------------------- built-in cards
def test_models_json_lists_every_builtin_card(reg: Path) -> None:
    result = CliRunner().invoke(models_group, ["--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    builtin = {r["name"]: r for r in rows if r["kind"] == "builtin"}
    assert set(CARDS) <= set(builtin)
    assert builtin["claim-classifier"]["task"] == "classification"
    assert builtin["clip-tiny"]["components"]["head"] == "contrastive"
    assert builtin["tabular-text-regressor"]["components"]["encoders"] == {"tabular": "tabular-mlp",
                                                                          "text": "text-transformer"}
    for row in builtin.values():
        assert row["description"] and row["version"] == 1
        assert row["task"] == row["components"]["head"]  # a card's task is its head


SMALL = {"shapes": ["data.options.n_train=8", "data.options.n_val=4", "data.options.n_test=4",
                    "data.options.image_size=32"],
         "toy-tabular": ["data.options.n_train=16", "data.options.n_val=4", "data.options.n_test=4"]}


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS)
def test_each_builtin_card_trains_and_evaluates_at_tiny_scale(card: str, tmp_path: Path) -> None:
    """Each card is also a runnable example recipe: two optimizer steps, then its head's metrics."""
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    data = models.builtin_card(card)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\ncard = "{card}"\n')
    over = [*SMALL[data["data"]["dataset"]], "train.max_steps=2", "train.batch_size=4", "train.epochs=1",
            f"run.output_dir={(tmp_path / 'runs').as_posix()}", "run.name=card"]
    result = train(load_recipe(recipe, over), quiet=True)
    assert result.summary["steps"] == 2
    val = result.summary["final"]["val"]
    assert val and all(v == v for v in val.values()), val  # metrics computed, none NaN
    assert (result.run_dir / "checkpoints" / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("card", CARDS)
def test_each_builtin_card_builds(card: str, tmp_path: Path) -> None:
    """`mmkit check` on a recipe that only names the card (plus small data) builds the model."""
    from mmkit._internal.cli_run import check_cmd

    data = models.builtin_card(card)
    assert data is not None and data["name"] == card
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\ncard = "{card}"\n')
    result = CliRunner().invoke(check_cmd, [str(recipe), *sum((["--set", s] for s in SMALL[data["data"]["dataset"]]),
                                                              [])])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "the model builds" in result.output
    assert f"head: {data['model']['head']['type']}" in result.output
    assert f"fusion: {data['model']['fusion']['type']}" in result.output
    for field, table in data["model"]["encoders"].items():
        assert f"{field}: {table['type']}" in result.output


def test_models_show_builtin_prints_its_recipe(reg: Path) -> None:
    result = CliRunner().invoke(models_group, ["show", "clip-tiny"])
    assert result.exit_code == 0, result.output
    assert 'model = "clip-tiny"' in result.output and 'type = "contrastive"' in result.output


# ----------------------------------------------------------------------------------- names
@pytest.mark.parametrize("bad", ["../../etc", "..", ".hidden", "a/b", "a\\b", "", "-x", "name with space", "x@1"])
def test_unsafe_names_are_rejected(bad: str, tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(MmkitError, match="invalid model name"):
        models.register(run, bad)
    assert not reg.exists() or not any(reg.iterdir()), "nothing may be written for a rejected name"
    assert not (tmp_path.parent / "etc").exists()


def test_register_cli_rejects_escape_with_clear_error(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    result = CliRunner().invoke(register_cmd, [str(run), "--name", "../../etc"])
    assert result.exit_code != 0
    assert "invalid model name '../../etc'" in str(result.exception)


@pytest.mark.parametrize("ref", ["x@0", "x@-1", "x@v2", "x@1.5"])
def test_bad_versions_are_rejected(ref: str) -> None:
    with pytest.raises(MmkitError, match="invalid model version"):
        models.parse_ref(ref)


# ----------------------------------------------------------------------------------- register
def test_register_copies_files_and_writes_card(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    card = models.register(run, "claims")
    folder = reg / "claims" / "1"
    assert card["version"] == 1 and card["name"] == "claims" and card["task"] == "classification"
    assert (folder / "model.safetensors").read_bytes() == b"weights-v1best"
    assert (folder / "recipe.resolved.toml").read_text() == RESOLVED
    assert json.loads((folder / "fit_state.json").read_text()) == {"head": {"labels": [0, 1]}, "encoders": {}}
    assert (folder / "summary.json").is_file() and (folder / "metrics.jsonl").is_file()
    on_disk = json.loads((folder / "card.json").read_text())
    assert on_disk == card
    import hashlib

    assert card["sha256"]["model.safetensors"] == hashlib.sha256(b"weights-v1best").hexdigest()
    assert card["metrics"]["final"]["test"]["accuracy"] == 0.75 and card["metrics"]["best"]["value"] == 0.8
    assert card["checkpoint"] == "best" and card["step"] == 3
    # the dataset's default columns, overridden by the recipe's [data] columns
    assert card["columns"] == {"image": "image", "text": "caption", "label": "label"}
    from datetime import datetime

    assert datetime.fromisoformat(card["created"]).tzinfo is not None


def test_register_last_checkpoint_and_fallback(tmp_path: Path, reg: Path) -> None:
    card = models.register(make_run(tmp_path / "a"), "m", checkpoint="last")
    assert card["checkpoint"] == "last" and card["step"] == 5
    assert (reg / "m" / "1" / "model.safetensors").read_bytes() == b"weights-v1last"
    no_best = models.register(make_run(tmp_path / "b", best=False), "m")  # no validation split: no best
    assert no_best["checkpoint"] == "last" and no_best["version"] == 2


def test_two_registers_get_versions_1_and_2_and_resolve(tmp_path: Path, reg: Path) -> None:
    first = models.register(make_run(tmp_path / "a", weights=b"one"), "claims")
    second = models.register(make_run(tmp_path / "b", weights=b"two"), "claims")
    assert (first["version"], second["version"]) == (1, 2)
    assert models.resolve("claims").folder == reg / "claims" / "2"
    assert models.resolve("claims@latest").folder == reg / "claims" / "2"
    assert models.resolve("claims@1").weights.read_bytes() == b"onebest"
    assert models.resolve(str(reg / "claims")).folder == reg / "claims" / "2"  # a model folder: latest
    assert models.resolve(str(reg / "claims" / "1")).card["version"] == 1
    with pytest.raises(models.ModelNotFoundError, match="no version 3; versions: 1, 2"):
        models.resolve("claims@3")


def test_concurrent_registers_in_two_processes_get_distinct_versions(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    code = ("import sys, json; from mmkit._internal.models import register; "
            "print(json.dumps(register(sys.argv[1], 'race', registry=sys.argv[2])['version']))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(run), str(reg)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert sorted(int(o[0]) for o in outs) == [1, 2]


def test_concurrent_registers_in_threads_get_distinct_versions(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    versions: list[int] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        barrier.wait()
        versions.append(models.register(run, "race")["version"])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert [c["version"] for c in models.list_registered()] == [1, 2, 3, 4, 5, 6]


def test_incomplete_version_is_ignored_and_skipped(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    models.register(run, "m")
    (reg / "m" / "2").mkdir()  # a crashed registration: no card.json
    assert models.resolve("m").card["version"] == 1
    assert models.register(run, "m")["version"] == 3
    assert [c["version"] for c in models.list_registered()] == [1, 3]


def test_checksum_mismatch_names_the_file(tmp_path: Path, reg: Path) -> None:
    models.register(make_run(tmp_path), "m")
    ref = models.resolve("m")
    ref.verify()  # untouched: fine
    weights = reg / "m" / "1" / "model.safetensors"
    weights.write_bytes(b"tampered")
    with pytest.raises(models.ChecksumError, match=r"model\.safetensors: checksum mismatch for model m@1"):
        models.resolve("m").verify()


def test_card_without_sha256_is_refused(tmp_path: Path, reg: Path) -> None:
    models.register(make_run(tmp_path), "m")
    card_path = reg / "m" / "1" / "card.json"
    card = json.loads(card_path.read_text())
    del card["sha256"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(models.ChecksumError, match="no sha256"):
        models.resolve("m")


# ----------------------------------------------------------------------------------- resolution
def test_resolution_errors_are_helpful(tmp_path: Path, reg: Path) -> None:
    models.register(make_run(tmp_path), "claims")
    with pytest.raises(models.ModelNotFoundError, match="did you mean claims"):
        models.resolve("claimz")
    with pytest.raises(models.ModelNotFoundError, match="built-in card"):
        models.resolve("clip-tiny")
    with pytest.raises(models.ModelNotFoundError, match="no such model folder"):
        models.resolve(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="not a model"):
        models.resolve(str(tmp_path / "empty"))


def test_run_directory_resolves_to_its_best_checkpoint(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    ref = models.resolve(str(run))
    assert ref.kind == "run" and ref.checkpoint == "best" and ref.sha256 is None
    assert ref.weights == run / "checkpoints" / "best" / "model.safetensors"
    assert ref.load_fit_state() == {"head": {"labels": [0, 1]}, "encoders": {}}
    assert models.resolve(str(run), checkpoint="last").checkpoint == "last"
    assert ref.card["task"] == "classification" and ref.card["metrics"]["best"]["value"] == 0.8


def test_registry_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMKIT_REGISTRY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert models.registry_dir() == tmp_path / "xdg" / "mmkit" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.registry_dir() == tmp_path / "home" / ".local" / "share" / "mmkit" / "models"
    monkeypatch.setenv("MMKIT_REGISTRY", str(tmp_path / "env"))
    assert models.registry_dir() == tmp_path / "env"
    assert models.registry_dir(tmp_path / "flag") == tmp_path / "flag"


# ----------------------------------------------------------------------------------- listing
def test_models_lists_registered_with_metrics(tmp_path: Path, reg: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(register_cmd, [str(make_run(tmp_path)), "--name", "claims"])
    assert result.exit_code == 0, result.output
    assert "registered claims@1" in result.output
    rows = json.loads(runner.invoke(models_group, ["--json"]).output)
    mine = [r for r in rows if r["kind"] == "registered"]
    assert len(mine) == 1 and mine[0]["name"] == "claims" and mine[0]["version"] == 1
    assert mine[0]["metrics"]["final"]["test"]["accuracy"] == 0.75 and mine[0]["created"]
    table = runner.invoke(models_group, [], env={"COLUMNS": "200"}).output
    assert "claims" in table and "test.accuracy 0.75" in table and "claim-classifier" in table
    shown = runner.invoke(models_group, ["show", "claims@1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "claims@1 (registered, task classification)" in shown.output and "sha256" in shown.output
    as_json = json.loads(runner.invoke(models_group, ["show", "claims", "--json"]).output)
    assert as_json["kind"] == "registered" and as_json["path"] == str(reg / "claims" / "1")


def test_listing_and_registering_import_no_torch(tmp_path: Path, reg: Path) -> None:
    run = make_run(tmp_path)
    code = ("import sys; from mmkit._internal import models; models.register(sys.argv[1], 'x', registry=sys.argv[2]); "
            "models.list_models(sys.argv[2]); models.show('x', sys.argv[2]); "
            "heavy = [m for m in ('torch', 'timm', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code, str(run), str(reg)], capture_output=True, text=True,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr
