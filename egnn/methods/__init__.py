"""Method registry: ``--model egnn`` (baselines register themselves here too)."""
from __future__ import annotations

from egnn.errors import ConfigError
from egnn.methods.base import FewShotMethod, MethodOutput
from egnn.methods.classifier import PretrainClassifier
from egnn.methods.egnn import EGNNMethod
from egnn.methods.mtl import MTLClassifier

METHODS: dict[str, type[FewShotMethod]] = {"egnn": EGNNMethod, "mtl": MTLClassifier, "classifier": PretrainClassifier}


def register_method(name: str):
    def wrap(cls: type[FewShotMethod]) -> type[FewShotMethod]:
        METHODS[name] = cls
        return cls
    return wrap


def method_class(name: str) -> type[FewShotMethod]:
    import baselines  # noqa: F401  (registers the baselines; imported late to avoid a cycle)

    if name not in METHODS:
        raise ConfigError(f"unknown model '{name}': choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "EGNNMethod", "FewShotMethod", "MethodOutput", "PretrainClassifier", "method_class", "register_method"]
