"""Models trained by the original EGNN code (github khy0809/fewshot-egnn) as egnn models.

The original saves ``{"enc_module_state_dict": ..., "gnn_module_state_dict": ...}``: an ``EmbeddingImagenet``
(Conv-4 whose convolutions are 1x1-free ``conv_{1..4}`` blocks and a ``layer_last`` linear + BatchNorm) and a
``GraphNetwork`` whose node and edge MLPs are 1x1 convolutions (``edge2node_net{l}.network.conv{i}``,
``node2edge_net{l}.sim_network.conv{i}`` and ``conv_out``). egnn's :class:`~egnn.backbones.conv4.Conv4` and
:class:`~egnn.nn.EGNN` compute the same functions with linear layers, so converting is renaming and squeezing
the 1x1 kernels. Nothing of the original code is used here: only the layout of its checkpoints.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from egnn.data.paths import atomic_write_text
from egnn.errors import CheckpointError

# miniImageNet pixel statistics the original's loaders normalise with (data.py), in [0, 1] units
REFERENCE_MEAN = tuple(x / 255.0 for x in (120.39586422, 115.59361427, 104.54012653))
REFERENCE_STD = tuple(x / 255.0 for x in (70.68188272, 68.27635443, 72.54505529))
CONV4_WIDTHS = (64, 96, 128, 256)  # EmbeddingImagenet's, fixed in its code
IMAGE_SIZE = 84

# what the original's images looked like, relative to egnn's datasets
INPUTS = {
    # ../shared/reference/ref_egnn_omniglot.py: Omniglot at 84x84, ink dark (255 - egnn's pixels), 3 equal channels
    "omniglot": "inverted",
    # the original's own miniImageNet / tieredImageNet pickles: RGB as egnn reads them
    "mini-imagenet": "plain",
    "tiered-imagenet": "plain",
}


def _linears(seq: nn.Module) -> list[str]:
    return [n for n, m in seq.named_modules() if isinstance(m, nn.Linear)]


def _norms(seq: nn.Module) -> list[str]:
    return [n for n, m in seq.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def key_map(method: nn.Module) -> dict[str, str]:
    """Original state-dict key -> egnn key, for an EGNN method with a Conv-4 backbone laid out as the original."""
    out: dict[str, str] = {}
    backbone = method.backbone
    convs = [n for n, m in backbone.features.named_children() if isinstance(m, nn.Conv2d)]
    norms = [n for n, m in backbone.features.named_children() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for i, (c, b) in enumerate(zip(convs, norms), start=1):
        out[f"enc.conv_{i}.0.weight"] = f"backbone.features.{c}.weight"
        out.update({f"enc.conv_{i}.1.{k}": f"backbone.features.{b}.{k}" for k in BN_KEYS})
    out["enc.layer_last.0.weight"], out["enc.layer_last.0.bias"] = "backbone.head.1.weight", "backbone.head.1.bias"
    out.update({f"enc.layer_last.1.{k}": f"backbone.head.2.{k}" for k in BN_KEYS})
    for l, (node, edge) in enumerate(zip(method.gnn.node_updates, method.gnn.edge_updates)):
        for i, (lin, bn) in enumerate(zip(_linears(node.transform), _norms(node.transform))):
            out[f"gnn.edge2node_net{l}.network.conv{i}.weight"] = f"gnn.node_updates.{l}.transform.{lin}.weight"
            out.update({f"gnn.edge2node_net{l}.network.norm{i}.{k}": f"gnn.node_updates.{l}.transform.{bn}.{k}"
                        for k in BN_KEYS})
        mlp = edge.similarity[0]
        for i, (lin, bn) in enumerate(zip(_linears(mlp), _norms(mlp))):
            out[f"gnn.node2edge_net{l}.sim_network.conv{i}.weight"] = f"gnn.edge_updates.{l}.similarity.0.{lin}.weight"
            out.update({f"gnn.node2edge_net{l}.sim_network.norm{i}.{k}": f"gnn.edge_updates.{l}.similarity.0.{bn}.{k}"
                        for k in BN_KEYS})
        for k in ("weight", "bias"):
            out[f"gnn.node2edge_net{l}.sim_network.conv_out.{k}"] = f"gnn.edge_updates.{l}.similarity.1.{k}"
    return out


def reference_shapes(enc: dict[str, torch.Tensor], gnn: dict[str, torch.Tensor]) -> dict[str, int]:
    """Embedding size, node and edge widths and layer count of an original checkpoint; errors name what is off."""
    try:
        emb = enc["layer_last.0.weight"].shape[0]
        layers = 1 + max(int(m.group(1)) for k in gnn for m in [re.match(r"edge2node_net(\d+)\.", k)] if m)
        node = gnn["edge2node_net0.network.conv1.weight"].shape[0]
        edge = gnn["node2edge_net0.sim_network.conv3.weight"].shape[0]
        widths = tuple(enc[f"conv_{i}.0.weight"].shape[0] for i in range(1, 5))
        linear_in = enc["layer_last.0.weight"].shape[1]
    except (KeyError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"not a checkpoint of the original EGNN code: its encoder or graph network lacks "
                              f"{exc}; pass a file it saved (enc_module_state_dict, gnn_module_state_dict)") from None
    if any(k.startswith("node2edge_net0.dsim_network") for k in gnn):
        raise CheckpointError("the checkpoint has a separate dissimilarity network (separate_dissimilarity=True), "
                              "which egnn's EGNN does not have: pass one trained with the original's defaults")
    if widths != CONV4_WIDTHS or linear_in != CONV4_WIDTHS[-1] * 25:
        raise CheckpointError(f"the checkpoint's encoder has widths {widths} and a {linear_in}-input linear layer; "
                              f"egnn imports the original's Conv-4 ({CONV4_WIDTHS}, 84x84 inputs, 6400 inputs)")
    return {"embedding": emb, "node_features": node, "edge_features": edge, "layers": layers}


def read_reference_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Encoder and graph-network state dicts (``module.`` prefixes of DataParallel removed) and the rest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: check the path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError,
            ModuleNotFoundError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}): pass a file "
                              f"saved by the original EGNN code") from None
    if not isinstance(blob, dict) or "enc_module_state_dict" not in blob or "gnn_module_state_dict" not in blob:
        raise CheckpointError(f"{path} is not a checkpoint of the original EGNN code (no enc_module_state_dict / "
                              f"gnn_module_state_dict): for egnn's own checkpoints use egnn eval directly")
    strip = lambda sd: {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}  # noqa: E731
    rest = {k: v for k, v in blob.items() if k not in ("enc_module_state_dict", "gnn_module_state_dict", "optimizer")}
    return strip(blob["enc_module_state_dict"]), strip(blob["gnn_module_state_dict"]), rest


def convert_state(method: nn.Module, enc: dict[str, torch.Tensor], gnn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """egnn state dict for ``method`` holding the original's weights (1x1 kernels squeezed to matrices)."""
    source = {**{f"enc.{k}": v for k, v in enc.items()}, **{f"gnn.{k}": v for k, v in gnn.items()}}
    mapping = key_map(method)
    state = dict(method.state_dict())
    missing = [k for k in mapping if k not in source]
    unused = [k for k in source if k not in mapping]
    if missing or unused:
        raise CheckpointError(f"the checkpoint does not fit the original's layout (missing {missing[:2]}, "
                              f"unexpected {unused[:2]}): pass a checkpoint of the unedited original code")
    for src, dst in mapping.items():
        value = source[src]
        if value.dim() == 4 and value.shape[-2:] == (1, 1):
            value = value[:, :, 0, 0]
        if state[dst].shape != value.shape:
            raise CheckpointError(f"{src} has shape {tuple(value.shape)}, egnn's {dst} {tuple(state[dst].shape)}: "
                                  f"the checkpoint's widths do not fit")
        state[dst] = value.to(state[dst].dtype).clone()
    return state


