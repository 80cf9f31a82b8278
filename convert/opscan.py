"""Refuse SavedModels whose graphs can touch files, the network, processes or Python, before TensorFlow loads them.

``tf.saved_model.load`` restores variables and traces functions, and calling the serving function runs whatever
ops it holds: a ``tf.io.write_file`` in a serving function writes its file during conversion. So the
``saved_model.pb`` protobuf is parsed and every node of the top-level graph and of the whole function library is
checked against an **allow-list** of pure tensor ops before anything runs.

Why an allow-list and not a deny-list: TensorFlow has ~1,500 op types and keeps adding ones with side effects
(file, network, dataset, summary, debugging, PyFunc, custom-op libraries). A deny-list misses the next one; an
allow-list can only err towards refusing a real model, and the error names the op, so the list can grow or the
user can pass ``--unsafe-load``. The list holds the ops Keras 3 ``model.export`` and tf_keras SavedModels of
common layers use, plus common math, array and control-flow ops.

The checkpoint ops (SaveV2, RestoreV2, ...) read and write files by design; they are allowed only inside the
saver functions TensorFlow generates (``__inference__traced_save_N`` / ``__inference__traced_restore_N``), in the
top-level graph's ``save/`` scope of TF1-style models, and those functions may only be called from the
top-level graph, never from a function the model runs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from edgeport_runtime.errors import ModelLoadError

_SAFE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert Assign AssignAdd
AssignAddVariableOp AssignSub AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D BatchMatMul
BatchMatMulV2 BatchMatMulV3 BatchNormWithGlobalNormalization BatchToSpaceND BiasAdd BiasAddV1 Bitcast
BroadcastArgs BroadcastGradientArgs BroadcastTo Bucketize Case Cast Ceil CheckNumerics ClipByValue Complex
ComplexAbs Concat ConcatOffset ConcatV2 Const Conv1D Conv2D Conv2DBackpropInput Conv3D Conv3DBackpropInputV2
Cos Cosh Cumprod Cumsum DepthToSpace DepthwiseConv2dNative DepthwiseConv2dNativeBackpropInput DisableCopyOnRead
Div DivNoNan Einsum Elu Empty EnsureShape Enter Equal Erf Erfc Exit Exp ExpandDims Expm1 FakeQuantWithMinMaxArgs
FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel Fill Floor FloorDiv FloorMod FusedBatchNorm
FusedBatchNormV2 FusedBatchNormV3 GatherNd GatherV2 Gather Gelu Greater GreaterEqual Identity IdentityN If Imag
InvertPermutation IsFinite IsInf IsNan IsVariableInitialized L2Loss LeakyRelu Less LessEqual LinSpace Log Log1p
LogSoftmax LogicalAnd LogicalNot LogicalOr LoopCond LRN MatMul MatrixBandPart MatrixDiag MatrixDiagPartV3
MatrixDiagV3 Max MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax Maximum Mean Merge Min Minimum Mod Mul MulNoNan
Neg NextIteration NoOp NonMaxSuppressionV3 NotEqual OneHot OnesLike Pack Pad PadV2 MirrorPad PartitionedCall
Placeholder PlaceholderWithDefault Pow Prod QuantizeAndDequantizeV2 QuantizeAndDequantizeV3
QuantizeAndDequantizeV4 RandomStandardNormal RandomUniform RandomUniformInt Range Rank ReadVariableOp Real
RealDiv Reciprocal Relu Relu6 Reshape ResizeBilinear ResizeNearestNeighbor ResourceGather ReverseV2 Rint
Round Rsqrt ScatterNd Select SelectV2 Selu Shape ShapeN Sigmoid Sign Sin Sinh Size Slice Snapshot Softmax
Softplus Softsign SpaceToBatchND SpaceToDepth Split SplitV Sqrt Square SquaredDifference Squeeze StatefulPartitionedCall
StatelessCase StatelessIf StatelessRandomNormalV2 StatelessRandomUniformV2 StatelessRandomGetKeyCounter
StatelessRandomUniformIntV2 StatelessWhile StopGradient StridedSlice Sub Sum Switch Tan Tanh TensorListFromTensor
TensorListGetItem TensorListLength TensorListReserve TensorListSetItem TensorListStack TensorListElementShape
Tile TopKV2 Transpose TruncateDiv TruncatedNormal Unpack UnsortedSegmentSum VarHandleOp VarIsInitializedOp
VariableShape VariableV2 Where While Xdivy Xlogy ZerosLike
StringJoin StaticRegexFullMatch ShardedFilename
""".split())

# Checkpoint I/O: legitimate only in the generated saver functions / TF1 save scope (see the module docstring).
_SAVER_OPS = frozenset("SaveV2 RestoreV2 MergeV2Checkpoints Save SaveSlices Restore RestoreSlice".split())
_SAVER_FN = re.compile(r"^__inference__traced_(save|restore)_\d+$")
_TF1_SAVE_SCOPE = re.compile(r"^save(_\d+)?/")


class UnsafeModelError(ModelLoadError):
    """A model file that would run code or touch files/the network when loaded or called."""


def _called_functions(node) -> Set[str]:
    """Names of library functions a node calls (any func-valued attribute: calls, If/While branches, ...)."""
    names = set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        if value.HasField("list"):
            names.update(f.name for f in value.list.func)
    return names


def scan_graph_ops(nodes_by_function: Dict[str, Iterable]) -> Optional[Tuple[str, str]]:
    """Return (op, function) of the first node outside the allow-list, or None when everything is safe.

    ``nodes_by_function`` maps a function name ("<graph>" for the top-level graph) to its NodeDefs.
    """
    for fname, nodes in nodes_by_function.items():
        saver_fn = bool(_SAVER_FN.match(fname))
        for node in nodes:
            op = node.op
            if op in _SAVER_OPS and (saver_fn or (fname == "<graph>" and _TF1_SAVE_SCOPE.match(node.name))):
                continue
            if op not in _SAFE_OPS:
                return op, fname
            if fname != "<graph>":
                for callee in _called_functions(node):
                    if _SAVER_FN.match(callee) and not saver_fn:
                        return f"{op} calling the saver function {callee}", fname
    return None


def _functions(path: Path) -> Dict[str, List]:
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{path}: saved_model.pb is not a valid SavedModel protobuf ({type(e).__name__}); "
                             "the file is corrupt or truncated.") from None
    out: Dict[str, List] = {}
    for mg in sm.meta_graphs:
        out.setdefault("<graph>", []).extend(mg.graph_def.node)
        for f in mg.graph_def.library.function:
            out.setdefault(f.signature.name, []).extend(f.node_def)
    return out


def check_saved_model(path: Path) -> None:
    """Refuse (UnsafeModelError, exit 2) a SavedModel using any op outside the allow-list, naming op and function.

    Call before ``tf.saved_model.load`` or any Keras loader touches ``path``.
    """
    bad = scan_graph_ops(_functions(path))
    if bad:
        op, fname = bad
        where = "its top-level graph" if fname == "<graph>" else f"function {fname}"
        raise UnsafeModelError(f"{path}: {where} uses op {op}, which is not a pure tensor op (it could read or "
                               "write files, use the network or run Python); edgeport does not load it. Pass "
                               "--unsafe-load only if you trust this file.")
