"""Experiment specs in, reports out: shared by ``egnn compare`` and ``egnn label-ratio``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from egnn.config import expand_includes, read_config_file
from egnn.errors import ConfigError


def read_spec(path: str | Path, kind: str, keys: set[str], required: set[str]) -> dict[str, Any]:
    """A YAML mapping with only ``keys`` and at least ``required``; any problem is one :class:`ConfigError`.
    The spec and its ``base`` may ``include`` config files (paths relative to the spec)."""
    path = Path(path)
    spec = read_config_file(path, f"{kind} config")
    unknown, missing = set(spec) - keys, {k for k in required if not spec.get(k)}
    if unknown or missing:
        raise ConfigError(f"{kind} config {path}: expected keys {', '.join(sorted(keys))} with "
                          f"{', '.join(sorted(required))} required; unknown {', '.join(sorted(unknown)) or 'none'}, "
                          f"missing {', '.join(sorted(missing)) or 'none'}")
    if isinstance(spec.get("base"), dict):
        spec["base"] = expand_includes(spec["base"], path.parent)
    return spec


def write_report(summary: dict[str, Any], table: str, output: str | Path, draw: Callable[[Any], None],
                 figsize: tuple[float, float] = (5, 3.4)) -> dict[str, Path]:
    """Write ``<output>.json`` (the summary), ``<output>.md`` (the table) and ``<output>.png`` (``draw(ax)``), each
    atomically: an interrupted report leaves the previous files whole."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from egnn.data.paths import atomic_save, atomic_write_text

    output = Path(output)
    files = {"json": output.with_suffix(".json"), "md": output.with_suffix(".md"), "png": output.with_suffix(".png")}
    fig, ax = plt.subplots(figsize=figsize, dpi=120)
    try:  # the figure first: a plotting error writes nothing
        draw(ax)
        fig.tight_layout()
        atomic_save(fig, files["png"], write=lambda f, file: f.savefig(file, format="png"))
    finally:
        plt.close(fig)
    atomic_write_text(files["json"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(files["md"], table + "\n")
    return files
