"""Baselines behind EGNN's interface, registered in ``egnn.methods.METHODS`` on import."""
from baselines.gnn import NodeLabelingGNN
from baselines.protonet import PrototypicalNetworks

__all__ = ["NodeLabelingGNN", "PrototypicalNetworks"]
