"""Baselines behind EGNN's interface: ``--model gnn`` and ``--model protonet``, registered with egnn through the
``egnn.methods`` entry points in ``pyproject.toml`` (egnn loads them by name; it never imports this package)."""
from baselines.gnn import NodeLabelingGNN
from baselines.protonet import PrototypicalNetworks

__all__ = ["NodeLabelingGNN", "PrototypicalNetworks"]
