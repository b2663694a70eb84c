"""The latent cache's worker: one tokenizer per actor, whole shards in, shard files out.

Decode placement: images are decoded inside the encoding actor, on a small thread pool that
prepares sub-batch k+1 while the model encodes sub-batch k (Pillow and torch both release the
GIL). A separate CPU `map_batches` stage would scale decoding over every CPU of the cluster, but
its images would reach the actors in arbitrary pieces, and a shard (the unit of atomic write
and of resume) could then only be assembled after a barrier. With `cpus_per_worker` decode
threads per GPU actor (4 by default), decoding roughly keeps pace with the f16 encoder at 256 px:
an ImageNet JPEG takes ~5-8 ms to decode and crop on one thread, the fp32 encoder ~130 GFLOP per
image, i.e. a few ms per image and its flip on one GPU. On CPU the encoder dominates by far
(the benchmark's plain loop spends >90 % of its time in it), so the overlap is all that matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import ray
import torch

from orchestrator.data.images import load_image
from orchestrator.data.shards import (
    ChannelMoments,
    ShardWriter,
    from_storage,
    moment_columns,
    shard_schema,
    tensor_column,
    to_storage,
)
from orchestrator.storage.store import Storage
from orchestrator.sweep import budget
from workloads.families import TokenizerSpec, get_family


@torch.inference_mode()
def encode_moments(
    model: torch.nn.Module, images: torch.Tensor, flip: bool, deterministic: bool = False
) -> dict[str, torch.Tensor]:
    """Posterior mean and (clamped) logvar of `images`, and of their horizontal flips; the mean
    alone for a deterministic encoder (RAE).

    Image and flip go through the encoder as one batch of 2B: one launch instead of two.
    """
    # Contiguous NCHW whatever the caller's layout: channels_last input selects other conv
    # kernels, and the cache promises the same moments as any other encode of these images.
    images = images.contiguous()
    batch = torch.cat([images, torch.flip(images, dims=[-1])]) if flip else images
    posterior = model.encode(batch)
    count = images.shape[0]
    names = ("mean",) if deterministic else ("mean", "logvar")
    moments = {name: getattr(posterior, name)[:count] for name in names}
    if flip:
        moments.update({f"{name}_flip": getattr(posterior, name)[count:] for name in names})
    return moments


def stats_noise(seed: int, row: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The epsilon of the statistics sample of ingest row `row`: fixed by (seed, row) alone, so
    the statistics do not depend on batching, actor count or which run wrote the shard."""
    return torch.from_numpy(np.random.default_rng([seed, 2, row]).standard_normal(shape))


