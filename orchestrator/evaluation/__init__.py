"""Evaluation: reconstruction and generation jobs on Ray Data, the evaluator networks, sample
generation, honest metric names and the frontier report (Pareto chart, CSV, table)."""
