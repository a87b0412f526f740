"""Label a folder of new images from a few labeled examples per class: the Python API behind ``egnn predict``.

The user's folders become one episode: ``support/<class>/<image>`` are the labeled supports (any number per
class), every image under ``query/`` is a query. Images are read the way the checkpoint's dataset reads its
own files (size, channels, ink polarity; the normalisation is in the checkpoint), then the trained method
scores the queries exactly as ``egnn eval`` does, in one of three modes:

* transductive, dense: all supports and queries as one fully connected graph (small query sets);
* transductive, sparse (``knn > 0``): the same graph with each node's k nearest nodes and k nearest supports,
  in memory that grows with the images, not with their square (thousands of queries);
* non-transductive: each query alone with the supports, in chunks of queries.
"""
from __future__ import annotations

import csv
import io
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egnn.data.images import IMAGE_SUFFIXES, image_files
from egnn.data.paths import atomic_save, atomic_write_text
from egnn.devices import describe
from egnn.errors import DataError
from egnn.unknowns import DEFAULT_RATE


@dataclass
class Predictions:
    """Query labels with their confidence.

    Attributes:
        classes: class names, the support folder's subfolders in sorted order.
        supports: ``class -> its support image paths``.
        queries: query image paths, sorted.
        probabilities: ``(Q, way)`` the method's class probabilities of every query (for EGNN, its vote
            normalised).
        mode: ``transductive``, ``transductive (knn20 graph)`` or ``non-transductive``.
        known: ``(Q,)`` how well each query fits its best class (``known_score``).
        threshold: queries whose ``known`` falls below it are labeled ``unknown`` (None: never).
        suggested: the queries to label next, best first (``--suggest``).
    """

    classes: list[str]
    supports: dict[str, list[Path]]
    queries: list[Path]
    probabilities: torch.Tensor
    mode: str
    checkpoint: str
    device: str
    seconds: float
    known: torch.Tensor | None = None
    threshold: float | None = None
    suggested: list[int] = field(default_factory=list)
    calibration: str = ""

    UNKNOWN = "unknown"
    COLUMNS = ("path", "predicted", "confidence", "runner_up", "runner_up_confidence", "nearest", "known_score",
               "suggested")

    @property
    def labels(self) -> torch.Tensor:
        """``(Q,)`` predicted class index of every query."""
        return self.probabilities.argmax(-1)

    def ranked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q, 2)`` the two best probabilities and their class indices."""
        return self.probabilities.topk(min(2, len(self.classes)), -1)

    @property
    def unknown(self) -> torch.Tensor:
        """``(Q,)`` whether each query matches none of the classes (always False without a threshold)."""
        if self.threshold is None or self.known is None:
            return torch.zeros(len(self.queries), dtype=torch.bool)
        return self.known < self.threshold

    def label_names(self) -> list[str]:
        """The answer for every query: its class, or ``unknown``."""
        return [self.UNKNOWN if u else self.classes[int(i)] for i, u in zip(self.labels, self.unknown)]

    def rows(self) -> list[dict[str, object]]:
        (top, idx) = self.ranked()
        rank = {q: r + 1 for r, q in enumerate(self.suggested)}
        known = self.known if self.known is not None else torch.full((len(self.queries),), float("nan"))
        return [{"path": str(path), "predicted": name, "confidence": round(float(p[0]), 6),
                 "runner_up": self.classes[int(i[1])], "runner_up_confidence": round(float(p[1]), 6),
                 "nearest": self.classes[int(i[0])], "known_score": round(float(k), 6), "suggested": rank.get(q, "")}
                for q, (path, name, p, i, k) in enumerate(zip(self.queries, self.label_names(), top, idx, known))]

    def write_csv(self, path: str | Path) -> None:
        """One row per query, written atomically (an interrupted run leaves no partial file): ``predicted`` (the
        class, or ``unknown``), ``confidence`` (the probability of the nearest class), ``runner_up`` and its
        probability, ``nearest`` (the most probable class, also for an unknown), ``known_score`` and
        ``suggested`` (its rank among the images to label next, else empty)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, text.getvalue())

    def __str__(self) -> str:
        shots = sorted({len(v) for v in self.supports.values()})
        shot = f"{shots[0]}" if len(shots) == 1 else f"{shots[0]}-{shots[-1]}"
        conf = self.ranked()[0][:, 0]
        return (f"labeled {len(self.queries)} images into {len(self.classes)} classes ({shot} supports each), "
                f"{self.mode}, with {self.checkpoint} on {self.device} in {self.seconds:.1f} s: median confidence "
                f"{float(conf.median()):.3f}, lowest {float(conf.min()):.3f}"
                + (f"; {int(self.unknown.sum())} unknown ({self.calibration})" if self.threshold is not None else "")
                + (f"; {len(self.suggested)} suggested to label next" if self.suggested else ""))


