"""Generators and discriminators; plain ``nn.Module``s with no framework code."""

from capsgan.models.capsule_discriminator import CapsuleDiscriminator
from capsgan.models.capsules import PrimaryCapsules, RoutingCapsules, dynamic_routing, squash
from capsgan.models.cnn_discriminator import CNNDiscriminator
from capsgan.models.generator import Generator
from capsgan.models.interface import CapsuleTrace, ScoreKind, score_kind, supports_capsule_trace
from capsgan.models.sn_discriminator import SNDiscriminator

__all__ = [
    "CNNDiscriminator",
    "CapsuleDiscriminator",
    "CapsuleTrace",
    "Generator",
    "PrimaryCapsules",
    "RoutingCapsules",
    "SNDiscriminator",
    "ScoreKind",
    "dynamic_routing",
    "score_kind",
    "squash",
    "supports_capsule_trace",
]
