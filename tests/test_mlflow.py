"""The ``mlflow`` training callback logs the recipe, the metrics and the summary to a local store, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mmkit

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def tiny(tmp_path: Path, callbacks: list[Any]) -> dict[str, Any]:
    return {
        "run": {"name": "tracked", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "data": {"dataset": "shapes", "options": {"n_train": 32, "n_val": 16, "n_test": 16, "image_size": 32}},
        "model": {"encoders": {"image": {"type": "timm", "model": "test_resnet"},
                               "text": {"type": "text-transformer", "dim": 16, "layers": 1}},
                  "fusion": {"type": "concat", "dim": 16}, "head": {"type": "classification"}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "log_every": 1, "callbacks": callbacks},
    }


def check_logged(uri: str, run_dir: Path) -> None:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.tags["mmkit.run_dir"] == str(run_dir.resolve())
    params = run.data.params
    assert params["train.lr"] == "0.001" and params["model.fusion.type"] == "concat"
    assert params["data.options.n_train"] == "32" and int(params["params.trainable"]) > 0
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == [1, 2, 3, 4]  # log_every = 1: every one of the 4 steps
    summary = json.loads((run_dir / "summary.json").read_text())
    (val,) = [m for m in client.get_metric_history(run.info.run_id, "val/accuracy") if m.step == 4]
    assert val.value == pytest.approx(summary["final"]["val"]["accuracy"])
    final = client.get_metric_history(run.info.run_id, "final/test.accuracy")
    assert final[0].value == pytest.approx(summary["final"]["test"]["accuracy"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"summary.json", "recipe.resolved.toml"}


def test_mlflow_logs_params_metrics_and_artifacts_to_a_file_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in to its file store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    model = mmkit.fit(tiny(tmp_path, [{"type": "mlflow", "tracking_uri": uri}]), quiet=True)
    check_logged(uri, model.run_dir)
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_the_callback_is_checked_like_any_component(tmp_path: Path) -> None:
    with pytest.raises(mmkit.RecipeError, match=r"train\.callbacks\[0\].*tracking_url"):
        mmkit.fit(tiny(tmp_path, [{"type": "mlflow", "tracking_url": "x"}]), quiet=True)


def test_a_recipe_naming_mlflow_is_refused_before_training_where_mlflow_is_missing(tmp_path: Path) -> None:
    code = (f"import sys; sys.modules['mlflow'] = None\nimport mmkit\n"  # what an environment without MLflow sees
            f"try:\n    mmkit.fit({tiny(tmp_path, ['mlflow'])!r}, quiet=True)\n"
            f"except mmkit.RecipeError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "refused:" in done.stdout and "pip install 'mmkit[mlflow]'" in done.stdout, done.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_the_default_store_is_a_local_sqlite_file_next_to_the_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = mmkit.fit(tiny(tmp_path, ["mlflow"]), quiet=True)
    db = tmp_path / "runs" / "mlflow.db"
    assert db.is_file()
    check_logged(f"sqlite:///{db}", model.run_dir)
