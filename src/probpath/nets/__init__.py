"""Networks shared by every family: an MLP with time (and label) inputs and their embeddings."""

from probpath.nets.embedding import broadcast_time, check_labels, sinusoidal_embedding
from probpath.nets.mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "MLP", "broadcast_time", "check_labels", "sinusoidal_embedding"]
