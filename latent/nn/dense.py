"""Dense projection with logical axis names kept as Param metadata (`axes`).

Sharding is applied later by mapping these names to mesh axes (latent.sharding); keeping
them as plain metadata means building a model never needs a mesh.

Every weight matmul of the model (the Dense layers and the output head) goes through `matmul`,
whose derivative rule lays out the weight gradient's product for the CPU matmul kernels: see
`matmul`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

# The weight gradient's layout copy (see `matmul`) pays on XLA's CPU backend only: TPU and GPU
# matmuls take either operand layout, and there the copy would be one more pass over every
# Dense input. None follows jax.default_backend() when the step is traced; tpu/aot.py, which
# traces on a CPU host for TPU devices, sets False.
WEIGHT_GRADIENT_COPY: bool | None = None


def copies_for_weight_gradient() -> bool:
    return jax.default_backend() == "cpu" if WEIGHT_GRADIENT_COPY is None else WEIGHT_GRADIENT_COPY


@jax.custom_jvp
def matmul(x_NxI: jax.Array, kernel_IxO: jax.Array) -> jax.Array:
    """`x @ kernel` over the last axis of x (any leading axes), with the same values as `@`.

    Only the derivative differs, and only in layout. The weight gradient is `x^T @ dy`, summed
    over every row of x. Left to autodiff, XLA computes it as one dot that contracts the row axis
    of both operands ([N, I] and [N, O], N = batch * positions). XLA's CPU backend sends only
    dots whose left operand contracts its last axis to its fast matmul library (YNNPACK) and
    runs this one on its generic kernel, at about half the rate. In the step of
    benchmarks/forward_backward.py these dots were a quarter of the time. Here the tangent rule
    transposes x once into a materialised [I, N] array (the barrier keeps XLA from folding the
    transpose back into the dot), so the reverse pass computes `x^T @ dy` as a plain [I, N] @
    [N, O] product. The copy costs one read and one write of x. Values match autodiff to float32
    rounding (only the summation order may differ). On other backends
    (`copies_for_weight_gradient`) it is plain autodiff.
    """
    return x_NxI @ kernel_IxO


def _matmul_jvp(primals, tangents):
    x_NxI, kernel_IxO = primals
    dx_NxI, dkernel_IxO = tangents
    y_NxO = x_NxI @ kernel_IxO
    terms = []  # a tangent that is a symbolic zero (not differentiated) costs no matmul
    if not isinstance(dx_NxI, SymbolicZero):
        terms.append(dx_NxI @ kernel_IxO)
    if not isinstance(dkernel_IxO, SymbolicZero):
        if copies_for_weight_gradient():
            x_NxI = jax.lax.optimization_barrier(x_NxI.reshape(-1, x_NxI.shape[-1]).T).T  # [I, N] materialised
        terms.append((x_NxI @ dkernel_IxO).reshape(y_NxO.shape))
    return y_NxO, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y_NxO)


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)


class Dense(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: tuple[str, str],
        use_bias: bool,
        init_std: float,
        param_dtype,
        dtype,
        rngs: nnx.Rngs,
    ):
        kernel_IxO = init_std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype)
        self.kernel = nnx.Param(kernel_IxO, axes=axes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), axes=axes[1:]) if use_bias else None
        self.dtype = dtype

    def __call__(self, x_BxTxI: jax.Array) -> jax.Array:
        y_BxTxO = matmul(x_BxTxI.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y_BxTxO = y_BxTxO + self.bias[...].astype(self.dtype)
        return y_BxTxO
