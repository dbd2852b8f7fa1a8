"""Adversarial losses for each :class:`~capsgan.models.interface.ScoreKind`.

* ``ScoreKind.LOGIT`` (CNN, capsule ``fc`` head): binary cross-entropy, with the
  non-saturating generator loss -log D(G(z)) of Goodfellow et al. (2014).
* ``ScoreKind.LENGTH`` (capsule ``length`` head, a capsule length in [0, 1)): the margin
  loss of Sabour et al. (2017) as used for GANs by Jaiswal et al. (2018),
  T max(0, m+ - |v|)^2 + lambda (1 - T) max(0, |v| - m-)^2.

Targets may be soft (one-sided label smoothing sets the real target below 1). A kind not
handled here raises, so a new kind cannot silently train with another kind's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from capsgan.models.interface import ScoreKind

MARGIN_POSITIVE, MARGIN_NEGATIVE, MARGIN_DOWNWEIGHT = 0.9, 0.1, 0.5


def _unhandled(kind: object) -> ValueError:
    return ValueError(f"capsgan.losses has no loss for score kind {kind!r}; add one here")


def probability_real(score: Tensor, kind: ScoreKind | str) -> Tensor:
    """The discriminator's belief that each image is real, in [0, 1]."""
    match ScoreKind(kind):
        case ScoreKind.LOGIT:
            return torch.sigmoid(score)
        case ScoreKind.LENGTH:
            return score
    raise _unhandled(kind)


def _loss(score: Tensor, target: float, kind: ScoreKind | str) -> Tensor:
    match ScoreKind(kind):
        case ScoreKind.LOGIT:
            return F.binary_cross_entropy_with_logits(score, torch.full_like(score, target))
        case ScoreKind.LENGTH:
            present = F.relu(MARGIN_POSITIVE - score).pow(2)
            absent = F.relu(score - MARGIN_NEGATIVE).pow(2)
            return (target * present + MARGIN_DOWNWEIGHT * (1.0 - target) * absent).mean()
    raise _unhandled(kind)


def discriminator_loss(
    score_real: Tensor, score_fake: Tensor, kind: ScoreKind | str, real_target: float = 1.0
) -> Tensor:
    """Mean of the real-half and fake-half losses (equal numbers of each)."""
    return 0.5 * (_loss(score_real, real_target, kind) + _loss(score_fake, 0.0, kind))


def generator_loss(score_fake: Tensor, kind: ScoreKind | str) -> Tensor:
    """Non-saturating: the generator wants its samples scored as real."""
    return _loss(score_fake, 1.0, kind)
