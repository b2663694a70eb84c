"""Data sources: Hugging Face Parquet shards, a flat val with either label file, the exporter.

The sets are written here: PNG bytes in Parquet (with a row of garbage), a flat `val/` with
Kaggle's CSV and ILSVRC's ID list. Ingestion runs the real Ray Data validation pass.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.config import PRESETS, resolve
from orchestrator.data import indexed_images, ingest
from orchestrator.data.export import export, find_ingest
from orchestrator.data.listing import ClassIndex, read_val_labels
from orchestrator.data.sources import SourceError
from orchestrator.storage.store import Storage
from workloads.datasets.embedded import read_split

SYNSETS = ["n01440764", "n01443537", "n01484850"]


def png(seed: int, size=(20, 24)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_hf_shards(root: Path, split: str, count: int, shards: int, bad_rows=()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"label": {"_type": "ClassLabel", "names": SYNSETS}}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    per = -(-count // shards)
    for shard in range(shards):
        rows = range(shard * per, min((shard + 1) * per, count))
        images = [
            {"bytes": b"not an image" if i in bad_rows else png(i), "path": f"{i}.png"}
            for i in rows
        ]
        table = pa.table(
            {"image": pa.array(images, image_type), "label": [i % 3 for i in rows]}
        ).replace_schema_metadata(metadata)
        pq.write_table(table, root / f"{split}-{shard:05d}-of-{shards:05d}.parquet")


def config(root, storage: Path, **dataset):
    base = PRESETS["debug_cpu"]()
    data = replace(base.dataset, root=str(root), num_classes=3, resolution=16, **dataset)
    return resolve(replace(base, dataset=data, storage=str(storage)))


def test_parquet_shards_ingest_with_bad_rows_named(tmp_path, ray_local):
    root = tmp_path / "hf"
    write_hf_shards(root / "data", "train", 12, 2, bad_rows={7})
    write_hf_shards(root / "data", "val", 3, 1)
    cfg = config(root, tmp_path / "storage", source="parquet", max_skip_fraction=0.2)
    result = ingest(cfg, Storage.from_uri(str(tmp_path / "storage")))
    assert result.counts == {"train": 11, "val": 3}
    assert result.class_names == SYNSETS and result.skipped == {"not_an_image": 1}
    report = json.loads(Path(result.report_path).read_text())
    assert report["skipped"][0]["path"].endswith("train-00001-of-00002.parquet#row=1")
    index = pq.read_table(result.index_paths["train"])
    assert index["row"].to_pylist()[:6] == list(range(6))
    rows = indexed_images(result, cfg, "val").dataset().take_all()
    assert sorted(int(r["label"]) for r in rows) == [0, 1, 2]
    assert rows[0]["image"].shape == (3, 16, 16)
    # A pool of size 0 decodes the same images in its own process, in index order.
    local = list(indexed_images(result, cfg, "train", view="resize_center").batches(4, "numpy"))
    piped = indexed_images(result, cfg, "train", view="resize_center").dataset().take_all()
    by_id = {r["image_id"]: r for r in piped}
    assert [len(b["label"]) for b in local] == [4, 4, 3]
    for batch in local:
        for image, label, image_id in zip(batch["image"], batch["label"], batch["image_id"]):
            np.testing.assert_array_equal(image, by_id[image_id]["image"])
            assert label == by_id[image_id]["label"]


def test_parquet_without_an_image_column_names_the_file(tmp_path, ray_local):
    root = tmp_path / "hf"
    root.mkdir()
    pq.write_table(pa.table({"label": [0, 1]}), root / "train-00000-of-00001.parquet")
    cfg = config(root, tmp_path / "storage", source="parquet")
    with pytest.raises(SourceError, match="train-00000-of-00001.parquet: no `image` column"):
        ingest(cfg, Storage.from_uri(str(tmp_path / "storage")))
    assert not (tmp_path / "storage" / "datasets").exists() or not list(
        (tmp_path / "storage").glob("datasets/*/ingest/DONE.json")
    )


def write_flat_tree(root: Path) -> list[int]:
    for k, synset in enumerate(SYNSETS):
        (root / "train" / synset).mkdir(parents=True)
        for i in range(2):
            (root / "train" / synset / f"{synset}_{i}.png").write_bytes(png(10 * k + i))
    (root / "val").mkdir()
    labels = [2, 0, 1, 1]
    for i in range(len(labels)):
        (root / "val" / f"ILSVRC2012_val_{i + 1:08d}.png").write_bytes(png(100 + i))
    return labels


def test_flat_val_with_kaggle_csv_and_ilsvrc_ids(tmp_path, ray_local):
    root = tmp_path / "imagenet"
    labels = write_flat_tree(root)
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text(
        "ImageId,PredictionString\n"
        + "".join(
            f"ILSVRC2012_val_{i + 1:08d},{SYNSETS[label]} 1 2 3 4\n"
            for i, label in enumerate(labels)
        )
    )
    # ILSVRC2012_IDs follow the devkit's synset order, not the sorted one: reverse it here.
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("\n".join(reversed(SYNSETS)) + "\n")
    ids = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    ids.write_text("".join(f"{len(SYNSETS) - label}\n" for label in labels))
    for name, extra in (("kaggle", {}), ("ilsvrc", {"val_synsets": str(synsets)})):
        label_file = kaggle if name == "kaggle" else ids
        storage = tmp_path / f"storage-{name}"
        cfg = config(root, storage, source="folder", val_labels=str(label_file), **extra)
        result = ingest(cfg, Storage.from_uri(str(storage)))
        val = pq.read_table(result.index_paths["val"])
        assert val["label"].to_pylist() == labels, name
        assert val["image_id"].to_pylist()[0] == "val/ILSVRC2012_val_00000001.png"


def test_labels_file_naming_an_unknown_synset_names_the_file(tmp_path):
    classes = ClassIndex({s: i for i, s in enumerate(SYNSETS)}, SYNSETS)
    bad = tmp_path / "LOC_val_solution.csv"
    bad.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n99999999 1 2 3 4\n")
    with pytest.raises(ValueError, match=r"LOC_val_solution.csv:2: synset 'n99999999'"):
        read_val_labels(str(bad), classes, None)


def test_export_round_trips_through_the_parquet_source(tmp_path, ray_local):
    root = tmp_path / "imagenet"
    write_flat_tree(root)
    (root / "val").rename(tmp_path / "flat-val")
    storage = tmp_path / "storage"
    folder = ingest(config(root, storage, source="folder"), Storage.from_uri(str(storage)))
    out = tmp_path / "exported"
    assert len(export(find_ingest(storage), out, rows_per_shard=4)) == 2
    before = sorted(p.stat().st_mtime_ns for p in out.glob("*.parquet"))
    with pytest.raises(FileExistsError):
        export(folder, out)
    assert sorted(p.stat().st_mtime_ns for p in out.glob("*.parquet")) == before
    storage2 = tmp_path / "storage2"
    back = ingest(config(out, storage2, source="parquet"), Storage.from_uri(str(storage2)))
    assert back.counts == folder.counts and back.class_names == folder.class_names
    a = pq.read_table(folder.index_paths["train"])["label"].to_pylist()
    b = pq.read_table(back.index_paths["train"])["label"].to_pylist()
    assert a == b
    # The stand-in ViT and the proxy evaluator read the same images from the shards.
    images, labels, names = read_split(out, "train", 16)
    expected_images, expected_labels, expected_names = read_split(root, "train", 16)
    assert names == expected_names and labels.tolist() == expected_labels.tolist()
    assert np.array_equal(images, expected_images)


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_webdataset_tars_ingest_with_bad_members_named(tmp_path, ray_local):
    root = tmp_path / "wds"
    for shard in range(2):
        members = {}
        for i in range(shard * 5, shard * 5 + 5):
            members[f"{i:06d}.png"] = b"garbage" if i == 6 else png(i)
            members[f"{i:06d}.cls"] = str(i % 3).encode()
        write_tar(root / f"train-{shard:06d}.tar", members)
    write_tar(root / "val-000000.tar", {"000100.png": png(100), "000100.cls": b"2"})
    cfg = config(root, tmp_path / "storage", source="webdataset", max_skip_fraction=0.2)
    result = ingest(cfg, Storage.from_uri(str(tmp_path / "storage")))
    assert result.counts == {"train": 9, "val": 1} and result.skipped == {"not_an_image": 1}
    report = json.loads(Path(result.report_path).read_text())
    assert report["skipped"][0]["path"].split("/")[-1].startswith("train-000001.tar#row=")
    assert report["skipped"][0]["image_id"] == "train-000001.tar/000006.png"
    rows = indexed_images(result, cfg, "train").dataset().take_all()
    assert sorted(int(r["label"]) for r in rows) == sorted(i % 3 for i in range(10) if i != 6)


def test_tar_without_image_members_names_the_file(tmp_path, ray_local):
    root = tmp_path / "wds"
    write_tar(root / "train-000000.tar", {"000001.txt": b"hello", "000001.cls": b"0"})
    cfg = config(root, tmp_path / "storage", source="webdataset")
    with pytest.raises(SourceError, match="train-000000.tar: no image members"):
        ingest(cfg, Storage.from_uri(str(tmp_path / "storage")))
