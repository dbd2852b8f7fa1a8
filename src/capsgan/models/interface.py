"""What a model declares to the rest of the framework, beyond its ``forward``.

Code outside ``capsgan.models`` never tests a model's class name, ``_target_`` or preset
name; it asks the model through what is defined here (docs/extending.md walks through it).
A generator maps z (B, latent_dim) to images in [-1, 1]; a discriminator maps images to a
score (B,) and declares its ``score_kind`` (:class:`ScoreKind`), which picks the loss. Both
refuse bad sizes in their constructors with a ``ValueError`` / ``TypeError`` naming the
argument, which start-up shows as the config key to fix.

Optional hook of a discriminator, used by its presence: ``capsule_trace(x) ->
CapsuleTrace``, its routed layer's internals at every routing iteration. It must give the
same ``score`` as ``forward(x)`` and not change the model's state; it keeps the autograd
graph (callers that only look wrap it in ``torch.no_grad()``), so a benchmark may time its
parts forward and backward. The normal ``forward`` pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from torch import Tensor, nn


class ScoreKind(StrEnum):
    """What a discriminator's (B,) score is; the losses handle each kind or refuse it."""

    LOGIT = "logit"  # any real number, sigmoid(score) = P(real); binary cross-entropy
    LENGTH = "length"  # a capsule's length in [0, 1) = P(real); the margin loss


def score_kind(discriminator: nn.Module) -> ScoreKind:
    """The :class:`ScoreKind` ``discriminator`` declares; a ``TypeError`` naming the valid
    kinds when it declares none or another."""
    declared = getattr(discriminator, "score_kind", None)
    try:
        return ScoreKind(declared)
    except ValueError:
        kinds = ", ".join(f"ScoreKind.{k.name} ({k.value!r})" for k in ScoreKind)
        raise TypeError(
            f"the discriminator {type(discriminator).__name__} declares score_kind="
            f"{declared!r}; a discriminator must set score_kind to one of {kinds}, the score "
            "kinds capsgan.losses can train (see docs/extending.md)"
        ) from None


@dataclass(frozen=True)
class CapsuleTrace:
    """One batch through a routed capsule layer, every routing iteration kept.

    Shapes: B images, I input capsules of ``in_dim``, J output capsules of ``out_dim``,
    R routing iterations. Every tensor is indexed input capsule before output capsule.

    Attributes:
        primary: (B, I, in_dim), the input capsules of the routed layer.
        u_hat: (B, I, J, out_dim), the prediction vectors u_hat_j|i = W_ij u_i.
        couplings: R tensors (B, I, J): the coupling coefficients c_ij that iteration r
            (1-based: ``couplings[r - 1]``) weighted the predictions with; each input
            capsule's row sums to 1 over the J output capsules. Iteration 1's are uniform
            (1/J) in dynamic routing, the later ones follow the agreements.
        outputs: R tensors (B, J, out_dim): the output capsules v_j each iteration gave;
            ``outputs[-1]`` is what the discriminator's head reads.
        score: (B,), the discriminator's ``forward`` output for the same images.
        score_capsule: index of the output capsule whose length is the score (the
            CapsuleGAN ``length`` head), or None when a head reads all capsules (``fc``).
    """

    primary: Tensor
    u_hat: Tensor
    couplings: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    score: Tensor
    score_capsule: int | None = None

    @property
    def iterations(self) -> int:
        return len(self.couplings)

    @property
    def capsules(self) -> Tensor:
        """(B, J, out_dim): the final output capsules."""
        return self.outputs[-1]

    @property
    def lengths(self) -> Tensor:
        """(B, J): the final output capsules' lengths, in [0, 1) after the squash."""
        return self.outputs[-1].norm(dim=-1)


def supports_capsule_trace(module: object) -> bool:
    """Whether ``module`` has the ``capsule_trace`` hook: by its presence, never by name."""
    return callable(getattr(module, "capsule_trace", None))
