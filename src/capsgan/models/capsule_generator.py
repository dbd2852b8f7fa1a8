"""A capsule-network generator: CapsNet's recognition path run in reverse.

Marusaki & Watanabe, "Capsule GAN Using Capsule Network for Generator Architecture"
(arXiv:2003.08047, 2020) publish two ways to put capsules into the generator: (1) feed the
discriminator's DigitCaps layer to the generator, (2) run the capsule network's recognition
process backwards: whole-object capsules -> part capsules -> pixels. This module is design
(2). Design (1) ties the generator to a capsule discriminator's internals, so it could not
train against ``cnn`` and would not be a model added through the interface alone; design (2)
is a self-contained ``z -> image`` module that any discriminator can judge, which is what the
project's question (a capsule generator against the CNN and capsule discriminators) needs.

Recognition in Sabour et al. (NeurIPS 2017) goes conv -> PrimaryCaps (a grid of part
capsules) -> routing -> DigitCaps (one capsule per class). Here, in reverse:

1. ``z`` -> ``class_capsules`` capsules of ``class_dim`` (a linear map, then squash): the
   whole-object capsules, the generator's DigitCaps.
2. Every class capsule i predicts every part capsule j of a ``part_maps`` x G x G grid,
   u_hat_j|i = W_ij u_i (:meth:`capsgan.models.capsules.RoutingCapsules.predictions`).
3. Routing by agreement decides which whole each part belongs to. The couplings of a part
   capsule sum to 1 over the wholes (a parse tree read top-down: each part has one parent),
   so a part is the squashed weighted mean of its parents' predictions, and the parents whose
   predictions agree with it get more weight next iteration. (The discriminator's routing
   normalises over the parents of each *input* capsule instead; run from 10 wholes to
   hundreds of parts that would give every part 1/parts of each prediction, near-zero
   capsules that the squash flattens further, and routing that stays uniform.)
4. The part capsules laid out as PrimaryCaps lays them out, read back as a feature map
   (``part_maps * part_dim`` channels at G x G): the inverse of ``PrimaryCapsules``.
5. Transposed convolutions render it, DCGAN style (ConvTranspose 4x4 stride 2 -> BatchNorm
   -> ReLU, tanh on the image): G = image_size / 2^(len(channels) + 1), so 7x7 -> 14 -> 28
   for MNIST and 8x8 -> 16 -> 32 for CIFAR-10 with the default ``channels=(64,)``.

Convolution and BatchNorm weights start from N(0, 0.02) / N(1, 0.02) as in the DCGAN
generator. The capsule layers are initialised for their scale instead, because the squash is
quadratic for short vectors (|squash(s)| ~ |s|^2) and routing reads agreements u_hat . v: z ->
class capsules keeps nn.Linear's default (capsule lengths ~0.8 at the start, not ~0.3 as with
N(0, 0.02)), and the transforms W_ij are N(0, class_capsules / part_dim), so that the mean of
the class capsules' disagreeing predictions has a length of ~1. Measured at the start (batch
64, default sizes): part capsules of length 0.70, largest coupling per part 0.32 (uniform:
0.10), and 1 vs 3 routing iterations change the part capsules by 58 %; with RoutingCapsules'
own 1/sqrt(in_dim) they are 0.004 long and the couplings stay uniform.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from capsgan.models.capsules import RoutingCapsules, dynamic_routing, squash
from capsgan.models.cnn_discriminator import dcgan_init


class CapsuleGenerator(nn.Module):
    """z (B, latent_dim) -> class capsules -> routed part-capsule grid -> image (B, C, S, S).

    Args:
        latent_dim: size of the noise vector z.
        image_channels, image_size: the image made (``${data.channels}``, ``${data.image_size}``).
        class_capsules, class_dim: the whole-object capsules made from z.
        part_maps, part_dim: part capsules per grid position, and their size; the grid side
            is G = image_size / 2^(len(channels) + 1).
        routing_iterations: routing-by-agreement iterations, wholes -> parts.
        channels: the hidden transposed convolutions' channels (each doubles the side); the
            last one to the image adds one more doubling.
    """

    def __init__(
        self,
        latent_dim: int,
        image_channels: int = 1,
        image_size: int = 28,
        class_capsules: int = 10,
        class_dim: int = 16,
        part_maps: int = 8,
        part_dim: int = 8,
        routing_iterations: int = 3,
        channels: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        sizes = {
            "latent_dim": latent_dim, "image_channels": image_channels,
            "image_size": image_size, "class_capsules": class_capsules,
            "class_dim": class_dim, "part_maps": part_maps, "part_dim": part_dim,
            "routing_iterations": routing_iterations,
        }  # fmt: skip
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        channels = list(channels)
        if not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(f"channels must be a list of integers >= 1, got {channels}")
        ups = len(channels) + 1
        grid = image_size // 2**ups
        if grid < 1 or grid * 2**ups != image_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of 2^{ups}: the part-capsule grid "
                f"is doubled {ups} times (len(channels) + 1, channels={channels}); use as many "
                "channels entries as image_size allows (one entry for 28 or 32 px)"
            )
        self.latent_dim = latent_dim
        self.class_capsules, self.class_dim = class_capsules, class_dim
        self.part_maps, self.part_dim, self.grid = part_maps, part_dim, grid
        self.iterations = routing_iterations
        self.to_classes = nn.Linear(latent_dim, class_capsules * class_dim)
        # its weights W_ij and vectorized predictions(); part_capsules routes wholes -> parts
        self.transform = RoutingCapsules(
            class_capsules,
            class_dim,
            part_maps * grid * grid,
            part_dim,
            routing_iterations,
            weight_std=(class_capsules / part_dim) ** 0.5,
        )
        layers: list[nn.Module] = []
        in_ch = part_maps * part_dim
        for out_ch in channels:
            layers += [
                nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, image_channels, 4, 2, 1), nn.Tanh()]
        self.render = nn.Sequential(*layers)
        self.output_shape = (image_channels, image_size, image_size)
        self.render.apply(dcgan_init)

    def part_capsules(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The routed part capsules (B, part_maps * G * G, part_dim) and their couplings
        (B, parts, class_capsules), for inspection."""
        u = self.to_classes(z.view(z.shape[0], self.latent_dim))  # (B, K * class_dim)
        u = squash(u.view(-1, self.class_capsules, self.class_dim))  # (B, K, class_dim)
        u_hat = self.transform.predictions(u)  # (B, parts, K, part_dim)
        return dynamic_routing(u_hat, self.iterations, coupling_dim=2)  # each part's wholes

    def forward(self, z: Tensor) -> Tensor:
        v, _ = self.part_capsules(z)  # (B, maps * G * G, part_dim)
        batch, g = v.shape[0], self.grid
        # PrimaryCapsules' layout read back: capsule (map m, position p) -> channels of map m
        v = v.view(batch, self.part_maps, g * g, self.part_dim).transpose(2, 3)
        h = v.reshape(batch, self.part_maps * self.part_dim, g, g)  # (B, maps * dim, G, G)
        return self.render(h)  # (B, C, S, S) in [-1, 1]