def support_files(folder: str | Path) -> dict[str, list[Path]]:
    """``class -> image files`` of a support folder with one subfolder per class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"support folder {folder} not found: pass --support DIR with one subfolder of images per class")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"support folder {folder} has no class subfolders: put each class's example images in "
                        f"{folder}/<class name>/")
    files = {c.name: image_files(c, skip_hidden=True) for c in classes}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DataError(f"class folder {folder / empty[0]} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                        f"add at least one example or remove the folder")
    if len(files) < 2:
        raise DataError(f"support folder {folder} has one class ({classes[0].name}): a few-shot model tells classes "
                        f"apart, give it at least two")
    return files


def query_files(folder: str | Path) -> list[Path]:
    """Every image under ``folder``, subfolders included, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"query folder {folder} not found: pass --query DIR holding the images to label")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DataError(f"query folder {folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}): put the images "
                        f"to label there")
    return files


def predict(checkpoint: str | Path, support: str | Path, query: str | Path, *, transductive: bool | None = None,
            knn: int | None = None, query_batch: int = 256, device: str = "auto", progress: bool = False,
            unknown: bool = False, rate: float = DEFAULT_RATE, threshold: float | None = None, suggest: int = 0,
            data_root: str | None = None) -> Predictions:
    """Label the images under ``query`` with the classes of ``support`` using a trained checkpoint: a
    :class:`~egnn.classifier.FewShotClassifier` fitted on the support folder.

    Args:
        transductive: score all queries together (default: the mode the checkpoint was trained in).
        knn: transductive on sparse k-nearest-neighbour graphs (default: the checkpoint's; 0 for dense).
        query_batch: queries per forward pass in the non-transductive mode (each query is its own graph, so
            the result does not depend on it).
        unknown: answer ``unknown`` for queries that fit no class: below ``threshold`` if given, else below the
            threshold calibrated for this many classes and examples at false-unknown ``rate`` on the checkpoint's
            validation classes (:mod:`egnn.unknowns`; saved beside the checkpoint, calibrated now if missing,
            which reads the checkpoint's dataset from ``data_root``).
        suggest: name this many queries to label next (:mod:`egnn.suggest`).
    """
    from egnn.classifier import FewShotClassifier
    from egnn.suggest import suggest as pick

    start = time.perf_counter()
    clf = FewShotClassifier.load(checkpoint, device, transductive, knn, query_batch)
    supports, queries = support_files(support), query_files(query)
    if unknown and Predictions.UNKNOWN in supports:
        raise DataError(f"a support class is named '{Predictions.UNKNOWN}', the answer for images of none of the "
                        f"classes: rename that folder")
    support_paths = [p for c in supports for p in supports[c]]
    clf.check_memory(len(support_paths), len(queries))  # before reading any image
    bar = _bar(progress)
    with bar:
        task = bar.add_task("reading images", total=len(support_paths) + len(queries)) if progress else None
        advance = (lambda n: bar.advance(task, n)) if progress else None
        clf.fit(support_paths, [c for c in supports for _ in supports[c]], advance)
        scores = clf.score(queries, advance)  # probabilities (Q, way), columns in the sorted class order
    cut, how = None, ""
    if unknown:
        cut, how = unknown_threshold(clf, checkpoint, [len(v) for v in supports.values()], rate, threshold, data_root)
    return Predictions(list(clf.classes_), supports, queries, scores.probabilities, clf.mode, str(checkpoint),
                       describe(clf.device), time.perf_counter() - start, known=scores.known, threshold=cut,
                       suggested=pick(scores.probabilities, scores.affinity, suggest) if suggest else [],
                       calibration=how)


