"""llm-i2i: make small item-to-item recommenders better with LLM-generated, LLM-filtered training data."""

__version__ = "0.1.0"
