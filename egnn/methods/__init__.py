"""Method registry: ``--model NAME`` picks a class here; a package adds its own through an entry point.

EGNN and the pretraining classifiers are built in. Other methods come from entry points in the group
``egnn.methods`` (the baselines of this repository register ``gnn`` and ``protonet`` that way in
``pyproject.toml``), loaded the first time a name is not found, so egnn never imports the packages that extend
it. In a script, ``register_method("name")(MyMethod)`` does the same for a class of one's own.
"""
from __future__ import annotations

from importlib.metadata import entry_points

from egnn.errors import ConfigError
from egnn.methods.base import FewShotMethod, MethodOutput
from egnn.methods.classifier import PretrainClassifier
from egnn.methods.egnn import EGNNMethod
from egnn.methods.mtl import MTLClassifier

METHODS: dict[str, type[FewShotMethod]] = {"egnn": EGNNMethod, "mtl": MTLClassifier, "classifier": PretrainClassifier}
ENTRY_POINT_GROUP = "egnn.methods"


def register_method(name: str):
    def wrap(cls: type[FewShotMethod]) -> type[FewShotMethod]:
        METHODS[name] = cls
        return cls
    return wrap


def load_plugins() -> None:
    """Register every method that an installed package names in the ``egnn.methods`` entry-point group."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        METHODS.setdefault(point.name, point.load())


def method_class(name: str) -> type[FewShotMethod]:
    if name not in METHODS:
        load_plugins()
    if name not in METHODS:
        raise ConfigError(f"unknown model '{name}': choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "EGNNMethod", "FewShotMethod", "MethodOutput", "PretrainClassifier", "load_plugins",
           "method_class", "register_method"]
