"""Ingestion on Ray Data: a folder with every bad-file kind, the report, the threshold, reuse."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.config import PRESETS, ExperimentConfig, resolve
from orchestrator.config.schema import EmbeddedDatasetConfig
from orchestrator.data import IngestError, indexed_images, ingest
from orchestrator.data.listing import discover_classes
from orchestrator.storage.store import Storage
from workloads.datasets.decode import decode_file
from workloads.datasets.transforms import adm_preprocess

RESOLUTION = 32
MAX_PIXELS = 100_000
GOOD_PER_CLASS = 10


def save(path: Path, image: Image.Image, fmt: str, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)


def noise_rgb(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    noise_rgb(48, 40, 7).save(buffer, format="JPEG")
    return buffer.getvalue()[:300]


# Skipped files and their expected reason; converted files and their expected conversion.
SKIPS = {
    "train/a_cat/truncated.jpg": "truncated",
    "train/a_cat/empty.JPEG": "empty_file",
    "train/b_dog/page.jpg": "not_an_image",
    "train/b_dog/huge.png": "too_many_pixels",
    "train/b_dog/folder.jpg": "unreadable",
    "train/b_dog/dangling.png": "unreadable",
}
CONVERSIONS = {
    "train/a_cat/cmyk.jpg": "cmyk_to_rgb",
    "train/a_cat/grey.png": "greyscale_to_rgb",
    "train/a_cat/palette.png": "palette_to_rgb",
    "train/b_dog/rgba.png": "alpha_on_white",
    "train/b_dog/deep.png": "16bit_to_8bit",
    "train/b_dog/tiny.png": "upsampled",
}


def build_tree(root: Path) -> None:
    """Two classes of good images plus every bad kind, an empty class, a val split, a stray."""
    for label, name in enumerate(["a_cat", "b_dog"]):
        for i in range(GOOD_PER_CLASS):
            extension, fmt = [("JPEG", "JPEG"), ("jpg", "JPEG"), ("PNG", "PNG")][i % 3]
            image = noise_rgb(40 + 3 * i, 36 + 2 * i, seed=100 * label + i)
            save(root / "train" / name / f"good_{i:02d}.{extension}", image, fmt)
        save(root / "val" / name / "val_0.png", noise_rgb(40, 40, seed=900 + label), "PNG")
    (root / "train" / "c_empty").mkdir(parents=True)
    (root / "train" / "a_cat" / "notes.txt").write_text("not an image extension: ignored")
    (root / "train/a_cat/truncated.jpg").write_bytes(truncated_jpeg())
    (root / "train/a_cat/empty.JPEG").write_bytes(b"")
    (root / "train/b_dog/page.jpg").write_text("<html>404</html>")
    save(root / "train/b_dog/huge.png", noise_rgb(400, 300, 3), "PNG")
    # Tests run as root (chmod 000 does not stop reads): a directory named like an image and a
    # dangling symlink are the unreadable files here.
    (root / "train/b_dog/folder.jpg").mkdir()
    (root / "train/b_dog/dangling.png").symlink_to(root / "nowhere.png")
    save(root / "train/a_cat/cmyk.jpg", Image.new("CMYK", (40, 40), (0, 200, 200, 0)), "JPEG")
    save(root / "train/a_cat/grey.png", Image.new("L", (40, 40), 90), "PNG")
    save(root / "train/a_cat/palette.png", noise_rgb(40, 40, 4).convert("P"), "PNG")
    rgba = np.random.default_rng(5).integers(0, 256, (40, 40, 4), dtype=np.uint8)
    save(root / "train/b_dog/rgba.png", Image.fromarray(rgba, mode="RGBA"), "PNG")
    deep = np.random.default_rng(6).integers(0, 65536, (40, 40), dtype=np.uint16)
    save(root / "train/b_dog/deep.png", Image.fromarray(deep), "PNG")
    save(root / "train/b_dog/tiny.png", noise_rgb(10, 14, 8), "PNG")


def folder_config(root: Path, storage: Path, **dataset) -> ExperimentConfig:
    base = PRESETS["debug_cpu"]()
    data = replace(
        base.dataset,
        source="folder",
        root=str(root),
        resolution=RESOLUTION,
        num_classes=None,
        max_image_pixels=MAX_PIXELS,
        **dataset,
    )
    return resolve(replace(base, dataset=data, storage=str(storage)))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    build_tree(root)
    return root


@pytest.fixture(scope="module")
def ingested(tree, tmp_path_factory, ray_local):
    storage_dir = tmp_path_factory.mktemp("storage")
    cfg = folder_config(tree, storage_dir, max_skip_fraction=0.5)
    return cfg, Storage.from_uri(str(storage_dir)), ingest(cfg, Storage.from_uri(str(storage_dir)))


def test_each_bad_file_is_skipped_with_its_reason(tree, ingested):
    _, _, result = ingested
    train_files = 2 * GOOD_PER_CLASS + len(SKIPS) + len(CONVERSIONS)
    assert result.total_files == train_files + 2
    assert result.counts == {"train": train_files - len(SKIPS), "val": 2}
    expected = {}
    for reason in SKIPS.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert result.skipped == expected
    report = json.loads(Path(result.report_path).read_text())
    assert {
        (Path(e["path"]).relative_to(tree).as_posix(), e["reason"]) for e in report["skipped"]
    } == set(SKIPS.items())
    assert report["empty_class_folders"] == ["train/c_empty"]
    assert report["ignored_files"] == ["train/a_cat/notes.txt"]
    lines = (Path(result.report_path).parent / "skipped.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"{tree / path}\t{reason}" for path, reason in SKIPS.items())


def test_conversions_are_counted_and_kept_in_the_index(tree, ingested):
    _, _, result = ingested
    for conversion in CONVERSIONS.values():
        assert result.conversions.get(conversion, 0) >= 1, conversion
    index = pq.read_table(result.index_paths["train"]).to_pylist()
    notes = {row["image_id"]: row["conversion"] for row in index}
    for image_id, conversion in CONVERSIONS.items():
        assert conversion in notes[image_id].split("+")
    assert not set(SKIPS) & set(notes)


def test_labels_follow_sorted_class_folders(ingested):
    _, _, result = ingested
    assert result.class_names == ["a_cat", "b_dog", "c_empty"]
    assert result.num_classes == 3
    for split, path in result.index_paths.items():
        for row in pq.read_table(path).to_pylist():
            class_name = row["image_id"].split("/")[1]
            assert row["label"] == result.class_names.index(class_name), row
            assert row["image_id"].startswith(f"{split}/")


def test_rerun_reuses_the_finished_stage(ingested):
    cfg, storage, result = ingested
    index = Path(result.index_paths["train"])
    before = index.stat()
    assert ingest(cfg, storage) == result
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_too_many_skips_fail_with_counts_and_report(tree, ingested):
    cfg, storage, result = ingested
    strict = replace(cfg, dataset=replace(cfg.dataset, max_skip_fraction=0.01))
    with pytest.raises(IngestError) as raised:
        ingest(strict, storage)
    message = str(raised.value)
    assert f"skipped {len(SKIPS)} of {result.total_files} files" in message
    assert result.report_path in message and "\n" not in message


def test_indexed_images_stream_cropped_images_of_valid_files(ingested):
    cfg, _, result = ingested
    rows = indexed_images(result, cfg, "train", limit=5).dataset().take_all()
    index = pq.read_table(result.index_paths["train"]).slice(0, 5).to_pylist()
    assert [row["image_id"] for row in rows] == [row["image_id"] for row in index]
    for row, entry in zip(rows, index):
        image = decode_file(entry["path"], max_pixels=MAX_PIXELS).image
        np.testing.assert_array_equal(row["image"], adm_preprocess(image, RESOLUTION))
        assert row["image"].dtype == np.float32 and row["image"].shape == (3, 32, 32)
        assert row["label"] == entry["label"]


def test_embedded_source_is_written_then_ingested_like_a_folder(tmp_path, ray_local):
    base = PRESETS["debug_cpu"]()
    embedded = EmbeddedDatasetConfig(
        num_classes=2, image_size=32, train_per_class=3, val_per_class=1
    )
    data = replace(base.dataset, resolution=32, embedded=embedded)
    cfg = resolve(replace(base, dataset=data, storage=str(tmp_path)))
    result = ingest(cfg, Storage.from_uri(str(tmp_path)))
    assert result.counts == {"train": 6, "val": 2} and result.skipped == {}
    assert Path(result.root).parent == tmp_path / "datasets"
    assert result.class_names == ["00_circle", "01_square"]


def test_label_map_fixes_indices(tmp_path):
    for name in ("n01", "n02"):
        (tmp_path / "train" / name).mkdir(parents=True)
    label_map = tmp_path / "labels.txt"
    label_map.write_text("# wnid index\nn02 0\nn01 3\n")
    classes = discover_classes(tmp_path / "train", str(label_map))
    assert classes.to_label == {"n02": 0, "n01": 3}
    assert classes.names == ["n02", "", "", "n01"]
    label_map.write_text("n02 0\n")
    with pytest.raises(ValueError, match="not in the label map"):
        discover_classes(tmp_path / "train", str(label_map))
