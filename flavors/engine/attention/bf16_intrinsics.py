"""Vector loops over bf16 data for numba kernels, as numba intrinsics: dot products on the CPU's own bf16
instruction (avx512_bf16's ``vdpbf16ps``: 32 bf16 products a step, accumulated in fp32), and weighted sums of
bf16 vectors in fp32 with the sums held in registers.

Why: numba's own loops widen each bf16 value to fp32 through memory before using it, take a dot product's
horizontal sum once per product, and keep running sums in memory. ``dot16`` takes sixteen dot products of
one query against consecutive cached keys and sums their partial vectors into one vector of sixteen scores
with a tree of shuffles; ``accumulate`` adds sixteen weighted cached values into the group's sums without
leaving registers; ``prefetch`` asks for the cache lines a loop reads next. The products are exact (a bf16
times a bf16 fits an fp32) and every sum is in fp32, so the results are what the widening loops compute, up
to the order of additions.

Use only where ``has_bf16_dot()`` (the CPU numba compiles for has avx512_bf16); lengths must be a multiple
of 32 and, like the group size and position count, compile-time constants.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..cpu_features import cpu_has

LANES = 16  # fp32 lanes of one 512-bit vector; also the dot products ``dot16`` takes at once
PAIRS = 32  # bf16 values one instruction multiplies


@cache
def has_bf16_dot() -> bool:
    """Whether the CPU numba compiles for has avx512_bf16 (numba targets the host CPU) and it is not switched
    off (``cpu_features.py``)."""
    if not cpu_has("avx512_bf16"):
        return False
    try:
        import llvmlite.binding as llvm

        return bool(llvm.get_host_cpu_features().get("avx512bf16", False))
    except Exception:  # no llvmlite, or a platform it cannot read features on
        return False


def _intrinsics() -> tuple[Any, Any, Any, Any]:
    import llvmlite.ir as ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from .vector_ir import item, literal, shuffle, tree_sum

    class BFloat(ir.Type):
        """LLVM's bfloat type (llvmlite's IR builder does not name it)."""

        def _to_string(self) -> str:
            return "bfloat"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, BFloat)

        def __hash__(self) -> int:
            return hash("bfloat")

    i32, i64 = ir.IntType(32), ir.IntType(64)
    floats = ir.VectorType(ir.FloatType(), LANES)
    bf16s = ir.VectorType(BFloat(), PAIRS)

    def products(builder: Any) -> Any:
        kind = ir.FunctionType(floats, [floats, bf16s, bf16s])
        return cgutils.get_or_insert_function(builder.module, kind, "llvm.x86.avx512bf16.dpbf16ps.512")

    def load(builder: Any, base: Any, offset: Any) -> Any:
        return builder.load(builder.bitcast(builder.gep(base, [offset]), bf16s.as_pointer()), align=2)

    def dot_vector(builder: Any, query: list[Any], base: Any, start: Any, length: int) -> Any:
        """The partial sums [16 fp32] of query . base[start:start + length]."""
        accumulated = ir.Constant(floats, [0.0] * LANES)
        for chunk in range(length // PAIRS):
            offset = builder.add(start, ir.Constant(i64, chunk * PAIRS))
            accumulated = builder.call(products(builder), [accumulated, query[chunk], load(builder, base, offset)])
        return accumulated

    @intrinsic
    def dot(typingctx: Any, query: Any, keys: Any, start: Any, length: Any) -> Any:
        """query[:length] . keys[start:start + length] in fp32 (bf16 bits as uint16 arrays, contiguous)."""
        size = literal(length)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            q = context.make_array(signature.args[0])(context, builder, args[0])
            k = context.make_array(signature.args[1])(context, builder, args[1])
            chunks = [load(builder, q.data, ir.Constant(i64, c * PAIRS)) for c in range(size // PAIRS)]
            total = dot_vector(builder, chunks, k.data, args[2], size)
            for width in (8, 4, 2, 1):
                total = builder.fadd(
                    shuffle(builder, total, total, list(range(width))),
                    shuffle(builder, total, total, list(range(width, 2 * width))),
                )
            return builder.extract_element(total, ir.Constant(i32, 0))

        return types.float32(query, keys, start, length), codegen

    @intrinsic
    def dot16(typingctx: Any, query: Any, keys: Any, start: Any, length: Any, scale: Any, out: Any, at: Any) -> Any:
        """out[at:at + 16] = scale * (query[:length] . keys[start + j * length:][:length] for j in 0..15): the
        scores of one query against sixteen consecutive keys of ``length`` values each."""
        size = literal(length)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            q = context.make_array(signature.args[0])(context, builder, args[0])
            k = context.make_array(signature.args[1])(context, builder, args[1])
            o = context.make_array(signature.args[5])(context, builder, args[5])
            chunks = [load(builder, q.data, ir.Constant(i64, c * PAIRS)) for c in range(size // PAIRS)]
            partial = [
                dot_vector(builder, chunks, k.data, builder.add(args[2], ir.Constant(i64, j * size)), size)
                for j in range(LANES)
            ]
            scale_value = context.cast(builder, args[4], signature.args[4], types.float32)
            scales = shuffle(
                builder,
                builder.insert_element(ir.Constant(floats, None), scale_value, ir.Constant(i32, 0)),
                ir.Constant(floats, None),
                [0] * LANES,
            )
            target = builder.bitcast(builder.gep(o.data, [args[6]]), floats.as_pointer())
            builder.store(builder.fmul(tree_sum(builder, partial, LANES), scales), target, align=4)
            return context.get_dummy_value()

        return types.void(query, keys, start, length, scale, out, at), codegen

    @intrinsic
    def accumulate(
        typingctx: Any,
        values: Any,
        start: Any,
        weights: Any,
        first: Any,
        acc: Any,
        length: Any,
        group: Any,
        count: Any,
    ) -> Any:
        """acc[g, :] += sum over j < count of weights[g, first + j] * widened(values[(start + j) * length:][:length]),
        for g < group: a weighted sum of ``count`` consecutive cached values (bf16 bits), in fp32, with the
        accumulators held in registers across the positions."""
        size, groups, positions = literal(length), literal(group), literal(count)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            v = context.make_array(signature.args[0])(context, builder, args[0])
            w = context.make_array(signature.args[2])(context, builder, args[2])
            a = context.make_array(signature.args[4])(context, builder, args[4])
            halves = ir.VectorType(ir.IntType(16), LANES)
            words = ir.VectorType(i32, LANES)
            shift = ir.Constant(words, [16] * LANES)
            chunks = size // LANES

            def sums_at(g: int, c: int) -> Any:  # acc[g, c * 16:][:16] as a vector pointer
                where = item(context, builder, signature.args[4], a, ir.Constant(i64, g), ir.Constant(i64, c * LANES))
                return builder.bitcast(where, floats.as_pointer())

            sums = [[builder.load(sums_at(g, c), align=4) for c in range(chunks)] for g in range(groups)]
            for j in range(positions):
                at = builder.add(args[3], ir.Constant(i64, j))  # the weights' column
                row = builder.mul(builder.add(args[1], ir.Constant(i64, j)), ir.Constant(i64, size))
                wide = []  # the value, in fp32: bf16 bits shifted into the top half
                for c in range(chunks):
                    pointer = builder.gep(v.data, [builder.add(row, ir.Constant(i64, c * LANES))])
                    bits = builder.load(builder.bitcast(pointer, halves.as_pointer()), align=2)
                    wide.append(builder.bitcast(builder.shl(builder.zext(bits, words), shift), floats))
                for g in range(groups):
                    weight = builder.load(item(context, builder, signature.args[2], w, ir.Constant(i64, g), at))
                    spread = shuffle(
                        builder,
                        builder.insert_element(ir.Constant(floats, None), weight, ir.Constant(i32, 0)),
                        ir.Constant(floats, None),
                        [0] * LANES,
                    )
                    for c in range(chunks):  # contracted into one fused multiply-add
                        product = builder.fmul(spread, wide[c], flags=("contract",))
                        sums[g][c] = builder.fadd(sums[g][c], product, flags=("contract",))
            for g in range(groups):
                for c in range(chunks):
                    builder.store(sums[g][c], sums_at(g, c), align=4)
            return context.get_dummy_value()

        return types.void(values, start, weights, first, acc, length, group, count), codegen

    @intrinsic
    def prefetch(typingctx: Any, array: Any, start: Any, count: Any) -> Any:
        """Ask the CPU to bring array[start:start + count] (contiguous, any item size) into its caches ahead of
        use: a kernel reading many short runs of the cache leaves the hardware prefetchers little to learn from.
        A plain prefetch instruction: any x86 CPU has it, so the fp32 loops use it too."""
        elements = literal(count)
        line = 64 // (array.dtype.bitwidth // 8)  # values in a 64-byte cache line

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            a = context.make_array(signature.args[0])(context, builder, args[0])
            bytes_pointer = ir.IntType(8).as_pointer()
            kind = ir.FunctionType(ir.VoidType(), [bytes_pointer, i32, i32, i32])
            hint = cgutils.get_or_insert_function(builder.module, kind, "llvm.prefetch.p0")
            read, keep, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
            for offset in range(0, elements, line):
                where = builder.gep(a.data, [builder.add(args[1], ir.Constant(i64, offset))])
                builder.call(hint, [builder.bitcast(where, bytes_pointer), read, keep, data])
            return context.get_dummy_value()

        return types.void(array, start, count), codegen

    return dot, dot16, accumulate, prefetch


dot, dot16, accumulate, prefetch = _intrinsics()
