"""egnn: few-shot image classification with Edge-Labeling Graph Neural Networks."""
__version__ = "0.1.0"

__all__ = ["FewShotClassifier"]


def __getattr__(name: str):
    if name == "FewShotClassifier":  # imported on first use: `import egnn` stays free of torch
        from egnn.classifier import FewShotClassifier

        return FewShotClassifier
    raise AttributeError(f"module 'egnn' has no attribute {name!r}")
