"""EGNN's graph layers, one per file: the node update (Eq. 3), the edge update (Eqs. 4-5) and the network that
alternates them."""
from egnn.nn.edge_update import EdgeUpdate
from egnn.nn.egnn import EGNN
from egnn.nn.node_update import NodeUpdate

__all__ = ["EGNN", "EdgeUpdate", "NodeUpdate"]
