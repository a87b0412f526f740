"""Accuracy on fixed episodes, mean and 95% CI: the one evaluation behind validation, tests, ``egnn eval`` and
the sweeps. Episode ``i`` depends only on ``(seed, i)``, so every model evaluated with a seed sees the same episodes."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from egnn.config import Config
from egnn.data import FewShotSplit
from egnn.devices import describe, resolve_device
from egnn.episodes import EpisodeSampler
from egnn.graph import collate
from egnn.losses import mean_ci95, query_accuracy
from egnn.memory import check_episode_memory, out_of_memory_hint
from egnn.methods import FewShotMethod


@dataclass
class EvalResult:
    """Mean and 95% CI of per-episode metrics, with the protocol that produced them."""

    accuracy: float
    accuracy_ci95: float
    metrics: dict[str, tuple[float, float]]
    protocol: dict[str, Any]
    per_episode: list[float]
    seconds: float

    def to_dict(self, per_episode: bool = False) -> dict[str, Any]:
        out = {"accuracy": self.accuracy, "accuracy_ci95": self.accuracy_ci95,
               **{f"{k}": v[0] for k, v in self.metrics.items()},
               **{f"{k}_ci95": v[1] for k, v in self.metrics.items()},
               "protocol": self.protocol, "seconds": round(self.seconds, 2)}
        if per_episode:
            out["per_episode_accuracy"] = self.per_episode
        return out

    def __str__(self) -> str:
        p = self.protocol
        mode = "transductive" if p["transductive"] else "non-transductive"
        if p.get("graph", "dense") != "dense":
            mode += f" ({p['graph']} graph)"
        return (f"{p['dataset']}/{p['split']} {p['way']}-way {p['shot']}-shot, {p['query']} queries/class, "
                f"{mode}, label ratio {p['label_ratio']}, {p['episodes']} episodes (seed {p['seed']}): "
                f"accuracy {100 * self.accuracy:.2f} ± {100 * self.accuracy_ci95:.2f}%"
                + (f" on {p['device']}" if p.get("device") else ""))


def autocast(device: str | torch.device, precision: str):
    """Mixed precision for ``precision`` bf16 / fp16 (matmuls and convolutions in 16 bits; BatchNorm statistics
    and the losses stay in float32); a no-op for fp32."""
    kind = torch.device(device).type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(kind, dtype=dtype, enabled=dtype is not None)


@torch.inference_mode()
def evaluate(method: FewShotMethod, split: FewShotSplit, *, way: int, shot: int, query: int, episodes: int,
             transductive: bool, seed: int = 0, label_ratio: float = 1.0, batch_size: int = 50,
             device: str | torch.device = "auto", dataset: str = "", drop_unlabeled: bool = False,
             precision: str = "fp32") -> EvalResult:
    """Accuracy over ``episodes`` fixed episodes: episode ``i`` depends only on ``(seed, i)``."""
    device = resolve_device(device)
    sampler = EpisodeSampler(split, way, shot, query, seed=seed, label_ratio=label_ratio,
                             drop_unlabeled=drop_unlabeled)
    check_episode_memory(method, tasks=batch_size, way=way, shot=shot, query=query, transductive=transductive,
                         training=False, batch_flag="--eval-batch (egnn eval: --batch)", device=device)
    sparse = method.builds_own_edges(transductive)
    was_training = method.training
    method.eval()
    start, accs, extra = time.perf_counter(), [], {}
    for first in range(0, episodes, batch_size):
        batch = collate(sampler.batch(first, min(batch_size, episodes - first)), full_edges=not sparse).to(device)
        with out_of_memory_hint("--eval-batch (egnn eval: --batch)"), autocast(device, precision):
            out = method(batch, transductive=transductive)
        accs.append(query_accuracy(out.logits, out.query_labels))  # stays on the device: no sync per batch
        for k, v in out.episode_metrics.items():
            extra.setdefault(k, []).append(v)
    method.train(was_training)
    acc = torch.cat(accs).cpu()
    extra = {k: [torch.cat(v).float().cpu()] for k, v in extra.items()}
    protocol = {"dataset": dataset, "split": split.name.split("/")[-1], "way": way, "shot": shot, "query": query,
                "episodes": episodes, "transductive": transductive, "label_ratio": label_ratio,
                "unlabeled": "drop" if drop_unlabeled else "keep", "seed": seed,
                "graph": method.graph_name(transductive),
                "device": describe(device), "precision": precision}
    return EvalResult(*mean_ci95(acc), {k: mean_ci95(torch.cat(v)) for k, v in extra.items()}, protocol,
                      acc.tolist(), time.perf_counter() - start)


def evaluate_config(method: FewShotMethod, split: FewShotSplit, cfg: Config, episodes: int,
                    query: int | None = None, device: str | torch.device | None = None) -> EvalResult:
    """:func:`evaluate` with the protocol of ``cfg`` (way, shot, eval queries, mode, label ratio, eval seed)."""
    return evaluate(method, split, way=cfg.test_way or cfg.way, shot=cfg.shot, query=query or cfg.eval_query,
                    episodes=episodes, transductive=cfg.transductive, seed=cfg.eval_seed, label_ratio=cfg.label_ratio,
                    batch_size=cfg.eval_batch, device=device or cfg.device, dataset=cfg.dataset,
                    drop_unlabeled=cfg.unlabeled == "drop", precision=cfg.precision)
