"""Pure-PyTorch workloads: models, losses, samplers, metrics, datasets.

Nothing under this package imports Ray, MLflow or DeepSpeed; the orchestrator wraps it.
"""
