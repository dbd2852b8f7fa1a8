"""What a model declares to the rest of the framework, beyond its ``forward``.

Code outside ``capsgan.models`` never tests a model's class name, ``_target_`` or preset
name; it asks the model through the optional hooks defined here, by the hook's presence.
A new discriminator opts in by defining the method; one that does not is left out of
whatever the hook feeds, silently.

Optional hooks of a discriminator:

``capsule_trace(x) -> CapsuleTrace``
    A discriminator that routes capsules returns, for a batch of images, its routed
    layer's internals at every routing iteration (see :class:`CapsuleTrace`). It must give
    the same ``score`` as ``forward(x)`` and must not change the model's state. Callers
    that only look (``capsgan.diagnostics.CapsuleDiagnostics``, TensorBoard) wrap it in
    ``torch.no_grad()``; it keeps the autograd graph otherwise, so a benchmark may time
    its parts forward and backward. The normal ``forward`` pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor


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


@runtime_checkable
class CapsuleTracing(Protocol):
    """A discriminator with the ``capsule_trace`` hook (see the module docstring)."""

    def capsule_trace(self, x: Tensor) -> CapsuleTrace: ...


def supports_capsule_trace(module: object) -> bool:
    """Whether ``module`` has the ``capsule_trace`` hook: by its presence, never by name."""
    return callable(getattr(module, "capsule_trace", None))
