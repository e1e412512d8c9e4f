"""catalog-similarity: "similar products" from deep-learning encoders and a vector database."""
