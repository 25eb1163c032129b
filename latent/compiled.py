"""What a compiled XLA program costs, read from the compiler without running it: per-device
memory (`memory_analysis`), FLOPs (`cost_analysis`) and the collectives in its HLO text.

    compiled = jax.jit(step, ...).lower(*shapes).compile()
    stats = program_stats(compiled)     # ProgramStats: bytes, flops, collectives

Works for any backend's compiled program: tpu/aot.py reads TPU programs compiled for a topology
(latent has no TPU here), and a CPU program answers the same questions (temp memory with and
without a change).
"""

from __future__ import annotations

import dataclasses
import re

# The collectives XLA emits for sharded programs; an async pair (`all-reduce-start` /
# `all-reduce-done`) is one collective, counted at its start.
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_OP = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_WHILE_OP = re.compile(r"\swhile\(")


@dataclasses.dataclass(frozen=True)
class ProgramStats:
    """Per-device bytes and FLOPs of one compiled program (a device runs one SPMD shard)."""

    argument_bytes: int  # inputs (params, optimizer state, batch)
    output_bytes: int
    alias_bytes: int  # outputs that reuse a donated input's buffer (the train state)
    temp_bytes: int  # activations and other scratch buffers
    generated_code_bytes: int
    xla_peak_bytes: int  # the compiler's own peak from its buffer assignment (0: not reported)
    flops: float  # per device, one call, but a loop's body counted once (`while_loops`)
    collectives: dict[str, int]  # op -> instructions in the optimized HLO (static count, not executions)
    # while loops in the optimized HLO (lax.scan, fori_loop, while_loop): XLA's cost analysis counts
    # each body once whatever its trip count (measured: a 10-iteration matmul loop reports the FLOPs
    # of one), so `flops` leaves out the loops' other iterations
    while_loops: int

    @property
    def summed_bytes(self) -> int:
        """Live at once if nothing is freed early: arguments + outputs not aliased to an argument
        + temporaries + code."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.generated_code_bytes

    @property
    def peak_bytes(self) -> int:
        """The estimate a fit is judged by: the larger of XLA's peak and `summed_bytes` (XLA's
        includes buffers the per-kind sizes leave out, such as collectives' scratch space)."""
        return max(self.xla_peak_bytes, self.summed_bytes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"summed_bytes": self.summed_bytes, "peak_bytes": self.peak_bytes}


def program_stats(compiled) -> ProgramStats:
    """ProgramStats of a `jax.stages.Compiled`."""
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    return ProgramStats(
        argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        generated_code_bytes=int(memory.generated_code_size_in_bytes),
        xla_peak_bytes=int(getattr(memory, "peak_memory_in_bytes", 0) or 0),
        flops=flops_of(compiled),
        collectives=count_collectives(hlo),
        while_loops=len(_WHILE_OP.findall(hlo)),
    )


def flops_of(compiled) -> float:
    """FLOPs of one call per device from XLA's cost analysis (a dict, or a list of one dict in
    older jax); 0 when the backend reports none."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def count_collectives(hlo_text: str) -> dict[str, int]:
    """{collective: instructions} in an HLO module's text, only those present."""
    counts: dict[str, int] = {}
    for op in _COLLECTIVE_OP.findall(hlo_text):
        counts[op] = counts.get(op, 0) + 1
    return {op: counts[op] for op in COLLECTIVES if op in counts}
