"""Builds the test models with the `onnx` package, random inputs, and onnxruntime's outputs.

usage: gen_models.py OUT_DIR

Writes, per model M: M.onnx, M.in.<input>.npy, M.out.<output>.npy (onnxruntime CPU), plus
broken.onnx (truncated), unsupported.onnx (an operator no engine knows) and labels.txt.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
OPSET = [helper.make_opsetid("", 13)]


def init(name, shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def save(out, name, graph):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="lichen-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(out, name + ".onnx")
    onnx.save(model, path)
    return path


def reference(out, name, path, inputs):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for k, v in inputs.items():
        np.save(os.path.join(out, f"{name}.in.{k}.npy"), v)
    results = sess.run(None, inputs)
    for o, r in zip(sess.get_outputs(), results):
        np.save(os.path.join(out, f"{name}.out.{o.name}.npy"), r)


def mlp(out, name="mlp", hidden=16):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, name, [x], [y],
                          [init("w1", [hidden, 4]), init("b1", [hidden]), init("w2", [3, hidden]), init("b2", [3])])
    path = save(out, name, g)
    reference(out, name, path, {"x": rng.standard_normal((1, 4)).astype(np.float32)})


def cnn(out):
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])
    prob = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])
    nodes = [
        helper.make_node("Conv", ["data", "k1", "c1"], ["a1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "k2", "c2"], ["a2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("Conv", ["r2", "k3", "c3"], ["a3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    g = helper.make_graph(nodes, "cnn", [data], [prob], [
        init("k1", [16, 3, 3, 3], 0.3), init("c1", [16], 0.1),
        init("k2", [32, 16, 3, 3], 0.1), init("c2", [32], 0.1),
        init("k3", [64, 32, 3, 3], 0.08), init("c3", [64], 0.1),
        init("wf", [10, 64], 0.3), init("bf", [10], 0.1),
    ])
    path = save(out, "cnn", g)
    reference(out, "cnn", path, {"data": rng.random((1, 3, 224, 224), dtype=np.float32)})


def multi(out):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])
    c = helper.make_tensor_value_info("c", TensorProto.INT64, [3])
    outs = [
        helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3]),
        helper.make_tensor_value_info("gram", TensorProto.FLOAT, [2, 2]),
        helper.make_tensor_value_info("twice", TensorProto.INT64, [3]),
    ]
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Transpose", ["b"], ["bt"], perm=[1, 0]),
        helper.make_node("MatMul", ["a", "bt"], ["gram"]),
        helper.make_node("Add", ["c", "c"], ["twice"]),
    ]
    g = helper.make_graph(nodes, "multi", [a, b, c], outs)
    path = save(out, "multi", g)
    reference(out, "multi", path, {
        "a": rng.standard_normal((2, 3)).astype(np.float32),
        "b": rng.standard_normal((2, 3)).astype(np.float32),
        "c": np.array([3, -4, 5], dtype=np.int64),
    })


def broken(out):
    with open(os.path.join(out, "mlp.onnx"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "broken.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])


def unsupported(out):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("LichenFrobnicate", ["x"], ["y"], name="frob1")], "unsupported", [x], [y])
    model = helper.make_model(g, opset_imports=OPSET)
    model.ir_version = 8
    onnx.save(model, os.path.join(out, "unsupported.onnx"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    which = sys.argv[2:] or ["mlp", "mlp2", "cnn", "multi"]
    if "mlp" in which:
        mlp(out)
        broken(out)
        unsupported(out)
    if "mlp2" in which:
        mlp(out, "mlp2", hidden=8)
    if "cnn" in which:
        cnn(out)
    if "multi" in which:
        multi(out)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(f"class-{i}" for i in range(10)) + "\n")


if __name__ == "__main__":
    main()
