"""Small recurrent models for the test zoo, written with onnx.helper (numpy weights, no torch).

* ``lstm_crnn_op14.onnx``: a CRNN text-line reader: Conv -> Relu -> MaxPool over height -> columns as
  a sequence -> bidirectional LSTM -> MatMul -> per-timestep logits -> LogSoftmax ([N, T, classes]).
* ``gru_audio_op11.onnx``: an audio classifier over [N, frames, features]: a GRU (linear_before_reset=1,
  as PyTorch exports it) whose initial state is computed from the clip's mean frame, with
  sequence_lens marking the last two frames as padding, then a reverse GRU -> Y_h -> Gemm -> Softmax.
* ``rnn_bidi_op17.onnx``: a bidirectional Tanh RNN whose time-averaged Y and Y_h are concatenated
  -> Gemm -> logits (onnx.reference's own RNN, used by check_zoo.py, knows only Tanh and Affine).

    python models/zoo/recurrent.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import opset_of, save_checked, update_manifest

RNG = np.random.default_rng(2024)
F = TensorProto.FLOAT
SOURCE = "handwritten-recurrent"


def w(*shape, scale=None):
    scale = scale if scale is not None else 1 / np.sqrt(shape[-1])
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(name, nodes, inputs, outputs, inits, opset):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def lstm_crnn():
    T, H, C = 12, 6, 5  # columns, hidden size, classes (CTC blank included)
    n = helper.make_node
    nodes = [
        n("Conv", ["image", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["conv"], ["act"]),
        n("MaxPool", ["act"], ["pool"], kernel_shape=[2, 1], strides=[2, 1]),  # [N, 4, 4, T]
        n("Transpose", ["pool"], ["cols"], perm=[3, 0, 1, 2]),  # [T, N, 4, 4]
        n("Reshape", ["cols", "seq_shape"], ["seq"]),  # [T, N, 16]
        n("LSTM", ["seq", "lstm_w", "lstm_r", "lstm_b"], ["lstm_y"], hidden_size=H, direction="bidirectional"),
        n("Transpose", ["lstm_y"], ["y_t"], perm=[0, 2, 1, 3]),  # [T, N, 2, H]
        n("Reshape", ["y_t", "feat_shape"], ["feat"]),  # [T, N, 2H]
        n("MatMul", ["feat", "fc_w"], ["fc"]),
        n("Add", ["fc", "fc_b"], ["logits_tnc"]),
        n("Transpose", ["logits_tnc"], ["logits"], perm=[1, 0, 2]),  # [N, T, C]
        n("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    inits = {
        "conv_w": w(4, 1, 3, 3, scale=0.5),
        "conv_b": w(4, scale=0.1),
        "seq_shape": np.array([T, -1, 16]),
        "lstm_w": w(2, 4 * H, 16),
        "lstm_r": w(2, 4 * H, H),
        "lstm_b": w(2, 8 * H, scale=0.1),
        "feat_shape": np.array([T, -1, 2 * H]),
        "fc_w": w(2 * H, C),
        "fc_b": w(C, scale=0.1),
    }
    m = model(
        "lstm_crnn",
        nodes,
        [helper.make_tensor_value_info("image", F, ["N", 1, 8, T])],
        [helper.make_tensor_value_info("log_probs", F, ["N", T, C])],
        inits,
        14,
    )
    return m, "lstm_crnn_op14.onnx", "image", [2, 1, 8, T], "log_probs", f"per-column log-probabilities [N,{T},{C}]"


def gru_audio():
    T, Fe, H1, H2, K = 10, 8, 8, 6, 4  # frames, features, hidden sizes, classes
    n = helper.make_node
    nodes = [
        n("Transpose", ["features"], ["seq"], perm=[1, 0, 2]),  # [T, N, F]
        n("ReduceMean", ["features"], ["mean_frame"], axes=[1], keepdims=0),  # [N, F]
        n("MatMul", ["mean_frame", "init_w"], ["init_pre"]),
        n("Tanh", ["init_pre"], ["init_act"]),
        n("Unsqueeze", ["init_act"], ["h0"], axes=[0]),  # [1, N, H1]
        n("Shape", ["features"], ["x_shape"]),
        n("Slice", ["x_shape", "zero", "one", "zero"], ["batch"]),
        n("Expand", ["valid_frames", "batch"], ["lens64"]),
        n("Cast", ["lens64"], ["lens"], to=TensorProto.INT32),  # the last two frames are padding
        n(
            "GRU",
            ["seq", "gru1_w", "gru1_r", "gru1_b", "lens", "h0"],
            ["gru1_y"],
            hidden_size=H1,
            linear_before_reset=1,
        ),
        n("Squeeze", ["gru1_y"], ["gru1_seq"], axes=[1]),  # [T, N, H1]
        n("GRU", ["gru1_seq", "gru2_w", "gru2_r", "gru2_b"], ["", "gru2_h"], hidden_size=H2, direction="reverse"),
        n("Squeeze", ["gru2_h"], ["summary"], axes=[0]),  # [N, H2]
        n("Gemm", ["summary", "fc_w", "fc_b"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = {
        "init_w": w(Fe, H1),
        "zero": np.array([0]),
        "one": np.array([1]),
        "valid_frames": np.array([T - 2]),
        "gru1_w": w(1, 3 * H1, Fe),
        "gru1_r": w(1, 3 * H1, H1),
        "gru1_b": w(1, 6 * H1, scale=0.1),
        "gru2_w": w(1, 3 * H2, H1),
        "gru2_r": w(1, 3 * H2, H2),
        "gru2_b": w(1, 6 * H2, scale=0.1),
        "fc_w": w(K, H2),
        "fc_b": w(K, scale=0.1),
    }
    m = model(
        "gru_audio",
        nodes,
        [helper.make_tensor_value_info("features", F, ["N", T, Fe])],
        [helper.make_tensor_value_info("probs", F, ["N", K])],
        inits,
        11,
    )
    return m, "gru_audio_op11.onnx", "features", [2, T, Fe], "probs", f"softmax probabilities [N,{K}], not logits"


def rnn_bidi():
    T, Fe, H, K = 6, 5, 4, 3
    n = helper.make_node
    nodes = [
        n("Transpose", ["x"], ["seq"], perm=[1, 0, 2]),  # [T, N, F]
        n("RNN", ["seq", "rnn_w", "rnn_r", "rnn_b"], ["rnn_y", "rnn_h"], hidden_size=H, direction="bidirectional"),
        n("ReduceMean", ["rnn_y"], ["y_mean"], axes=[0], keepdims=0),  # [2, N, H]
        n("Concat", ["y_mean", "rnn_h"], ["both"], axis=2),  # [2, N, 2H]
        n("Transpose", ["both"], ["both_t"], perm=[1, 0, 2]),
        n("Reshape", ["both_t", "flat_shape"], ["flat"]),  # [N, 4H]
        n("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    inits = {
        "rnn_w": w(2, H, Fe),
        "rnn_r": w(2, H, H),
        "rnn_b": w(2, 2 * H, scale=0.1),
        "flat_shape": np.array([-1, 4 * H]),
        "fc_w": w(4 * H, K),
        "fc_b": w(K, scale=0.1),
    }
    m = model(
        "rnn_bidi",
        nodes,
        [helper.make_tensor_value_info("x", F, ["N", T, Fe])],
        [helper.make_tensor_value_info("logits", F, ["N", K])],
        inits,
        17,
    )
    return m, "rnn_bidi_op17.onnx", "x", [2, T, Fe], "logits", f"class logits [N,{K}]"


def main():
    entries = []
    for make in (lstm_crnn, gru_audio, rnn_bidi):
        m, file, inp, shape, out, note = make()
        save_checked(m, file)
        entries.append(
            {
                "file": file,
                "family": "recurrent",
                "source": SOURCE,
                "opset": opset_of(m),
                "input": inp,
                "input_shape": shape,
                "dynamic_batch": True,
                "output": out,
                "logits_note": note,
            }
        )
        print("wrote", file)
    update_manifest(entries, {SOURCE})


if __name__ == "__main__":
    main()
