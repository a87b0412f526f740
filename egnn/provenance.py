"""Where a result came from: the exact command and the source revision, recorded with every result file."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

SOURCE = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = SOURCE) -> Optional[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision() -> Optional[str]:
    """The revision of the egnn source tree; None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def uncommitted_changes(checkout: Path = SOURCE) -> Optional[bool]:
    """Whether tracked files of the checkout differ from its revision, results files aside (None outside a git
    checkout): a result made beside other, uncommitted results still ran the committed code."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results",
                  cwd=checkout)
    return None if status is None else bool(status)


def provenance(program: str = "egnn", argv: Optional[list[str]] = None,
               started: Optional[float] = None) -> dict[str, Any]:
    """``{"command", "git_revision", "uncommitted_changes"}`` for the running command: ``program`` (as typed,
    e.g. ``python scripts/bench_speed.py``) and its arguments ``argv`` (default ``sys.argv[1:]``), shell-quoted.
    ``uncommitted_changes`` says whether tracked files (results files aside) differed from the revision when the
    result was made (None outside a git checkout), so a result is never silently attributed to code it did not run.
    With ``started`` (a ``time.time()``), also ``wall_seconds``: how long the command took until now."""
    args = sys.argv[1:] if argv is None else argv
    made = {"command": " ".join([program, shlex.join(args)]) if args else program,
            "git_revision": git_revision(), "uncommitted_changes": uncommitted_changes()}
    if started is not None:
        made["wall_seconds"] = round(time.time() - started, 2)
    return made
