"""One interface for every few-shot method: the trainer and the evaluation never branch on a name."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

from egnn.graph import DenseEpisodes, nodes_per_episode
from egnn.nn.slot_norm import node_slots


@dataclass
class MethodOutput:
    """What a method returns for a batch of B episodes with Q queries each.

    Attributes:
        logits: ``(B, Q, way)`` class scores of the queries.
        query_labels: ``(B, Q)`` true labels of the queries (for loss and metrics only).
        episode_metrics: extra per-episode metrics, each ``(B,)``, e.g. edge accuracy.
        extras: method-specific tensors, e.g. EGNN's edges of every layer.
    """

    logits: torch.Tensor
    query_labels: torch.Tensor
    episode_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class FewShotMethod(nn.Module):
    """Owns the embedding network; a method reads the episode graph and scores the queries.

    Subclasses implement :meth:`forward` and :meth:`loss`. ``transductive=True`` lets queries see each
    other; ``False`` predicts every query from the supports and itself only.
    """

    #: transductive training with a random number of queries per class per batch (``--query-max -1``, auto) makes
    #: the method robust to the query count at test time: true of graph methods whose queries see each other
    varied_queries: bool = False
    #: the method can run transductive episodes on sparse kNN graphs (``--knn K``, its ``knn`` attribute)
    sparse_graphs: bool = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        # per-channel input normalisation; buffers, so every checkpoint carries the statistics it was trained with
        self.register_buffer("input_mean", torch.zeros(0))
        self.register_buffer("input_std", torch.zeros(0))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Normalise inputs with per-channel ``mean`` and ``std`` (``[0, 1]`` units), e.g. the training split's."""
        self.input_mean = mean.detach().clone().float().to(self.backbone_device)
        self.input_std = std.detach().clone().float().to(self.backbone_device)

    @property
    def backbone_device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        for name in ("input_mean", "input_std"):  # buffers take the saved statistics' shape; checkpoints
            state.setdefault(prefix + name, torch.zeros(0))  # written before normalisation existed had none
            setattr(self, name, torch.empty_like(state[prefix + name]).to(self.backbone_device))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images → floats in ``[0, 1]``, then standardised per channel when statistics are set. Grayscale
        images meet a model with 3-channel statistics (e.g. one imported from the reference code) as 3 equal
        channels."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        if x.shape[1] == 1 and self.input_mean.numel() > 1:
            x = x.expand(-1, self.input_mean.numel(), -1, -1)
        if self.input_mean.numel():
            x = (x - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        return x

    def encode(self, x: torch.Tensor, chunk: int = 1024, slots: int = 1) -> torch.Tensor:
        """Embeddings ``(T, D)`` of images ``(T, C, H, W)``; without autograd, in chunks, so a 5000-image episode
        never holds all its activations at once (exact in eval mode, where BatchNorm uses running statistics).

        ``slots``: images are episodes of that many nodes, episode-major; a backbone's
        :class:`~egnn.nn.slot_norm.SlotBatchNorm` layers then take training statistics per node slot, as the
        reference code does by encoding one slot at a time.
        """
        if torch.is_grad_enabled() or self.training or x.shape[0] <= chunk:
            with node_slots(self.backbone, slots):
                return self.backbone(self.normalize(x))
        return torch.cat([self.backbone(self.normalize(x[i:i + chunk])) for i in range(0, x.shape[0], chunk)])

    def embed(self, batch: Batch) -> tuple[torch.Tensor, DenseEpisodes]:
        """Embed every image once: ``(B, N, D)`` features and the dense view of the episodes."""
        x = batch.x
        if x.dim() != 4:
            raise ValueError(f"Expected images of shape (nodes, C, H, W), got {tuple(x.shape)}")
        feats = self.encode(x, slots=nodes_per_episode(batch))  # (T, D)
        dense = DenseEpisodes.from_batch(batch)
        if dense.queries is not None:  # equal-sized episodes: a reshape, no host sync
            return feats.view(dense.y.shape[0], dense.y.shape[1], -1), dense
        v, _ = to_dense_batch(feats, batch.batch)  # (B, N, D)
        return v, dense

    @staticmethod
    def queries(t: torch.Tensor, dense: DenseEpisodes) -> torch.Tensor:
        """Rows of ``t (B, N, ...)`` at query nodes: ``(B, Q, ...)``; every episode must hold Q queries."""
        if dense.queries is not None:  # collated layout: supports first, then the queries; no host sync
            return t[:, dense.supports:]
        q = dense.query_mask.sum(1)
        if (q != q[0]).any():
            raise ValueError(f"Expected the same number of queries in every episode, got {q.tolist()}")
        return t[dense.query_mask].view(t.shape[0], int(q[0]), *t.shape[2:])

    # -- what the trainer, the evaluation and egnn predict ask of a method -----------------------------------
    @classmethod
    def embedding_features(cls, cfg) -> int:
        """Width of the embedding the backbone ends in (0: the backbone's own features)."""
        return cfg.embedding

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse, with a :class:`~egnn.errors.ConfigError`, settings this method cannot run with; called by
        :meth:`egnn.config.Config.validate`, so a bad combination fails before any data is read."""
        if cfg.knn and not cls.sparse_graphs:
            from egnn.errors import ConfigError

            raise ConfigError(f"--knn builds sparse graphs, which model {cfg.model} does not use: drop --knn, or "
                              f"use --model egnn")

    def bind_training_split(self, split) -> None:
        """Called once by the trainer with the training split, before the optimiser is built: where a method's
        parameters depend on the training classes (a classifier's head), it creates them here."""

    def training_sampler(self, split, cfg, query: int):
        """What training batches are drawn from: ``.batch(first, count)`` is batch ``first..first+count`` of a
        seeded stream. Episodes of ``cfg.way`` classes with ``query`` queries per class, by default."""
        from egnn.episodes import EpisodeSampler

        return EpisodeSampler(split, cfg.way, cfg.shot, query, seed=cfg.seed, label_ratio=cfg.label_ratio,
                              drop_unlabeled=cfg.unlabeled == "drop")

    def collate_training(self, items, transductive: bool):
        """One model input from a training sampler's batch (with ``.x`` images and ``.to(device)``): by default
        the episodes as one disconnected graph batch."""
        from egnn.graph import collate

        return collate(items, full_edges=not self.builds_own_edges(transductive))

    def optimizer(self, params, cfg):
        """``(optimizer, schedule)`` for the trainable ``params``; the trainer scales the base learning rate by the
        :class:`~egnn.schedules.LRSchedule` before every step. EGNN's Adam with ``cfg.lr_schedule``, by default."""
        from egnn.schedules import episodic_schedule

        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay), episodic_schedule(cfg)

    def builds_own_edges(self, transductive: bool) -> bool:
        """True where the method builds its own (sparse) edges: the batch then carries nodes only."""
        return False

    def graph_name(self, transductive: bool) -> str:
        """The graph a mode runs on, recorded with every result: ``dense`` or e.g. ``knn20``."""
        return "dense"

    def graph_bytes(self, tasks: int, supports: int, queries: int, transductive: bool, training: bool) -> int:
        """Bytes the graph computation needs for ``tasks`` episodes of ``supports`` + ``queries`` nodes; 0 where
        it is small next to the images (prototypes, node classifiers). Checked before any work."""
        return 0

    def prepare_data_parallel(self) -> None:
        """Make the method compute the same under torchrun as on one process: BatchNorm statistics over all ranks."""
        from egnn.distributed import globalize_batchnorm

        globalize_batchnorm(self)

    def figure(self, episode, transductive: bool):
        """A matplotlib figure of how the method reads ``episode``, logged at every validation (``--log
        tensorboard``); None where the method has nothing to draw."""
        return None

    def class_probabilities(self, logits: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
        """``(..., way)`` probabilities from :attr:`MethodOutput.logits` for classes with ``shots (way,)`` labeled
        supports each: a softmax, for methods trained with cross-entropy."""
        return logits.float().softmax(-1)

    def known_score(self, logits: torch.Tensor, shots: torch.Tensor) -> torch.Tensor:
        """``(...,)`` how well each query fits the class it fits best: high for a query of a support class, low for
        one of a class absent from the supports (``egnn predict --unknown`` thresholds it). By default the top
        class probability."""
        return self.class_probabilities(logits, shots).amax(-1)

    def query_affinity(self, out: MethodOutput) -> torch.Tensor | None:
        """``(Q, Q)`` how alike the method finds each pair of queries of a one-episode output (``egnn predict
        --suggest`` spreads its picks with it), or None if it does not compare queries."""
        return None

    def forward(self, batch: Batch, transductive: bool = True) -> MethodOutput:
        raise NotImplementedError

    def loss(self, out: MethodOutput) -> torch.Tensor:
        raise NotImplementedError


def prototype_logits(v: torch.Tensor, dense: DenseEpisodes) -> torch.Tensor:
    """``(B, Q, way)`` negative squared Euclidean distances of the queries to the class prototypes, each the mean
    embedding of its class's *labeled* supports, for node features ``v (B, N, D)``."""
    onehot = F.one_hot(dense.y.clamp_min(0), dense.way).to(v.dtype) * dense.labeled_mask[..., None]  # (B, N, way)
    prototypes = onehot.transpose(1, 2) @ v / onehot.sum(1)[..., None].clamp_min(1)  # (B, way, D)
    return -torch.cdist(FewShotMethod.queries(v, dense), prototypes).pow(2)
