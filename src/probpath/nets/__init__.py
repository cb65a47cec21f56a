"""Networks shared by every family: an MLP with a time input and its time embeddings."""

from probpath.nets.embedding import broadcast_time, sinusoidal_embedding
from probpath.nets.mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "MLP", "broadcast_time", "sinusoidal_embedding"]
