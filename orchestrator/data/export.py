"""Write an ingested dataset as Hugging Face-layout Parquet shards.

    python -m orchestrator.data.export INGEST_DIR_OR_STORAGE OUT_DIR [--rows-per-shard N]

INGEST_DIR is a finished ingestion stage (`<storage>/datasets/<key>/ingest/`, with its
`DONE.json`); a storage root with exactly one ingested dataset also works. Every validated image
of every split goes out with its original encoded bytes (no re-encoding): `OUT_DIR/<split>-
00000-of-000NN.parquet` with an `image` struct (`bytes`, `path`), an int64 `label` and the
`huggingface` schema metadata naming the classes, which `dataset.source: parquet` reads back.
OUT_DIR must not hold shards already: nothing written before is overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.data.ingest import IngestResult
from orchestrator.data.parquet_io import read_table
from orchestrator.data.sources import read_image_bytes
from orchestrator.storage.artifacts import DONE

ROWS_PER_SHARD = 1000
SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("label", pa.int64()),
    ]
)


def find_ingest(path: Path) -> IngestResult:
    """The `IngestResult` of an ingest directory, or of the one ingested dataset of a storage."""
    if (path / DONE).is_file():
        return IngestResult.from_dict(json.loads((path / DONE).read_text()))
    found = sorted(path.glob(f"datasets/*/ingest/{DONE}"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{path}: not a finished ingest directory, and holds {len(found)} ingested datasets "
            "(name one `<storage>/datasets/<key>/ingest` directory)"
        )
    return IngestResult.from_dict(json.loads(found[0].read_text()))


def hf_metadata(class_names: list[str]) -> dict[bytes, bytes]:
    features = {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": class_names},
    }
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def export(ingested: IngestResult, out: Path, rows_per_shard: int = ROWS_PER_SHARD) -> list[Path]:
    """Write every split's shards; returns their paths."""
    existing = sorted(out.glob("*.parquet")) if out.exists() else []
    if existing:
        raise FileExistsError(f"{existing[0]}: {out} already holds Parquet shards")
    out.mkdir(parents=True, exist_ok=True)
    names = [name or str(i) for i, name in enumerate(ingested.class_names)]
    names += [str(i) for i in range(len(names), ingested.num_classes)]
    schema = SCHEMA.with_metadata(hf_metadata(names))
    written = []
    for split, uri in sorted(ingested.index_paths.items()):
        index = read_table(uri, columns=["path", "row", "label", "image_id"])
        count = -(-len(index) // rows_per_shard)
        for shard in range(count):
            part = index.slice(shard * rows_per_shard, rows_per_shard)
            images = [
                {"bytes": read_image_bytes(path, row), "path": image_id}
                for path, row, image_id in zip(
                    part["path"].to_pylist(), part["row"].to_pylist(), part["image_id"].to_pylist()
                )
            ]
            table = pa.table(
                {"image": pa.array(images, SCHEMA.field("image").type), "label": part["label"]},
                schema=schema,
            )
            target = out / f"{split}-{shard:05d}-of-{count:05d}.parquet"
            temporary = target.with_suffix(".parquet.tmp")
            pq.write_table(table, temporary, row_group_size=100)
            temporary.rename(target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.data.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", type=Path, help="an ingest directory or a storage root")
    parser.add_argument("out", type=Path, help="folder for the shards (must hold none yet)")
    parser.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD)
    args = parser.parse_args(argv)
    try:
        written = export(find_ingest(args.source), args.out, args.rows_per_shard)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} shards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