def reference_normalization(inputs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in egnn's ``[0, 1]`` units that reproduce the original's input pipeline.

    ``"plain"``: the original's Normalize. ``"inverted"``: the original saw ``255 - x`` (ink dark); since
    ``((1 - u) - m) / s = (u - (1 - m)) / (-s)``, the inversion folds into the statistics exactly.
    """
    mean, std = torch.tensor(REFERENCE_MEAN), torch.tensor(REFERENCE_STD)
    if inputs == "inverted":
        return 1.0 - mean, -std
    return mean, std


def import_reference(checkpoint: str | Path, out: str | Path, dataset: str = "omniglot", way: int = 5,
                     shot: int = 1, transductive: bool = True, provenance: dict[str, Any] | None = None) -> Path:
    """Turn a checkpoint of the original EGNN code into an egnn run directory (``best.pt``, ``config.yaml``,
    ``imported.json``) that ``egnn eval``, ``visualize`` and ``compare`` read. Returns the path of ``best.pt``."""
    import yaml

    from egnn.checkpoint import save_checkpoint
    from egnn.config import make_config
    from egnn.errors import ConfigError, UserError
    from egnn.models import build_method

    if dataset not in INPUTS:
        raise ConfigError(f"--dataset {dataset}: the original's inputs are known for {', '.join(INPUTS)}")
    out = Path(out)
    if (out / "best.pt").exists():
        raise UserError(f"{out} already holds a run: pass another --out")
    enc, gnn, rest = read_reference_checkpoint(checkpoint)
    shapes = reference_shapes(enc, gnn)
    cfg = make_config(dataset=dataset, image_size=IMAGE_SIZE, way=way, shot=shot, transductive=transductive,
                      model="egnn", backbone="conv4", encoder_dropout=-1.0, encoder_norm="slot",
                      conv4_padding="reference", graph_slope=0.01, normalize="off", augment="none",
                      query_max=0, out=str(out), **shapes)
    method = build_method(cfg, 3, IMAGE_SIZE)
    mean, std = reference_normalization(INPUTS[dataset])
    method.set_normalization(mean, std)
    method.load_state_dict(convert_state(method, enc, gnn))
    iteration = rest.get("iteration", 0)
    save_checkpoint(out / "best.pt", config=cfg.to_dict(), model=method.state_dict(), in_channels=3,
                    image_size=IMAGE_SIZE, backbone_arch=None, iteration=int(iteration) if iteration else 0,
                    val_acc=float(rest["val_acc"]) if "val_acc" in rest else None, imported_from=str(checkpoint))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(out / "imported.json", json.dumps({**(provenance or {}), "source": str(checkpoint),
                                                       "iteration": int(iteration) if iteration else 0,
                                                       "inputs": INPUTS[dataset], **shapes}, indent=2) + "\n")
    return out / "best.pt"
