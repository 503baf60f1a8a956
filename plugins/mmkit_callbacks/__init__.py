"""Built-in training callbacks: metrics.jsonl, TensorBoard, best checkpoint, early stopping, progress,
summary table. Registered through the ``register_callbacks`` hook like any plugin's."""
