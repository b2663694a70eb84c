"""Where each stage's output lives under the storage root, and when it counts as finished.

    <storage>/
      datasets/embedded-<dataset-key>/        the embedded images (when dataset.root is null)
      datasets/<dataset-key>/ingest/          validated per-split index (Parquet) + skip report
      models/standin-<dataset-key>-p<patch>/  the embedded default's foundation stand-in
      models/proxy-<dataset-key>/             the embedded default's evaluator network
      tokenizers/<tokenizer-key>/             Ray Train run (checkpoints) + export/
      tokenizer_eval/<tokenizer-eval-key>/    reconstruction metrics, reconstruction grid
      caches/<cache-key>/                     Parquet shards + manifest.json + skip report
      generators/<generator-key>/             Ray Train run (checkpoints) + export/
      generator_eval/<generator-eval-key>/    samples, metrics, sample grid
      sweeps/<sweep-name>/                    the Tune experiment and the frontier outputs
      mlflow/                                 SQLite tracking store + artifacts (local storage)

A stage directory is finished when its `DONE.json` exists. It is written last, atomically, and
carries the stage's summary, so a rerun skips the stage and reads its results from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.storage.store import Storage

DONE = "DONE.json"
# A training run's world-size-independent export, what later stages consume.
EXPORT_DIR = "export"
LATENT_STATS_FILE = "latent_stats"
MODEL_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"


@dataclass(frozen=True)
class Artifacts:
    storage: Storage

    # Relative directories --------------------------------------------------------------------
    @staticmethod
    def embedded_dataset(dataset_key: str) -> str:
        return f"datasets/embedded-{dataset_key}"

    @staticmethod
    def ingest(dataset_key: str) -> str:
        return f"datasets/{dataset_key}/ingest"

    @staticmethod
    def standin(dataset_key: str, patch_size: int) -> str:
        return f"models/standin-{dataset_key}-p{patch_size}"

    @staticmethod
    def proxy_evaluator(dataset_key: str) -> str:
        return f"models/proxy-{dataset_key}"

    @staticmethod
    def tokenizer(key: str) -> str:
        return f"tokenizers/{key}"

    @staticmethod
    def tokenizer_eval(key: str) -> str:
        return f"tokenizer_eval/{key}"

    @staticmethod
    def cache(key: str) -> str:
        return f"caches/{key}"

    @staticmethod
    def generator(key: str) -> str:
        return f"generators/{key}"

    @staticmethod
    def generator_eval(key: str) -> str:
        return f"generator_eval/{key}"

    @staticmethod
    def tokenizer_weights(key: str) -> str:
        """The tokenizer's exported `AutoencoderKL` inference weights."""
        return f"tokenizers/{key}/{EXPORT_DIR}/{MODEL_WEIGHTS}"

    @staticmethod
    def tokenizer_latent_stats(key: str) -> str:
        """Latent statistics a tokenizer exports itself (REPA-E's BatchNorm running statistics,
        `mean` and `std` per channel); the latent cache records them instead of its own."""
        return f"tokenizers/{key}/{EXPORT_DIR}/{LATENT_STATS_FILE}.safetensors"

    @staticmethod
    def generator_ema_weights(key: str) -> str:
        """The generator's exported EMA weights (what sampling uses, as the reference)."""
        return f"generators/{key}/{EXPORT_DIR}/{EMA_WEIGHTS}"

    @staticmethod
    def sweep(name: str) -> str:
        return f"sweeps/{name}"

    # Completion markers ----------------------------------------------------------------------
    def is_done(self, rel: str) -> bool:
        return self.storage.exists(rel, DONE)

    def read_done(self, rel: str) -> dict:
        return self.storage.read_json(rel, DONE)

    def mark_done(self, rel: str, summary: dict) -> None:
        self.storage.write_json(summary, rel, DONE)
