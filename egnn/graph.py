"""Episodes as fully connected ``torch_geometric`` graphs, and their dense batched view.

Edge features are 2 channels, (similarity, dissimilarity), initialised as in EGNN (Kim et al., 2019):

* ``[1, 0]`` between two labeled supports of the same class, and on every self-loop (a node is its own class);
* ``[0, 1]`` between two labeled supports of different classes;
* ``[0.5, 0.5]`` on every other edge: any edge touching a query or an unlabeled support. Their labels
  therefore never reach the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_adj, to_dense_batch

from egnn.episodes import Episode
from egnn.nn.utils import full_mask


def init_edge_attr(labels: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """Initial edges ``(..., N, N, 2)`` from labels ``(..., N)`` and a mask ``(..., N)`` of nodes whose label is
    known (leading dimensions broadcast, e.g. a batch of episodes sharing one mask)."""
    same = (labels[..., :, None] == labels[..., None, :]).float()
    known = (labeled[..., :, None] & labeled[..., None, :]).float()
    sim = known * same + (1 - known) * 0.5
    sim.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return torch.stack([sim, 1 - sim], -1)


def episode_to_graph(episode: Episode, full_edges: bool = True) -> Data:
    """One episode -> one ``Data`` with ``N = way * (shot + query)`` nodes and ``N * N`` edges (self-loops included);
    ``full_edges=False`` leaves the edges out, for methods that build their own sparse graph (``--knn``)."""
    n, s = episode.labels.numel(), episode.way * episode.shot
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[:s] = episode.labeled
    return support_query_graph(episode.images, episode.labels, s, labeled, episode.way, full_edges)


def support_query_graph(x: torch.Tensor, y: torch.Tensor, supports: int, labeled: torch.Tensor, way: int,
                        full_edges: bool = True) -> Data:
    """A graph of ``supports`` support nodes followed by query nodes, any number of each class (uneven shots, as
    ``egnn predict`` meets them). ``y (N,)`` is read only where ``labeled (N,)``; queries may carry -1.

    Shapes: ``x (N, C, H, W)``; edges ``(2, N * N)`` and ``edge_attr (N * N, 2)`` unless ``full_edges=False``.
    """
    n = y.numel()
    support = torch.arange(n) < supports
    nodes = dict(x=x, y=y, support_mask=support, query_mask=~support, labeled_mask=labeled, way=way, num_nodes=n)
    if not full_edges:
        return Data(**nodes)
    edge_index = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)  # (2, N*N)
    return Data(**nodes, edge_index=edge_index,
                edge_attr=init_edge_attr(y, labeled).view(n * n, 2),  # (N*N, 2)
                edge_label=(y[:, None] == y[None, :]).float().view(n * n))  # (N*N,) target: same class


def collate(episodes: list[Episode], full_edges: bool = True) -> Batch:
    """One PyG ``Batch`` of episode graphs. Episodes of one shape (the usual case: one sampler) are batched
    with whole-batch tensor ops; the result is identical to ``Batch.from_data_list`` of :func:`episode_to_graph`.
    ``full_edges=False`` builds nodes only (a 5000-node episode would otherwise carry 25M edges)."""
    first = episodes[0]
    if any(e.labels.shape != first.labels.shape or e.way != first.way or not torch.equal(e.labeled, first.labeled)
           for e in episodes):
        return Batch.from_data_list([episode_to_graph(e, full_edges) for e in episodes])
    b, n, s = len(episodes), first.labels.numel(), first.way * first.shot
    y = torch.stack([e.labels for e in episodes])  # (B, N)
    support = torch.arange(n) < s
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[:s] = first.labeled
    nodes = dict(x=torch.cat([e.images for e in episodes]), y=y.flatten(), support_mask=support.repeat(b),
                 nodes_per_episode=n,  # every episode has n nodes: lets the encoder see node slots without a sync
                 supports_per_episode=s, episode_way=first.way,  # the dense view then needs no sync either
                 query_mask=(~support).repeat(b), labeled_mask=labeled.repeat(b), way=torch.full((b,), first.way),
                 batch=torch.arange(b).repeat_interleave(n), ptr=torch.arange(b + 1) * n)
    if not full_edges:
        return Batch(**nodes)
    pairs = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")).flatten(1)  # (2, N*N)
    offsets = (torch.arange(b) * n).repeat_interleave(n * n)  # (B*N*N,)
    return Batch(**nodes, edge_index=pairs.repeat(1, b) + offsets,
                 edge_attr=init_edge_attr(y, labeled).view(b * n * n, 2),
                 edge_label=(y[:, :, None] == y[:, None, :]).float().flatten())


def nodes_per_episode(batch: Batch) -> int:
    """Nodes of every episode of ``batch`` when :func:`collate` found them equal-sized, else 1 (unknown)."""
    n = getattr(batch, "nodes_per_episode", None)
    return int(n) if isinstance(n, int) else 1


@dataclass
class DenseEpisodes:
    """A batch of episode graphs as padded dense tensors (B episodes, at most N nodes each).

    ``init_edges`` is ``(B, N, N, 2)``; node masks are ``(B, N)`` bool; ``node_mask`` marks real nodes.
    """

    init_edges: torch.Tensor
    node_mask: torch.Tensor
    support_mask: torch.Tensor
    query_mask: torch.Tensor
    labeled_mask: torch.Tensor
    y: torch.Tensor
    way: int
    supports: int | None = None  # per episode, when every episode has the same layout (known on the host)
    queries: int | None = None

    @classmethod
    def from_batch(cls, batch: Batch) -> "DenseEpisodes":
        """The dense view of ``batch``. Equal-sized episodes collated by :func:`collate` are reshaped, with no
        host synchronisation; any other batch is padded with ``to_dense_batch`` (which reads sizes from the
        device)."""
        n, s = getattr(batch, "nodes_per_episode", None), getattr(batch, "supports_per_episode", None)
        if isinstance(n, int) and isinstance(s, int) and getattr(batch, "edge_attr", None) is not None:
            b = batch.ptr.shape[0] - 1
            view = lambda t: t.view(b, n)  # noqa: E731
            return cls(init_edges=batch.edge_attr.view(b, n, n, 2), node_mask=full_mask(b, n, device=batch.y.device),
                       support_mask=view(batch.support_mask), query_mask=view(batch.query_mask),
                       labeled_mask=view(batch.labeled_mask), y=view(batch.y), way=batch.episode_way,
                       supports=s, queries=n - s)
        b = batch.batch
        node_mask = to_dense_batch(b.new_ones(b.numel(), dtype=torch.bool), b)[0]
        dense = lambda t: to_dense_batch(t, b)[0]  # noqa: E731
        ways = batch.way.unique() if torch.is_tensor(batch.way) else torch.tensor([batch.way])
        if ways.numel() != 1:
            raise ValueError(f"Expected one way per batch, got {ways.tolist()}")
        return cls(
            init_edges=to_dense_adj(batch.edge_index, b, batch.edge_attr),
            node_mask=node_mask,
            support_mask=dense(batch.support_mask),
            query_mask=dense(batch.query_mask),
            labeled_mask=dense(batch.labeled_mask),
            y=dense(batch.y),
            way=int(ways[0]),
        )

    def per_query_index(self) -> torch.Tensor:
        """Node indices ``(Q, S+1)`` of the non-transductive graphs: all S supports, then one query.

        Requires equal-sized episodes with supports first, as :func:`episode_to_graph` builds them.
        """
        n = self.node_mask.shape[1]
        if self.supports is not None:  # laid out by collate: supports first, equal sizes
            s = self.supports
        else:
            s = int(self.support_mask[0].sum())
            if not (self.node_mask.all() and self.support_mask[:, :s].all() and not self.support_mask[:, s:].any()):
                raise ValueError("Expected equal-sized episodes with supports first for non-transductive inference")
        supports = torch.arange(s, device=self.y.device).expand(n - s, s)
        return torch.cat([supports, torch.arange(s, n, device=self.y.device)[:, None]], 1)

    def edge_target(self) -> torch.Tensor:
        """``(B, N, N)`` 1 where two nodes share a class. Used only by losses and metrics."""
        return (self.y[:, :, None] == self.y[:, None, :]).float()


def edge_init(edge_index: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """Initial features ``(E, 2)`` of the edges ``(j -> i)`` of any graph: the rule of :func:`init_edge_attr`."""
    src, dst = edge_index
    known = labeled[src] & labeled[dst]
    sim = torch.where(known, (y[src] == y[dst]).float(), torch.full_like(src, 0.5, dtype=torch.float))
    sim = sim.masked_fill(src == dst, 1.0)
    return torch.stack([sim, 1 - sim], -1)


def knn_edges(x: torch.Tensor, batch: torch.Tensor, k: int, anchors: torch.Tensor | None = None,
              k_anchor: int = 0, chunk: int = 1024) -> torch.Tensor:
    """Sparse episode graphs: ``edge_index (2, E)`` with an edge ``(j -> i)`` from each of node ``i``'s ``k``
    nearest nodes (Euclidean, same episode), from its ``k_anchor`` nearest ``anchors`` (e.g. labeled supports,
    so every query can vote), and a self-loop. Distances are computed ``chunk`` rows at a time.
    """
    n = x.shape[0]
    rows, cols = [torch.arange(n, device=x.device)], [torch.arange(n, device=x.device)]  # self-loops
    for start in range(0, n, chunk):  # chunks of rows, never single nodes
        i = torch.arange(start, min(start + chunk, n), device=x.device)
        d = torch.cdist(x[i], x)  # (c, N)
        d.masked_fill_(batch[i][:, None] != batch[None, :], float("inf"))  # other episodes
        d[torch.arange(i.numel()), i] = float("inf")  # self, added once above
        for count, extra in ((k, None), (k_anchor, anchors)):
            if count <= 0:
                continue
            dd = d if extra is None else d.masked_fill(~extra[None, :], float("inf"))
            dist, j = dd.topk(min(count, n - 1), largest=False)  # (c, k)
            keep = torch.isfinite(dist)
            rows.append(i[:, None].expand_as(j)[keep])
            cols.append(j[keep])
    dst, src = torch.cat(rows), torch.cat(cols)
    key = torch.unique(dst * n + src)  # drop duplicates (a near node that is also a near anchor)
    return torch.stack([key % n, key // n])  # (2, E): row 0 source j, row 1 target i
