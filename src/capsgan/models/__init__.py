"""Generators and discriminators; plain ``nn.Module``s with no framework code."""

from capsgan.models.capsule_discriminator import CapsuleDiscriminator
from capsgan.models.capsules import PrimaryCapsules, RoutingCapsules, dynamic_routing, squash
from capsgan.models.cnn_discriminator import CNNDiscriminator
from capsgan.models.generator import Generator

__all__ = [
    "CNNDiscriminator",
    "CapsuleDiscriminator",
    "Generator",
    "PrimaryCapsules",
    "RoutingCapsules",
    "dynamic_routing",
    "squash",
]
