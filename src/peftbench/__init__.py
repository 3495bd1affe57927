"""peftbench: benchmark parameter-efficient fine-tuning methods uniformly."""

__version__ = "0.1.0"
