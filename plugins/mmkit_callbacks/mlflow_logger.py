"""``mlflow``: the metrics.jsonl records, the resolved recipe and the summary, logged to MLflow.

Opt-in (``[train] callbacks = ["mlflow"]``), offline by default: the tracking store is a local
SQLite file next to the run directories (``<output_dir>/mlflow.db``, what MLflow recommends over
its file store), unless ``tracking_uri`` or ``$MLFLOW_TRACKING_URI`` names another. The MLflow
client is used directly (no global active run), so a notebook's own MLflow runs are left alone.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any

import mmkit
from mmkit_callbacks.logs import MetricsLog

MAX_PARAM = 500  # MLflow's limit on a parameter value's length
BATCH = 100  # MLflow's limit on parameters per log_batch call


def flatten(doc: Any, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.001}}`` -> ``{"train.lr": "0.001"}`` (values cut to MLflow's length limit)."""
    if isinstance(doc, dict):
        out: dict[str, str] = {}
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: str(doc)[:MAX_PARAM]}


class MLflowLogger(MetricsLog):
    """Log a training run to MLflow: the resolved recipe as parameters (``train.lr``,
    ``model.fusion.type``...), every metrics.jsonl record as metrics ``SPLIT/METRIC`` at its step, and
    ``summary.json`` and the resolved recipe as artifacts (``pip install 'mmkit[mlflow]'``).

    Args:
        tracking_uri: an MLflow tracking URI; empty = ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///<output_dir>/mlflow.db`` (view it with ``mlflow ui --backend-store-uri ...``).
            MLflow's file store (``file:./mlruns``) needs ``MLFLOW_ALLOW_FILE_STORE=true``.
        experiment: the experiment name; empty = the recipe's ``run.name``.
        run_name: the MLflow run's name; empty = the run directory's name.
    """

    def __init__(self, tracking_uri: str = "", experiment: str = "", run_name: str = "") -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client: Any = None
        self.run_id = ""

    def check(self, recipe: Any) -> None:
        """Refuse a recipe naming this callback where MLflow is not installed (``mmkit check`` too)."""
        try:
            found = importlib.util.find_spec("mlflow") is not None
        except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
            found = False
        if not found:
            raise mmkit.RecipeError(f"{recipe.source}: the mlflow callback needs MLflow: pip install 'mmkit[mlflow]'")

    def on_fit_start(self, trainer: Any) -> None:
        super().on_fit_start(trainer)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise mmkit.RecipeError("the mlflow callback needs MLflow: pip install 'mmkit[mlflow]'") from exc
        output = Path(trainer.recipe.run["output_dir"]).resolve()
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{output / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        name = self.experiment or trainer.recipe.run["name"]
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(
            name, artifact_location=None if uri.startswith("file:") else (output / "mlartifacts").as_uri())
        run = self.client.create_run(experiment_id, run_name=self.run_name or trainer.run.name,
                                     tags={"mmkit.run_dir": str(trainer.run.path.resolve()),
                                           "mmkit.version": mmkit.__version__})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in sorted(flatten(trainer.recipe.to_dict()).items())]
        params += [Param(f"params.{k}", str(v)) for k, v in trainer.params.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])

    def write(self, trainer: Any, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{record['split']}/{key}", float(value), now, int(record["step"]))
                   for key, value in record["metrics"].items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        super().on_fit_end(trainer, result)
        for path in (trainer.run.summary_file, trainer.run.recipe):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "KILLED" if result.interrupted else "FINISHED")
        self.run_id = ""

    def teardown(self, trainer: Any) -> None:
        if self.client is not None and self.run_id:  # training failed before on_fit_end
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id = ""