class ShardEncoder:
    """Encodes shard descriptors and writes their shard files (one tokenizer per instance).

    Plain Python: `RayShardEncoder` is the Ray Data actor; the benchmark's single-process
    baseline runs this class directly, so both sides do exactly the same work.
    """

    def __init__(
        self,
        *,
        state_dict: dict[str, torch.Tensor],
        tokenizer: TokenizerSpec,
        device: str,
        torch_threads: int,
        decode_threads: int,
        resolution: int,
        max_pixels: int,
        storage_uri: str,
        cache_rel: str,
        cache_dtype: str,
        flip: bool,
        batch_size: int,
        stats_seed: int,
    ):
        torch.set_num_threads(torch_threads)
        self.device = torch.device(device)
        self.model = tokenizer.build(state_dict).to(self.device)
        family = get_family(tokenizer.family)
        # A frozen encoder is deterministic: its cache stores the mean alone.
        self.deterministic = family.frozen_encoder
        self.position_stats = family.position_stats
        self.storage = Storage.from_uri(storage_uri)
        self.cache_rel = cache_rel
        self.cache_dtype = cache_dtype
        self.flip = flip
        self.batch_size = batch_size
        self.stats_seed = stats_seed
        self.resolution = resolution
        self.max_pixels = max_pixels
        self.decoder_pool = ThreadPoolExecutor(max_workers=decode_threads)
        factor = self.model.downsample_factor
        self.latent_shape = (self.model.embed_dim, resolution // factor, resolution // factor)
        self.schema = shard_schema(self.latent_shape, cache_dtype, flip, self.deterministic)
        self.compute = budget.ComputeClock()

    def encode_shard(self, shard: dict) -> tuple[int, int]:
        """Decode, encode and write one shard (see `cache.shard_descriptors`); (id, rows)."""
        writer = ShardWriter(self.storage, self.cache_rel, shard["shard"], self.schema)
        moments = self._empty_moments()
        for start, images in self._decoded_batches(shard["path"], shard["row"]):
            stop = start + images.shape[0]
            with self.compute:
                encoded = self.model_moments(images)
            stored = {
                name: to_storage(values, self.cache_dtype) for name, values in encoded.items()
            }
            rows = shard["index"][start:stop]
            moments = moments.merge(self._stats_moments(stored, rows, shard["stats"][start:stop]))
            columns = {
                "index": pa.array(rows, pa.int64()),
                "image_id": pa.array(shard["image_id"][start:stop], pa.string()),
                "label": pa.array(shard["label"][start:stop], pa.int64()),
            }
            columns.update(
                {
                    name: tensor_column(stored[name])
                    for name in moment_columns(self.flip, self.deterministic)
                }
            )
            writer.write(pa.Table.from_pydict(columns, schema=self.schema))
        writer.commit(moments)
        return shard["shard"], len(shard["path"])

    def model_moments(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        """`encode_moments` of a float32 (B, 3, R, R) batch on this encoder's device."""
        return encode_moments(
            self.model, torch.from_numpy(images).to(self.device), self.flip, self.deterministic
        )

    def _stats_moments(
        self, stored: dict[str, np.ndarray], rows: list[int], selected: list[bool]
    ) -> ChannelMoments:
        # Statistics over posterior *samples* z = mean + std * eps of unflipped images, as the
        # reference (`posterior.sample()` latents), or over the latents themselves for a
        # deterministic encoder; computed from the stored precision, which training will read.
        picks = [i for i, chosen in enumerate(selected) if chosen]
        if not picks:
            return self._empty_moments()
        z = from_storage(stored["mean"][picks], self.cache_dtype)
        if not self.deterministic:
            std = torch.exp(0.5 * from_storage(stored["logvar"][picks], self.cache_dtype))
            noise = torch.stack(
                [stats_noise(self.stats_seed, rows[i], self.latent_shape) for i in picks]
            )
            z = z + std * noise
        return ChannelMoments.of(z, self.position_stats)

    def _empty_moments(self) -> ChannelMoments:
        return ChannelMoments.empty(self.latent_shape, self.position_stats)

    def _decoded_batches(
        self, paths: list[str], rows: list[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, images) per sub-batch, decoding the next sub-batch while this one encodes."""
        starts = list(range(0, len(paths), self.batch_size))
        upcoming = self._submit(paths[: self.batch_size], rows[: self.batch_size])
        for k, start in enumerate(starts):
            current = upcoming
            if k + 1 < len(starts):
                window = slice(starts[k + 1], starts[k + 1] + self.batch_size)
                upcoming = self._submit(paths[window], rows[window])
            yield start, np.stack([future.result() for future in current])

    def _submit(self, paths: list[str], rows: list[int]) -> list[Future]:
        return [
            self.decoder_pool.submit(
                load_image, path, row=row, resolution=self.resolution, max_pixels=self.max_pixels
            )
            for path, row in zip(paths, rows)
        ]


class RayShardEncoder(ShardEncoder):
    """The Ray Data actor: weights come through the object store, shards through `__call__`."""

    def __init__(self, *, weights_ref: ray.ObjectRef, point: str, **kwargs):
        from orchestrator.sweep.resources import record_placement

        record_placement("cache actor", point)
        super().__init__(state_dict=ray.get(weights_ref), **kwargs)

    def __call__(self, descriptors: pa.Table) -> pa.Table:
        before = self.compute.seconds
        written = [self.encode_shard(row) for row in descriptors.to_pylist()]
        return pa.table(
            {
                "shard": [s for s, _ in written],
                "rows": [n for _, n in written],
                # Seconds inside the encoder (decoding and writing are I/O): `sweep/budget.py`.
                "compute_s": budget.per_row(self.compute.seconds - before, len(written)),
            }
        )
