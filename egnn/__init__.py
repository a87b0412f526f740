"""egnn: few-shot image classification with Edge-Labeling Graph Neural Networks."""
__version__ = "0.1.0"
