"""Labeling a folder as a person does it: the model proposes, the person accepts or corrects, the rest is relabeled.

:class:`LabelingSession` is the state behind ``egnn app`` (and usable from a notebook): the examples per class
(the support folder, then every image the person has labeled), the images still to label, and the model's current
answer for each of those (its class or ``unknown``, confidence, and whether it is among the suggestions of what to
label next). Accepting or correcting an image moves it to the examples of its class and relabels the rest with
the one model pass of :class:`~egnn.classifier.FewShotClassifier`.

It reads the checkpoint, its saved unknown calibration, the support folder and the images to label, and writes
only the CSV it is asked to write: nothing else is read or written (no calibration is run: that needs the
checkpoint's dataset; ``egnn calibrate`` does it beforehand).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from egnn.data.paths import atomic_write_text
from egnn.errors import DataError, UserError
from egnn.predict import Predictions, support_files, unknown_threshold
from egnn.suggest import suggest
from egnn.unknowns import DEFAULT_RATE

UNKNOWN = Predictions.UNKNOWN


@dataclass
class Proposal:
    """The model's answer for one image still to label."""

    path: Path
    label: str  # a class, or UNKNOWN
    nearest: str
    confidence: float
    known_score: float
    suggested: int  # rank among the images to label next (1 = first), 0 if not suggested


class LabelingSession:
    """Examples per class, images to label, and the model's proposals for them.

    Args:
        checkpoint: a run's ``best.pt``.
        support: a folder with one subfolder of example images per class.
        images: the image files to label.
        suggestions: how many images to suggest labeling next after each pass.
        unknown: answer ``unknown`` below the calibrated threshold (needs a calibration saved beside the
            checkpoint for about this many classes; without one the session labels without unknowns and says so).
    """

    def __init__(self, checkpoint: str | Path, support: str | Path, images: list[str | Path], suggestions: int = 5,
                 unknown: bool = True, rate: float = DEFAULT_RATE, device: str = "cpu") -> None:
        from egnn.classifier import FewShotClassifier

        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise DataError(f"checkpoint {self.checkpoint} not found: give the path of a run's best.pt")
        self.examples: dict[str, list[Path]] = {c: list(p) for c, p in support_files(support).items()}
        if UNKNOWN in self.examples:
            raise DataError(f"a class folder is named '{UNKNOWN}', the answer for images of none of the classes: "
                            f"rename it")
        self.pending = sorted(dict.fromkeys(Path(p) for p in images))
        if not self.pending:
            raise DataError("no images to label: choose a folder that holds images, or drop some")
        self.by_person: dict[Path, str] = {}
        self.suggestions, self.unknown, self.rate = suggestions, unknown, rate
        self.clf = FewShotClassifier.load(self.checkpoint, device)
        self.notice = ""
        self.proposals: list[Proposal] = []
        self.relabel()

    @property
    def classes(self) -> list[str]:
        return sorted(self.examples)

    def relabel(self) -> None:
        """One pass of the model over the images still to label, with the examples as they stand."""
        self.proposals = []
        if not self.pending:
            return
        paths = [p for c in self.classes for p in self.examples[c]]
        self.clf.fit(paths, [c for c in self.classes for _ in self.examples[c]])
        scores = self.clf.score(self.pending)
        threshold = None
        if self.unknown:
            try:
                threshold, how = unknown_threshold(self.clf, self.checkpoint, [len(v) for v in self.examples.values()],
                                                   self.rate, None, None, calibrate_now=False)
                self.notice = f"unknown below a known-score of {how}"
            except UserError as exc:
                self.notice = f"no unknowns: {exc}"
        # the answers as egnn predict gives them (its class or unknown, nearest class, confidence, suggestion rank)
        answers = Predictions(list(self.clf.classes_), self.examples, self.pending, scores.probabilities, self.clf.mode,
                              str(self.checkpoint), "", 0.0, known=scores.known, threshold=threshold,
                              suggested=suggest(scores.probabilities, scores.affinity, self.suggestions)
                              if self.suggestions else [])
        self.proposals = [Proposal(path, row["predicted"], row["nearest"], row["confidence"], row["known_score"],
                                   row["suggested"] or 0) for path, row in zip(self.pending, answers.rows())]

    def groups(self) -> dict[str, list[Proposal]]:
        """Proposals per class, most confident first, ``unknown`` last."""
        out: dict[str, list[Proposal]] = {c: [] for c in self.classes}
        out[UNKNOWN] = []
        for p in self.proposals:
            out[p.label].append(p)
        for label, items in out.items():
            items.sort(key=lambda p: (-p.known_score if label == UNKNOWN else -p.confidence, str(p.path)))
        return out

    def label(self, path: str | Path, label: str | None = None) -> None:
        """The person's label for ``path`` (``None``: accept the model's class, or its nearest for an unknown):
        the image joins that class's examples, and the rest is relabeled."""
        path = Path(path)
        proposal = next((p for p in self.proposals if p.path == path), None)
        if proposal is None:
            raise DataError(f"{path} is not among the images still to label")
        label = proposal.nearest if label in (None, "") else label
        if label not in self.examples:
            raise DataError(f"'{label}' is not a class here: choose one of {', '.join(self.classes)}")
        self.by_person[path] = label
        self.examples[label].append(path)
        self.pending.remove(path)
        self.relabel()

    def rows(self) -> list[dict[str, object]]:
        """Every image to label: the person's label, or the model's proposal."""
        rows = [{"path": str(p), "label": label, "by": "person", "confidence": "", "known_score": "", "suggested": ""}
                for p, label in self.by_person.items()]
        rows += [{"path": str(p.path), "label": p.label, "by": "model", "confidence": round(p.confidence, 6),
                  "known_score": round(p.known_score, 6), "suggested": p.suggested or ""} for p in self.proposals]
        return sorted(rows, key=lambda r: r["path"])

    def write_csv(self, path: str | Path) -> Path:
        text = io.StringIO()
        writer = csv.DictWriter(text, ["path", "label", "by", "confidence", "known_score", "suggested"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, text.getvalue())
        return Path(path)

    def summary(self) -> str:
        groups = self.groups()
        known = sum(len(v) for k, v in groups.items() if k != UNKNOWN)
        return (f"{len(self.by_person)} labeled by you, {known} by the model, {len(groups[UNKNOWN])} unknown; "
                f"{len(self.examples)} classes with {sum(map(len, self.examples.values()))} examples. {self.notice}")

