"""The memory check refuses exactly the batches whose estimate exceeds the budget, before any work."""
import pytest

from egnn import memory
from egnn.errors import UserError
from tests.conftest import make_method


def test_the_memory_check_refuses_exactly_what_does_not_fit(monkeypatch):
    method = make_method()
    need = method.graph_bytes(40, 25, 25, transductive=True, training=True)
    assert need > 0
    check = dict(tasks=40, way=5, shot=5, query=5, transductive=True, training=True, batch_flag="--tasks-per-batch")
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: need - 1)
    with pytest.raises(UserError, match="a batch of 40 5-way episodes of 50 nodes as dense graphs needs about .*"
                                        "lower --tasks-per-batch, or use sparse graphs with --knn 20"):
        memory.check_episode_memory(method, **check)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: need)
    memory.check_episode_memory(method, **check)  # fits exactly: no error
    half = method.graph_bytes(20, 25, 25, transductive=True, training=True)
    assert half == pytest.approx(need / 2, rel=1e-6)  # dense graphs cost linearly in the tasks
