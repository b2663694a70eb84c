"""Distributed training of both workloads on Ray Train V2 + DeepSpeed ZeRO.

Driver API (for the sweep, `driver.py`):
    train_tokenizer(cfg, storage, ingested, *, run_ref=None, callbacks=None) -> TrainResult
    train_generator(cfg, storage, cache_manifest, *, ingested=None, ...) -> TrainResult
Worker entry point: `train_loop_per_worker(config)` (`loop.py`).

No re-exports here: `plan.py` is read by the CLI's dry run and cost plan, and importing this
package must not import Ray (the CLI sets Ray's loopback switch before Ray is first imported).
"""