def unknown_threshold(clf, checkpoint, shots: list[int], rate: float, threshold: float | None,
                      data_root: str | None, calibrate_now: bool = True) -> tuple[float, str]:
    """The threshold on the known-score and where it came from: given, saved for this shape, or (with
    ``calibrate_now``) calibrated now on the checkpoint's validation classes and saved beside the checkpoint."""
    from egnn.unknowns import calibrate, find_calibration, save_calibration

    if threshold is not None:
        return threshold, f"known-score threshold {threshold:g}, given"
    way, shot = len(shots), max(1, sorted(shots)[len(shots) // 2])
    found = find_calibration(checkpoint, way, shot, clf.transductive, rate)
    if not calibrate_now:
        if found is None:
            raise DataError(f"no unknown threshold saved for {checkpoint}: calibrate one with egnn calibrate "
                            f"--checkpoint {checkpoint} --way {way} --shot {shot}")
    elif found is None or (found.way, found.shot) != (way, shot):
        try:
            from egnn.data import load_dataset

            val = load_dataset(clf.cfg.dataset, data_root, clf.size)["val"]
        except DataError as exc:
            if found is None:
                raise DataError(f"no unknown threshold saved for {checkpoint}, and its validation classes are not "
                                f"at hand to calibrate one ({exc}); pass --unknown-threshold, or run where the "
                                f"data is") from None
        else:
            found = calibrate(clf, val, way, shot, rate)
            save_calibration(checkpoint, found)
    assert found is not None
    capped = (f" (calibrated with {found.shot_used}, all its classes allow)"
              if found.shot_used not in (None, found.shot) else "")
    return found.threshold, (f"threshold {found.threshold:.3f}: a {100 * found.rate:g}% false-unknown rate on "
                             f"{found.split}, {found.way}-way {found.shot}-shot{capped}")


def _bar(enabled: bool):
    if not enabled:
        return nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def contact_sheet(predictions: Predictions, path: str | Path, flag_fraction: float = 0.1, tile: int = 64,
                  columns: int = 16, per_class: int = 48) -> dict[str, object]:
    """A PNG to check the labels before trusting them: per class, its supports (blue frames), then the queries
    predicted as that class from most to least confident, each with its confidence; the least confident
    ``flag_fraction`` of all queries are framed red. A class with more than ``per_class`` queries shows its
    most and least confident halves. Returns what was drawn (classes, flagged query paths, threshold)."""
    from PIL import Image, ImageDraw, ImageFont

    conf, labels = predictions.ranked()[0][:, 0], predictions.labels
    q = len(predictions.queries)
    flagged_count = min(q, max(1, round(flag_fraction * q))) if flag_fraction > 0 else 0
    order = conf.argsort()
    flagged = set(order[:flagged_count].tolist())
    threshold = float(conf[order[flagged_count - 1]]) if flagged_count else float("nan")
    font = ImageFont.load_default()
    pad, text_h, label_h = 4, 12, 18
    cell_w, cell_h = tile + pad, tile + pad + text_h

    def thumb(p: Path) -> Image.Image:
        with Image.open(p) as img:
            img = img.convert("RGB")
            img.thumbnail((tile - 4, tile - 4))
            return img.copy()

    blocks = []  # (class name, supports, [(query index or None for a gap)])
    for c, name in enumerate(predictions.classes):
        mine = (labels == c).nonzero().flatten()
        mine = mine[conf[mine].argsort(descending=True)].tolist()
        shown: list[int | None] = mine
        if len(mine) > per_class:
            shown = mine[:per_class // 2] + [None] + mine[-(per_class // 2):]
        blocks.append((name, predictions.supports[name], shown, len(mine)))
    rows = [(1 + (len(sup) + 1 + len(shown) - 1) // columns) for _, sup, shown, _ in blocks]
    width = columns * cell_w + 2 * pad
    height = label_h + sum(label_h + r * cell_h for r in rows) + 2 * pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), f"{q} queries, {len(predictions.classes)} classes; blue: supports; red: the "
              f"{flagged_count} least confident (confidence <= {threshold:.3f})", fill="black", font=font)
    y0 = label_h + pad
    for (name, sup, shown, total), r in zip(blocks, rows):
        draw.text((pad, y0 + 3), f"{name}: {len(sup)} supports, {total} predicted", fill="black", font=font)
        y0 += label_h
        cells: list[tuple[str, object]] = [("support", p) for p in sup] + [("gap", None)] + \
                                          [("query", i) if i is not None else ("more", total - len(shown) + 1)
                                           for i in shown]
        for k, (kind, item) in enumerate(cells):
            x, y = pad + (k % columns) * cell_w, y0 + (k // columns) * cell_h
            if kind == "gap":
                continue
            if kind == "more":
                draw.text((x + 4, y + tile // 2 - 6), f"... {item} more", fill="gray", font=font)
                continue
            image = thumb(item if kind == "support" else predictions.queries[item])
            colour = "royalblue" if kind == "support" else ("red" if item in flagged else "lightgray")
            draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=colour, width=3 if colour != "lightgray" else 1)
            sheet.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
            if kind == "query":
                draw.text((x + 2, y + tile + 1), f"{float(conf[item]):.2f}", fill=colour if colour == "red" else "black",
                          font=font)
        y0 += r * cell_h
    # a few dozen colours (ink, paper, frames) suffice: a palette PNG is a fraction of the RGB one's size
    atomic_save(sheet.quantize(64), path, write=lambda img, f: img.save(f, format="PNG", optimize=True))
    return {"classes": len(predictions.classes), "queries": q, "flagged": [str(predictions.queries[i]) for i in
                                                                           sorted(flagged)],
            "flag_threshold": threshold}
