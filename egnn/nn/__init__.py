from egnn.nn.edge_update import EdgeUpdate
from egnn.nn.egnn import EGNN
from egnn.nn.node_update import NodeUpdate

__all__ = ["EGNN", "EdgeUpdate", "NodeUpdate"]
