"""Vector loops over fp32 cached keys and values for numba kernels, as numba intrinsics, eight positions at a time:
the attention kernel's fp32 path (``cpu_kernel.py``) on CPUs without bf16 instructions.

Why: numba's loops take a dot product's horizontal sum once per cached key (a shuffle tree of several steps for a
product of a few vector multiply-adds) and keep the weighted sum of values in memory, one load and store per vector
per position. ``dot8`` takes eight dot products of one query against consecutive cached keys and sums their partial
vectors into one vector of eight scores with one shuffle tree; ``accumulate8`` adds eight weighted cached values into
a query's sums without leaving registers. The vectors are eight fp32 lanes, one AVX2 register (a half of an AVX-512
one), so the loops run as they are on any x86-64 CPU with AVX2. The sums are in fp32, as the loops' were, in another
order of additions.

Lengths (the head size) must be multiples of 8 and, like the position counts, compile-time constants.
"""

from __future__ import annotations

from typing import Any

LANES = 8  # fp32 lanes of one 256-bit vector; also the positions ``dot8`` and ``accumulate8`` take at once


def _intrinsics() -> tuple[Any, Any]:
    import llvmlite.ir as ir
    from numba import types
    from numba.extending import intrinsic

    from .vector_ir import item, literal, shuffle, tree_sum

    i32, i64 = ir.IntType(32), ir.IntType(64)
    floats = ir.VectorType(ir.FloatType(), LANES)

    def vector_at(builder: Any, base: Any, offset: Any, extra: int = 0) -> Any:
        """A pointer to the eight fp32 values at base[offset + extra:] (``offset`` an i64 value, ``extra`` a
        constant)."""
        where = builder.add(offset, ir.Constant(i64, extra)) if extra else offset
        return builder.bitcast(builder.gep(base, [where]), floats.as_pointer())

    def load8(builder: Any, base: Any, offset: Any, extra: int = 0) -> Any:
        return builder.load(vector_at(builder, base, offset, extra), align=4)

    def spread(builder: Any, value: Any) -> Any:
        """A scalar fp32 in all eight lanes."""
        one = builder.insert_element(ir.Constant(floats, None), value, ir.Constant(i32, 0))
        return shuffle(builder, one, ir.Constant(floats, None), [0] * LANES)

    def multiply_add(builder: Any, total: Any, a: Any, b: Any) -> Any:
        """total + a * b, contracted into one fused multiply-add."""
        return builder.fadd(total, builder.fmul(a, b, flags=("contract",)), flags=("contract",))

    @intrinsic
    def dot8(typingctx: Any, queries: Any, g: Any, keys: Any, start: Any, length: Any, scale: Any, out: Any, at: Any):
        """out[g, at:at + 8] = scale * (queries[g, :length] . keys[start + j * length:][:length] for j in 0..7): the
        scores of one query against eight consecutive cached keys of ``length`` values each (fp32, contiguous)."""
        size = literal(length)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            q = context.make_array(signature.args[0])(context, builder, args[0])
            k = context.make_array(signature.args[2])(context, builder, args[2])
            o = context.make_array(signature.args[6])(context, builder, args[6])
            zero = ir.Constant(i64, 0)
            row = item(context, builder, signature.args[0], q, args[1], zero)
            chunks = [load8(builder, row, zero, c * LANES) for c in range(size // LANES)]
            partial = []
            for j in range(LANES):
                first = builder.add(args[3], ir.Constant(i64, j * size))
                total = ir.Constant(floats, [0.0] * LANES)
                for c, chunk in enumerate(chunks):
                    total = multiply_add(builder, total, chunk, load8(builder, k.data, first, c * LANES))
                partial.append(total)
            scale_value = context.cast(builder, args[5], signature.args[5], types.float32)
            target = vector_at(builder, item(context, builder, signature.args[6], o, args[1], args[7]), zero)
            scores = builder.fmul(tree_sum(builder, partial, LANES), spread(builder, scale_value))
            builder.store(scores, target, align=4)
            return context.get_dummy_value()

        return types.void(queries, g, keys, start, length, scale, out, at), codegen

    @intrinsic
    def accumulate8(
        typingctx: Any, values: Any, start: Any, weights: Any, first: Any, acc: Any, length: Any, group: Any, count: Any
    ):
        """acc[g, :] += sum over j < count of weights[g, first + j] * values[start + j * length:][:length], for
        g < group: a weighted sum of ``count`` consecutive cached values (fp32, contiguous), each query's sums held
        in registers across the positions."""
        size, groups, positions = literal(length), literal(group), literal(count)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            v = context.make_array(signature.args[0])(context, builder, args[0])
            w = context.make_array(signature.args[2])(context, builder, args[2])
            a = context.make_array(signature.args[4])(context, builder, args[4])
            chunks = size // LANES
            zero = ir.Constant(i64, 0)
            for g in range(groups):  # one query at a time: its sums fill the registers an AVX2 CPU has
                sums_row = item(context, builder, signature.args[4], a, ir.Constant(i64, g), zero)
                sums = [load8(builder, sums_row, zero, c * LANES) for c in range(chunks)]
                for j in range(positions):
                    column = builder.add(args[3], ir.Constant(i64, j))
                    weight = builder.load(item(context, builder, signature.args[2], w, ir.Constant(i64, g), column))
                    weight = spread(builder, weight)
                    base = builder.add(args[1], ir.Constant(i64, j * size))
                    for c in range(chunks):
                        sums[c] = multiply_add(builder, sums[c], weight, load8(builder, v.data, base, c * LANES))
                for c in range(chunks):
                    builder.store(sums[c], vector_at(builder, sums_row, zero, c * LANES), align=4)
            return context.get_dummy_value()

        return types.void(values, start, weights, first, acc, length, group, count), codegen

    return dot8, accumulate8


dot8, accumulate8 = _intrinsics()
