"""Networks shared by every family: an MLP with time (and label) inputs and their
embeddings; for images a U-Net, its encoder (the noisy classifier), and FFJORD-style
convolutional fields and energies; :func:`build_net` picks one from the data's shape."""

from probpath.nets.build import NET_KINDS, NET_ROLES, build_net, resolve_net, unet_config_for
from probpath.nets.conv import ConcatConv2d, ConvEnergy, ConvField
from probpath.nets.embedding import broadcast_time, check_labels, sinusoidal_embedding
from probpath.nets.mlp import ACTIVATIONS, MLP
from probpath.nets.unet import UNet, UNetEncoder

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "NET_KINDS",
    "NET_ROLES",
    "ConcatConv2d",
    "ConvEnergy",
    "ConvField",
    "UNet",
    "UNetEncoder",
    "broadcast_time",
    "build_net",
    "check_labels",
    "resolve_net",
    "sinusoidal_embedding",
    "unet_config_for",
]
