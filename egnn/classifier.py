"""A trained few-shot model as an estimator: ``fit`` a few labeled examples, then ``predict`` new images.

    from egnn import FewShotClassifier

    clf = FewShotClassifier.load("results/checkpoints/omniglot_5w1s.pt")
    clf.fit(["cat1.png", "cat2.png", "dog1.png"], ["cat", "cat", "dog"])   # paths, PIL images or tensors
    clf.predict(["a.png", "b.png"])            # -> ["dog", "cat"]
    clf.predict_proba(["a.png", "b.png"])      # -> (2, 2) tensor, columns in clf.classes_ order

Like easyfsl's ``process_support_set`` then ``forward``, and scikit-learn's ``fit`` / ``predict``: any labels
(strings included), any number of examples per class, transductive or not, on any device. Images are read as the
checkpoint's dataset reads its own files (size, channels, ink polarity); the normalisation is in the checkpoint.
``egnn predict`` is this class applied to folders.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch_geometric.data import Batch

from egnn.data.images import read_images
from egnn.data.registry import dataset_info
from egnn.devices import resolve_device
from egnn.errors import DataError, UserError
from egnn.graph import support_query_graph
from egnn.memory import check_bytes


@dataclass
class Scores:
    """One pass of a :class:`FewShotClassifier` over query images.

    Attributes:
        probabilities: ``(Q, way)`` class probabilities, columns in ``classes_`` order.
        known: ``(Q,)`` how well each query fits its best class; low for classes absent from the supports.
        affinity: ``(Q, Q)`` how alike the model finds two queries (transductive EGNN), else None.
    """

    probabilities: torch.Tensor
    known: torch.Tensor
    affinity: torch.Tensor | None = None


class FewShotClassifier:
    """Scores query images against labeled support images with a trained method, as ``egnn eval`` scores an
    episode: transductive over all queries at once (one dense graph, or a kNN graph with ``knn``), or each query
    alone with the supports, ``query_batch`` at a time.

    Attributes:
        classes_: the support labels, sorted (in first-seen order where they do not sort); column ``c`` of
            :meth:`predict_proba` is ``classes_[c]``.
        transductive: the mode (default: the one the checkpoint was trained in).
    """

    def __init__(self, method, cfg, inputs: tuple[int, int], device: torch.device, transductive: bool | None = None,
                 query_batch: int = 256, checkpoint: str = "") -> None:
        if query_batch < 1:
            raise UserError(f"--query-batch must be at least 1, got {query_batch}")
        self.method, self.cfg, self.device = method, cfg, device
        self.channels, self.size = inputs
        self.transductive = cfg.transductive if transductive is None else transductive
        self.query_batch, self.checkpoint = query_batch, checkpoint
        self.decode = dataset_info(cfg.dataset).decode
        self.classes_: list[Any] = []
        self._support: torch.Tensor | None = None  # (S, C, H, W) uint8, grouped by class
        self._shots = torch.zeros(0, dtype=torch.long)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto", transductive: bool | None = None,
             knn: int | None = None, query_batch: int = 256) -> "FewShotClassifier":
        """The model of a checkpoint written by ``egnn train`` (or ``egnn import-reference``); ``knn`` > 0 scores
        transductively on sparse kNN graphs (0: dense; default: the checkpoint's)."""
        from egnn.models import load_trained_with_inputs, use_sparse_graphs

        device = resolve_device(device)
        method, cfg, inputs = load_trained_with_inputs(checkpoint, device)
        if knn is not None:
            use_sparse_graphs(method, knn, checkpoint, cfg.model)
        return cls(method, cfg, inputs, device, transductive, query_batch, str(checkpoint))

    # -- inputs ------------------------------------------------------------------------------------------
    def images(self, images, progress=None) -> torch.Tensor:
        """``(N, C, H, W)`` uint8 in the model's input format from file paths, PIL images, or a tensor already
        in that format (uint8, or floats in [0, 1])."""
        if torch.is_tensor(images):
            x = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
            if x.dim() == 3:
                x = x[None]
            if tuple(x.shape[1:]) != (self.channels, self.size, self.size):
                raise ValueError(f"Expected images of shape (N, {self.channels}, {self.size}, {self.size}), the "
                                 f"checkpoint's inputs, got {tuple(x.shape)}: pass files or PIL images to have them "
                                 f"read like its dataset")
            return x.cpu()
        items = list(images)
        if not items:
            raise DataError("no images given: pass at least one")
        if all(isinstance(i, (str, Path)) for i in items):
            return read_images(items, self.decode, self.size, self.channels, progress)
        arrays = []
        for item in items:  # PIL images go through the dataset's own decoder, as a file would
            if isinstance(item, (str, Path)):
                arrays.append(torch.from_numpy(self.decode(str(item), self.size, self.channels)))
                continue
            if not hasattr(item, "save"):
                raise ValueError(f"Expected file paths, PIL images or a tensor, got {type(item).__name__}")
            buffer = io.BytesIO()
            item.save(buffer, format="PNG")
            buffer.seek(0)
            arrays.append(torch.from_numpy(self.decode(buffer, self.size, self.channels)))
        return torch.stack(arrays)

    # -- the estimator -----------------------------------------------------------------------------------
    def fit(self, images, labels: Sequence[Any], progress=None) -> "FewShotClassifier":
        """Take labeled support images: at least two classes, any number of images each."""
        labels = list(labels)
        x = self.images(images, progress)
        if len(labels) != x.shape[0]:
            raise ValueError(f"Expected one label per support image, got {len(labels)} labels for {x.shape[0]} images")
        classes = list(dict.fromkeys(labels))
        try:
            classes = sorted(classes)
        except TypeError:  # labels of mixed types keep the order they came in
            pass
        if len(classes) < 2:
            raise DataError(f"the supports hold one class ({classes[0]!r}): a few-shot model tells classes apart, "
                            f"give it at least two")
        index = torch.tensor([classes.index(label) for label in labels])
        order = torch.sort(index, stable=True).indices  # grouped by class, each class's images in the given order
        self.classes_, self._support = classes, x[order]
        self._shots = torch.bincount(index, minlength=len(classes))
        return self

    def predict_proba(self, images, progress=None) -> torch.Tensor:
        """``(Q, way)`` class probabilities of the query images (for EGNN: its vote normalised per class)."""
        return self.score(images, progress).probabilities

    def score(self, images, progress=None) -> "Scores":
        """Everything one pass over the query images gives: class probabilities, how well each query fits its best
        class (:meth:`~egnn.methods.FewShotMethod.known_score`), and the queries' pairwise affinity (transductive
        methods that compare queries, else None)."""
        if self._support is None:
            raise UserError("the classifier has no support images yet: call fit(images, labels) first")
        queries = self.images(images, progress)
        s, q, way = self._support.shape[0], queries.shape[0], len(self.classes_)
        method = self.method
        self.check_memory(s, q)
        x = torch.cat([self._support, queries])
        y = torch.cat([torch.arange(way).repeat_interleave(self._shots), torch.full((q,), -1)])  # queries unknown
        labeled = torch.arange(s + q) < s
        affinity = None
        with torch.inference_mode():
            if self.transductive:
                graph = support_query_graph(x, y, s, labeled, way, full_edges=not method.builds_own_edges(True))
                out = method(Batch.from_data_list([graph]).to(self.device), transductive=True)
                logits, affinity = out.logits[0], method.query_affinity(out)
            else:
                parts = []
                for first in range(0, q, self.query_batch):
                    rows = torch.cat([torch.arange(s), torch.arange(s + first, min(s + first + self.query_batch, s + q))])
                    graph = support_query_graph(x[rows], y[rows], s, labeled[rows], way)
                    parts.append(method(Batch.from_data_list([graph]).to(self.device), transductive=False).logits[0])
                logits = torch.cat(parts)
            return Scores(method.class_probabilities(logits, self._shots).cpu(),
                          method.known_score(logits, self._shots).float().cpu(),
                          None if affinity is None else affinity.cpu())

    def check_memory(self, supports: int, queries: int) -> None:
        """A one-line :class:`~egnn.errors.UserError` naming the fix if scoring ``queries`` images against
        ``supports`` would not fit in memory: before any image is read."""
        graph = self.method.graph_bytes
        if self.transductive:
            check_bytes(graph(1, supports, queries, transductive=True, training=False),
                        f"{supports + queries} images as one dense transductive graph", "use the sparse mode with "
                        "--knn 20, or --no-transductive", self.device)
        else:
            chunk = min(queries, self.query_batch)
            check_bytes(graph(1, supports, chunk, transductive=False, training=False),
                        f"{chunk} queries at a time with {supports} supports", "lower --query-batch", self.device)

    def predict(self, images) -> list[Any]:
        """The label of each query image: the most probable of ``classes_``."""
        return [self.classes_[i] for i in self.predict_proba(images).argmax(-1).tolist()]

    @property
    def mode(self) -> str:
        """``transductive``, ``transductive (knn20 graph)`` or ``non-transductive``."""
        if not self.transductive:
            return "non-transductive"
        sparse = self.method.builds_own_edges(True)
        return "transductive" + (f" ({self.method.graph_name(True)} graph)" if sparse else "")
