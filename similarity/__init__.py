"""catalog-similarity: "similar products" from deep-learning encoders and a vector database."""

__version__ = "0.2.0"
