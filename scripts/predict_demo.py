#!/usr/bin/env python
"""``egnn predict`` on Omniglot test characters laid out as a user's folders, against ``egnn eval`` at the same
protocol: the README's "Label your own images" numbers.

    python scripts/predict_demo.py --checkpoint results/checkpoints/omniglot_5w1s.pt --out runs/predict_demo \\
        --classes 20 --shot 1 --arrangements 5 --eval-episodes 200 --json results/predict_omniglot_20w1s.json \\
        --sheet docs/predict_contact_sheet.png

Each arrangement draws ``--classes`` of the 423 test characters (ids 1201-1623, never seen in training) with its
own seed and copies their original 105x105 PNGs: ``--shot`` drawings of each, by drawers drawn with the same seed,
to ``support/<character>/``, the other ``20 - shot`` to ``query/<character>/``. The real CLI labels ``query/``; a prediction is right when it
names the query's folder. ``egnn eval`` then tests the same checkpoint on fixed episodes of the same shape
(``--classes``-way ``--shot``-shot, ``20 - shot`` queries per class; there the classes also include rotations).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_characters(data_root: Path) -> list[Path]:
    chars = sorted((data_root / "omniglot-py" / "images_evaluation").glob("*/*"))
    return [c for c in chars if int(next(c.glob("*.png")).name[:4]) > 1200]


def lay_out(chars: list[Path], shot: int, out: Path, rng: random.Random) -> tuple[Path, Path]:
    shutil.rmtree(out, ignore_errors=True)
    for char in chars:
        files, name = sorted(char.glob("*.png")), f"{char.parent.name}_{char.name}"
        rng.shuffle(files)  # the supports: any of the 20 drawers, as in evaluation episodes
        for sub, chosen in (("support", files[:shot]), ("query", files[shot:])):
            (out / sub / name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, out / sub / name / f.name)
    return out / "support", out / "query"


def egnn(*args: str) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "egnn.cli", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr.strip())
    return proc.stdout.strip(), time.perf_counter() - start


def upright_eval(args, query: int):
    """``egnn eval``'s protocol through the Python API on the test classes at rotation 0 only: the user folders'
    characters are all upright, while evaluation episodes mix the four rotations, which differ in stroke
    orientation and are easier to tell apart."""
    from egnn.data import FewShotSplit, load_dataset
    from egnn.evaluation import evaluate
    from egnn.models import load_trained

    split = load_dataset("omniglot", args.data_root)["test"]
    keep = split.labels % 4 == 0  # classes are (character, rotation), rotations 0, 90, 180, 270 in turn
    upright = FewShotSplit(split.images[keep], split.labels[keep] // 4, split.class_names[::4], name="omniglot/test-upright")
    method, _ = load_trained(args.checkpoint, args.device)
    return evaluate(method, upright, way=args.classes, shot=args.shot, query=query, episodes=args.eval_episodes,
                    transductive=True, batch_size=10, device=args.device, dataset="omniglot")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "results" / "checkpoints" / "omniglot_5w1s.pt"))
    p.add_argument("--data-root", default=os.environ.get("EGNN_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default="runs/predict_demo")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--arrangements", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sheet", help="copy the first arrangement's contact sheet here")
    args = p.parse_args()
    chars, out = test_characters(Path(args.data_root)), Path(args.out)
    runs = []
    for k in range(args.arrangements):
        rng = random.Random(k)
        picked = rng.sample(chars, args.classes)
        support, query = lay_out(picked, args.shot, out / f"arrangement{k}", rng)
        labels = out / f"arrangement{k}" / "labels.csv"
        cmd = ["predict", "--checkpoint", args.checkpoint, "--support", str(support), "--query", str(query),
               "--out", str(labels), "--device", args.device, "--quiet"]
        if k == 0:
            cmd += ["--report", str(out / "report")]
        printed, seconds = egnn(*cmd)
        with open(labels, newline="") as f:
            rows = list(csv.DictReader(f))
        acc = float(np.mean([Path(r["path"]).parent.name == r["predicted"] for r in rows]))
        runs.append({"seed": k, "command": shlex.join(["egnn", *cmd]), "printed": printed, "accuracy": acc,
                     "queries": len(rows), "wall_seconds": round(seconds, 2)})
        print(f"arrangement {k}: accuracy {100 * acc:.2f}% ({printed.splitlines()[0]})", flush=True)
    accs = np.array([r["accuracy"] for r in runs])
    ci = 1.96 * accs.std(ddof=1) / np.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    eval_json = out / "eval.json"
    query = 20 - args.shot
    eval_cmd = ["eval", "--checkpoint", args.checkpoint, "--data-root", args.data_root, "--way", str(args.classes),
                "--shot", str(args.shot), "--query", str(query), "--episodes", str(args.eval_episodes), "--batch", "10",
                "--transductive", "--device", args.device, "--output", str(eval_json)]
    printed, seconds = egnn(*eval_cmd)
    ev = json.loads(eval_json.read_text())
    upright = upright_eval(args, query)
    print(f"predict: {100 * accs.mean():.2f} ± {100 * ci:.2f}% over {len(accs)} arrangements; eval: {printed}; "
          f"eval on upright classes only: {upright}")
    if args.sheet:
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "report" / "contact_sheet.png", args.sheet)
    if args.json:
        from egnn.data.paths import atomic_write_text
        from egnn.provenance import provenance

        result = {**provenance("python scripts/predict_demo.py"),
                  "device": ev["protocol"].get("device"), "checkpoint": args.checkpoint,
                  "protocol": f"{args.classes} classes x {args.shot} supports, {query} queries each, transductive",
                  "predict_accuracy": float(accs.mean()), "predict_accuracy_ci95": ci, "arrangements": runs,
                  "eval": {"command": shlex.join(["egnn", *eval_cmd]), "printed": printed, "accuracy": ev["accuracy"],
                           "accuracy_ci95": ev["accuracy_ci95"], "wall_seconds": round(seconds, 2)},
                  "eval_upright": {"what": "the same evaluation on the test split's unrotated classes only (the "
                                           "user folders hold upright characters)",
                                   "printed": str(upright), "accuracy": upright.accuracy,
                                   "accuracy_ci95": upright.accuracy_ci95}}
        atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
