"""Where a result came from: the exact command and the source revision, recorded with every result file."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

SOURCE = Path(__file__).resolve().parent


def _git(*args: str) -> Optional[str]:
    try:
        return subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision() -> Optional[str]:
    """The revision of the egnn source tree; None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def provenance(program: str = "egnn", argv: Optional[list[str]] = None) -> dict[str, Any]:
    """``{"command", "git_revision", "uncommitted_changes"}`` for the running command: ``program`` (as typed,
    e.g. ``python scripts/bench_speed.py``) and its arguments ``argv`` (default ``sys.argv[1:]``), shell-quoted.
    ``uncommitted_changes`` says whether tracked files differed from the revision when the result was made (None
    outside a git checkout), so a result is never silently attributed to code it did not run."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    args = sys.argv[1:] if argv is None else argv
    return {"command": " ".join([program, shlex.join(args)]) if args else program,
            "git_revision": git_revision(), "uncommitted_changes": None if status is None else bool(status)}
