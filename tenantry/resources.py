"""Where the SQL and dashboard definitions live, installed or in a source checkout.

``sql/`` and ``dashboards/`` sit at the top of the repository (DESIGN.md) and ship inside the
wheel as ``tenantry/_data/``; this module finds whichever is present.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
SQL_LAYERS = ("staging", "marts", "tenant")


def _find(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"tenantry's {name}/ folder is missing (looked in {_PKG / '_data'} and {_PKG.parent}); "
        "reinstall tenantry with `pip install .`"
    )


def sql_dir() -> Path:
    return _find("sql")


def dashboards_dir() -> Path:
    return _find("dashboards")


def sql_files() -> list[tuple[str, str]]:
    """(name, sql) of every view definition, layer by layer (staging, marts, tenant), by name."""
    root = sql_dir()
    out = []
    for layer in SQL_LAYERS:
        for f in sorted((root / layer).glob("*.sql")):
            out.append((f"{layer}/{f.stem}", f.read_text(encoding="utf-8")))
    return out
