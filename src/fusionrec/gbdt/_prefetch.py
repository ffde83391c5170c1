"""``prefetch(array, index)``: a cache hint for numba kernels (LLVM's ``llvm.prefetch``).

Deep tree nodes own scattered rows, so histogram building and partitioning wait on
memory for every row; XGBoost hides that latency by prefetching rows a few iterations
ahead, and so do we. The hint never faults, so an index past the end is harmless, but
callers keep it in range anyway.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, array, index):
    """Hint that ``array[index]`` (1-D) or the row ``array[index, 0]`` (2-D) will be read soon."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        indices = [idx] + [context.get_constant(types.intp, 0)] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, ary, indices, wraparound=False)
        i8_ptr = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(32), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read access, high temporal locality, data cache
        builder.call(fn, [i8_ptr, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return sig, codegen
