"""Registers the built-in training callbacks (lazily, by import string)."""

import mmkit


@mmkit.hookimpl
def register_callbacks(register):
    register("metrics-log", "mmkit_callbacks.logs:MetricsLog",
             summary="metrics.jsonl: training loss every log_every steps, evaluations, epochs, the final result")
    register("tensorboard", "mmkit_callbacks.logs:TensorBoard",
             summary="The same records as TensorBoard scalars, with train.tensorboard = true")
    register("best-checkpoint", "mmkit_callbacks.checkpoints:BestCheckpoint",
             summary="checkpoints/best whenever the monitored validation metric improves")
    register("early-stopping", "mmkit_callbacks.checkpoints:EarlyStopping",
             summary="Stop after train.early_stopping evaluations without improvement")
    register("progress", "mmkit_callbacks.progress:Progress",
             summary="Progress bar on a terminal; a plain line every log_every steps otherwise (CI, SLURM)")
    register("summary-table", "mmkit_callbacks.progress:SummaryTable",
             summary="The final metrics, speed and next steps, printed when training ends")
    register("mlflow", "mmkit_callbacks.mlflow_logger:MLflowLogger",
             summary="Opt-in: the recipe as parameters, metrics.jsonl records as metrics, the summary as an "
                     "artifact, in MLflow (local SQLite by default; pip install 'mmkit[mlflow]')")
