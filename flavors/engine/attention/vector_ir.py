"""What the attention kernel's numba intrinsics (``bf16_intrinsics.py``, ``fp32_intrinsics.py``) share: lane shuffles,
the tree that sums one vector of partial sums per item into one vector of the items' totals, 2-D array addresses, and
the compile-time constants their arguments must be."""

from __future__ import annotations

from typing import Any


def shuffle(builder: Any, a: Any, b: Any, lanes: list[int]) -> Any:
    """The lanes of ``a`` then ``b`` (numbered on from ``a``'s), picked in ``lanes`` order."""
    import llvmlite.ir as ir

    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes))


def tree_sum(builder: Any, vectors: list[Any], lanes: int) -> Any:
    """``lanes`` vectors of ``lanes`` partial sums each -> one vector of their ``lanes`` totals, in order: each step
    adds the halves of pairs of vectors, interleaved so that the items stay in order."""
    width = lanes  # partial sums per item
    while len(vectors) > 1:
        half, items = width // 2, lanes // width
        merged = []
        for u, w in zip(vectors[0::2], vectors[1::2]):
            low = [s * lanes + i * width + j for s in (0, 1) for i in range(items) for j in range(half)]
            high = [lane + half for lane in low]
            merged.append(builder.fadd(shuffle(builder, u, w, low), shuffle(builder, u, w, high)))
        vectors, width = merged, half
    return vectors[0]


def item(context: Any, builder: Any, kind: Any, array: Any, i: Any, j: Any) -> Any:
    """The address of array[i, j] (``array`` made by ``context.make_array``, of numba type ``kind``)."""
    from numba.core import cgutils

    return cgutils.get_item_pointer(context, builder, kind, array, [i, j])


def literal(value: Any) -> int:
    """The value of an intrinsic's argument that must be a compile-time integer (numba retries with it as one)."""
    from numba import types
    from numba.core import errors

    if not isinstance(value, types.IntegerLiteral):
        raise errors.RequireLiteralValue(value)
    return int(value.literal_value)
