"""The training stream's order and the tokenizer's crops: per-epoch, seeded, resume-stable.

The rules are functions of (seed, epoch, step, rank, row); the exact-resume tests through Ray
Train live in `test_train_resume.py`. One test starts Ray: a rank's rows fetched in its own
process must be its Ray Dataset's, batch for batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.data.images import ImageRows
from orchestrator.data.stream import StreamLayout, TrainStream
from workloads.datasets.transforms import resize_center_crop, resize_short_side

ROWS = 40


def test_epoch_permutations_follow_seed_and_epoch():
    rows = ImageRows("unused", ROWS, 16, 10**8, "random")
    first, second = rows.order(0, 0), rows.order(0, 1)
    assert sorted(first) == sorted(second) == list(range(ROWS))
    assert first.tolist() != second.tolist()
    assert rows.order(0, 1).tolist() == second.tolist()
    assert rows.order(1, 0).tolist() != first.tolist()


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_steps_rows_do_not_depend_on_the_world_size(accumulation):
    """Step s reads the same positions on 1, 2 or 4 ranks (same global batch): a run resumed
    on another worker count trains on what the uninterrupted run would have."""
    global_batch = 8
    taken = {}
    for world in (1, 2, 4):
        micro = global_batch // world // accumulation
        layout = StreamLayout(world_size=world, micro_batch=micro, accumulation=accumulation)
        assert layout.steps_per_epoch(ROWS) == ROWS // global_batch
        for step in range(12):
            parts = [layout.positions(step, rank, ROWS) for rank in range(world)]
            epoch = {p[0] for p in parts}
            assert len(epoch) == 1
            covered = sorted(i for _, s in parts for i in range(s.start, s.stop))
            taken.setdefault(step, (epoch, covered))
            assert taken[step] == (epoch, covered), (world, step)
    # 5 steps per epoch: step 5 starts epoch 1 at position 0.
    assert taken[5] == ({1}, list(range(8)))


def _write_index(root: Path, sizes: list[tuple[int, int]]) -> str:
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate(sizes):
        path = root / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    uri = str(root / "index.parquet")
    rows = [-1] * len(paths)
    pq.write_table(pa.table({"path": paths, "row": rows, "label": list(range(len(paths)))}), uri)
    return uri


def test_random_crops_change_per_epoch_and_repeat_on_resume(tmp_path):
    uri = _write_index(tmp_path, [(40, 24), (24, 36), (30, 30)])
    rows = ImageRows(uri, 3, 16, 10**8, "random")
    ids = np.arange(3)
    epoch0, epoch1 = rows.fetch(ids, 5, 0)["image"], rows.fetch(ids, 5, 1)["image"]
    # Non-square images: a new crop in another epoch (the square one only rescales).
    assert not np.array_equal(epoch0[0], epoch1[0])
    assert not np.array_equal(epoch0[1], epoch1[1])
    # The same (seed, epoch, row) gives the same crop in any batch, order or process.
    again = rows.fetch(np.array([2, 1, 0]), 5, 1)["image"]
    assert np.array_equal(again[::-1], epoch1)
    assert not np.array_equal(rows.fetch(ids, 6, 0)["image"][0], epoch0[0])
    # Every crop is a window of the short-side resize, as albumentations RandomCrop.
    resized = resize_short_side(Image.open(tmp_path / "img_0.png").convert("RGB"), 16)
    assert resized.shape == (16, 27, 3)
    windows = [
        resized[:, left : left + 16].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
        for left in range(27 - 16 + 1)
    ]
    assert any(np.array_equal(window, epoch0[0]) for window in windows)
    # `center`: one fixed ADM crop, whatever the epoch.
    center = ImageRows(uri, 3, 16, 10**8, "center")
    assert np.array_equal(center.fetch(ids, 5, 0)["image"], center.fetch(ids, 5, 1)["image"])


def test_resize_center_crop_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    import torch
    from torchvision.transforms import v2

    pixels = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    tensor = torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255.0
    expected = v2.Compose([v2.Resize(32), v2.CenterCrop(32)])(tensor) * 2 - 1
    got = resize_center_crop(Image.fromarray(pixels), 32)
    assert torchvision.__version__ and np.allclose(got, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_rows_fetched_in_the_worker_are_the_ray_datasets_rows(ray_local, tmp_path, accumulation):
    """Small data skips the pipeline (`resources.in_worker_data_mb`): every rank's micro-batches
    from a resumed step on, over an epoch boundary, equal what its Ray Dataset hands out."""
    uri = _write_index(tmp_path, [(20, 20)] * 12)
    stream = TrainStream(ImageRows(uri, 12, 16, 10**8, "random"), seed=3)
    layout = StreamLayout(world_size=2, micro_batch=4 // accumulation, accumulation=accumulation)
    start, end = 1, 5  # 12 rows at global batch 8: one step per epoch, four epochs
    assert stream.fits_in(1) and not stream.fits_in(0)
    local = stream.rank_rows(layout, start, end)
    for rank, dataset in enumerate(stream.datasets(layout, start, end).values()):
        piped = list(dataset.iter_batches(batch_size=layout.micro_batch, batch_format="numpy"))
        fetched = list(local[rank].iter_batches(batch_size=layout.micro_batch))
        assert len(piped) == len(fetched) == (end - start) * accumulation
        for a, b in zip(piped, fetched):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
        assert [int(b["step"][0]) for b in fetched[::accumulation]] == list(range(start, end))
