"""File export: the pending ledger entries of a run as one CSV or Parquet file.

Each file is named after a hash of the entries it holds and written atomically, so a run that
crashed before recording is redone into the same file. Every row carries ``idempotency_key``
(stable per ledger entry) for consumers that must deduplicate across files.

.. code-block:: yaml

    exports:
      file: {dir: exports/ledger, format: csv}   # dir is relative to the warehouse; or parquet
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from tenantry.billing.exporters import Entry, Exporter, Outcome, Section, decimal_text, parse_section
from tenantry.billing.lakeio import digest

COLUMNS = ("idempotency_key", "entry_id", "tenant_id", "meter", "period_start", "period_end", "quantity", "unit",
           "kind", "revision", "dimensions")


class FileSection(Section):
    dir: str = "exports/ledger"
    format: Literal["csv", "parquet"] = "csv"


class FileExporter(Exporter):
    provider = "file"
    max_batch = 100_000

    def __init__(self, section: FileSection, root: Path | None = None):
        self.s = section
        self.root = root
        self.written: list[Path] = []

    @classmethod
    def from_config(cls, raw: Any, root: Path | None = None) -> "FileExporter":
        return cls(parse_section(FileSection, raw, "file"), root)

    def account(self, tenant_id: str, billing: dict[str, str]) -> str | None:
        return tenant_id

    def build(self, entry: Entry, account: str) -> dict[str, Any]:
        import json

        return {"idempotency_key": entry.idempotency_key, "entry_id": entry.entry_id, "tenant_id": entry.tenant_id,
                "meter": entry.meter, "period_start": entry.period_start.isoformat().replace("+00:00", "Z"),
                "period_end": entry.period_end.isoformat().replace("+00:00", "Z"),
                "quantity": decimal_text(entry.quantity), "unit": entry.unit or "", "kind": entry.kind,
                "revision": entry.revision, "dimensions": json.dumps(entry.dimensions, sort_keys=True, ensure_ascii=False)}

    def push(self, records: list[dict[str, Any]]) -> list[Outcome]:
        out = Path(self.s.dir)
        if not out.is_absolute() and self.root is not None:
            out = self.root / out
        out.mkdir(parents=True, exist_ok=True)
        name = f"ledger-{digest(*sorted(r['idempotency_key'] for r in records), n=16)}.{self.s.format}"
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        if self.s.format == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(records)
            tmp.write_text(buf.getvalue(), encoding="utf-8")
        else:
            cols = {c: [r[c] for r in records] for c in COLUMNS}
            pq.write_table(pa.table(cols), tmp)
        os.replace(tmp, path)
        self.written.append(path)
        return [Outcome("acknowledged", None, name) for _ in records]
