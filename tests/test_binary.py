"""Binarized layers against hand-computed values: sign, straight-through gradients, BNN and XNOR convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from detkd.binary.layers import (
    BinaryActivation, BinaryConv2d, clip_latent_weights_, sign_ste, stochastic_sign, xnor_input_scale,
)


def test_sign_forward_and_straight_through_mask():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # sign(0) = +1: outputs are exactly +-1
    y.backward(torch.arange(1.0, 8.0))
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]  # g * 1{|x| <= 1}


def test_stochastic_sign_probabilities_and_gradient():
    gen = torch.Generator().manual_seed(0)
    base = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0], requires_grad=True)
    y = stochastic_sign(base.repeat(20000, 1), generator=gen)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    p_plus = (y == 1).float().mean(0)
    assert p_plus[0] == 0 and p_plus[1] == 0 and p_plus[4] == 1  # hard_sigmoid(-3), (-1), (1)
    assert abs(float(p_plus[2]) - 0.5) < 0.015 and abs(float(p_plus[3]) - 0.75) < 0.015
    y.sum().backward()
    assert base.grad.tolist() == [0, 20000, 20000, 20000, 20000]
    act = BinaryActivation(stochastic=True).eval()  # deterministic outside training
    assert act(torch.tensor([0.2, -0.2])).tolist() == [1, -1]


def _conv(mode: str, bias: bool = False) -> BinaryConv2d:
    conv = BinaryConv2d(1, 1, 2, stride=1, padding=0, bias=bias, mode=mode)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[0.3, -0.2], [0.0, -0.7]]]]))  # sign: [[1, -1], [1, -1]], mean |W| = 0.3
    return conv


X = torch.tensor([[[[0.5, -1.0, 2.0], [-0.1, 0.0, 0.3], [1.0, 1.0, -2.0]]]])  # sign: [[1,-1,1],[-1,1,1],[1,1,-1]]


def test_bnn_conv_hand_computed():
    out = _conv("bnn")(X)
    # window (0,0): [1,-1;-1,1] . [1,-1;1,-1] = 1+1-1-1 = 0;  (0,1): [-1,1;1,1] . W = -1-1+1-1 = -2
    # window (1,0): [-1,1;1,1] . W = -2;                     (1,1): [1,1;1,-1] . W = 1-1+1+1 = 2
    assert out.tolist() == [[[[0.0, -2.0], [-2.0, 2.0]]]]


def test_xnor_scaling_values_and_output():
    conv = _conv("xnor")
    assert torch.allclose(conv.alpha(), torch.tensor([0.3]))
    k = xnor_input_scale(X, (2, 2), 1, (0, 0), 1)
    # one channel: A = |x|; K = mean of |x| over each 2x2 window
    expected_k = torch.tensor([[[[(0.5 + 1.0 + 0.1 + 0.0) / 4, (1.0 + 2.0 + 0.0 + 0.3) / 4],
                                 [(0.1 + 0.0 + 1.0 + 1.0) / 4, (0.0 + 0.3 + 1.0 + 2.0) / 4]]]])
    assert torch.allclose(k, expected_k)
    assert torch.allclose(conv(X), torch.tensor([[[[0.0, -2.0], [-2.0, 2.0]]]]) * expected_k * 0.3)
    # channel mean and zero padding: two channels, padding 1, 3x3 box at the corner sees 4 real pixels of 9
    x2 = torch.stack([X[0, 0], 3 * X[0, 0]]).unsqueeze(0)
    k2 = xnor_input_scale(x2, (3, 3), 1, (1, 1), 1)
    a = (X[0, 0].abs() + 3 * X[0, 0].abs()) / 2
    assert torch.isclose(k2[0, 0, 0, 0], a[:2, :2].sum() / 9)


def test_weight_gradients_straight_through_and_through_alpha():
    conv = _conv("bnn")
    with torch.no_grad():
        conv.weight[0, 0, 1, 1] = -1.5  # outside [-1, 1]: the STE passes no gradient
    conv(X).sum().backward()
    # d sum(out) / d Wb[i, j] = sum over windows of sign(x) at offset (i, j)
    sx = torch.sign(X[0, 0]).where(X[0, 0] != 0, torch.ones(()))
    grad_wb = torch.stack([torch.stack([sx[i:i + 2, j:j + 2].sum() for j in range(2)]) for i in range(2)])
    expected = torch.tensor([[0.3, -0.2], [0.0, -1.5]]).abs().le(1).float() * grad_wb.T.T
    assert torch.allclose(conv.weight.grad[0, 0], expected)
    assert conv.weight.grad[0, 0, 1, 1] == 0
    # XNOR: alpha = mean|W| also carries gradient: d/dW of (S * mean|W|) adds S_total * sign(W) / n
    xconv = _conv("xnor")
    xconv(X).sum().backward()
    k = xnor_input_scale(X, (2, 2), 1, (0, 0), 1)[0, 0]
    s = torch.tensor([[0.0, -2.0], [-2.0, 2.0]])
    grad_via_sign = torch.stack([torch.stack([(sx[i:i + 2, j:j + 2] * k).sum() for j in range(2)]) for i in range(2)]) * 0.3
    grad_via_alpha = (s * k).sum() * torch.sign(torch.tensor([[0.3, -0.2], [0.0, -0.7]])) / 4
    assert torch.allclose(xconv.weight.grad[0, 0], grad_via_sign + grad_via_alpha, atol=1e-6)


def test_input_gradient_is_masked_and_binary_weights_only_mode():
    conv = _conv("bnn")
    x = X.clone().requires_grad_(True)
    conv(x).sum().backward()
    assert x.grad[0, 0, 0, 2] == 0 and x.grad[0, 0, 2, 2] == 0  # |x| = 2 > 1
    real_in = BinaryConv2d(1, 1, 2, bias=False, binarize_input=False)
    real_in.weight.data = conv.weight.data.clone()
    expected = nn.functional.conv2d(X, torch.sign(conv.weight.data).where(conv.weight.data != 0, torch.ones(())))
    assert torch.allclose(real_in(X), expected)


def test_from_conv_and_clip():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight[0] *= 50
    binary = BinaryConv2d.from_conv(conv, mode="xnor")
    assert binary.weight.abs().max() <= 1 and torch.equal(binary.bias, conv.bias)
    assert binary(torch.randn(2, 3, 9, 9)).shape == conv(torch.randn(2, 3, 9, 9)).shape == (2, 5, 5, 5)
    with torch.no_grad():
        binary.weight[1] = 3.0
    clip_latent_weights_(nn.Sequential(binary))
    assert binary.weight.abs().max() == 1
    with pytest.raises(ValueError):
        BinaryConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError):
        BinaryConv2d(4, 4, 3, mode="ternary")


def test_binarized_student_keeps_first_and_prediction_convs_trains_and_reloads(tmp_path):
    from detkd.engine.checkpoint import load_detector, save_detector
    from detkd.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.125, binary={"mode": "xnor", "keep_1x1": True})
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    binary = [n for n, m in convs.items() if isinstance(m, BinaryConv2d)]
    first = next(iter(convs))
    assert first not in binary and "head.conv" not in binary and binary
    assert all(convs[n].kernel_size != (1, 1) for n in binary)  # keep_1x1
    every = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.125, binary={"mode": "bnn"})
    assert sum(isinstance(m, BinaryConv2d) for m in every.modules()) > len(binary)
    images = torch.rand(4, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([1])}] * 4
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    model.train()
    for _ in range(15):
        loss = sum(model.loss(model(images), targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        clip_latent_weights_(model)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert all(m.weight.abs().max() <= 1 for m in model.modules() if isinstance(m, BinaryConv2d))
    path = save_detector(model, tmp_path / "binary.pth")
    loaded = load_detector(path).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    with pytest.raises(ValueError, match="unknown config key model.binary.bits"):
        build_model("fyolo", class_names=["a"], imgsz=64, width=0.125, binary={"bits": 1})


@pytest.mark.parametrize("mode", ["bnn", "xnor"])
@pytest.mark.parametrize("c_in,c_out,k,stride,pad,dil,size", [
    (3, 5, 3, 1, 1, 1, 7), (70, 9, 3, 2, 1, 1, 11), (64, 16, 1, 1, 0, 1, 6), (130, 33, 3, 2, 0, 1, 9), (17, 8, 3, 1, 2, 2, 8),
])
def test_xnor_kernel_equals_float_simulation(mode, c_in, c_out, k, stride, pad, dil, size):
    from detkd.binary.packing import PackedBinaryConv2d

    gen = torch.Generator().manual_seed(c_in * 31 + size)
    conv = BinaryConv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dil, bias=True, mode=mode)
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen) * 2 - 1)
        conv.bias.copy_(torch.randn(c_out, generator=gen))
    x = torch.randn(2, c_in, size, size + 1, generator=gen)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1 on both paths
    with torch.no_grad():
        expected = conv(x)
        got = PackedBinaryConv2d(conv)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_packed_checkpoint_is_32x_smaller_and_reloads_to_the_same_outputs(tmp_path):
    from detkd.engine.checkpoint import CheckpointError, save_detector
    from detkd.binary.packing import pack_model, packed_sizes
    from detkd.engine.checkpoint import load_packed, save_packed
    from detkd.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.25, binary={"mode": "xnor"}).eval()
    sizes = packed_sizes(model)
    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert sizes["binary_float32"] == sum(m.weight.numel() * 4 for m in binary)
    bits = sum(m.out_channels * ((m.weight[0].numel() + 7) // 8) for m in binary)
    assert sizes["binary_packed"] == bits + sum(m.out_channels * 4 for m in binary)
    assert sizes["binary_float32"] / bits == pytest.approx(32, rel=0.01)
    path = save_packed(model, tmp_path / "packed.pth")
    save_detector(model, tmp_path / "float.pth")
    assert path.stat().st_size < 0.25 * (tmp_path / "float.pth").stat().st_size
    loaded = load_packed(path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(loaded(x), reference)  # latent weights +-alpha: same signs, same alpha
        torch.testing.assert_close(pack_model(loaded)(x), reference, rtol=1e-4, atol=1e-4)  # on the kernel
    with pytest.raises(CheckpointError, match="not a packed binary checkpoint"):
        load_packed(tmp_path / "float.pth")


def test_layer_policy_on_a_crafted_table():
    from detkd.binary.policy import LayerRule, rule_from_table

    rows = [dict(c_in=8, c_out=16, kernel=3, speedup=0.3), dict(c_in=16, c_out=32, kernel=3, speedup=1.6),
            dict(c_in=32, c_out=64, kernel=3, speedup=1.2),  # a slow row above: 16 is not enough
            dict(c_in=64, c_out=128, kernel=3, speedup=4.0), dict(c_in=128, c_out=16, kernel=1, speedup=0.9),
            dict(c_in=256, c_out=256, kernel=1, speedup=2.0), dict(c_in=256, c_out=32, kernel=1, speedup=1.7)]
    assert rule_from_table(rows, 1.5) == LayerRule(min_in_3x3=64, min_in_1x1=256, min_out_1x1=32)
    never = rule_from_table([dict(c_in=64, c_out=8, kernel=1, speedup=0.5)], 1.5)
    assert never.min_in_1x1 > 1e9 and never.min_in_3x3 > 1e9  # no 3x3 rows, no fast 1x1 row: nothing binarized
    rule = LayerRule(min_in_3x3=64, min_in_1x1=256, min_out_1x1=32)
    assert rule.allows(nn.Conv2d(64, 8, 3)) and not rule.allows(nn.Conv2d(63, 8, 3))
    assert rule.allows(nn.Conv2d(256, 32, 1)) and not rule.allows(nn.Conv2d(256, 31, 1)) and not rule.allows(nn.Conv2d(255, 64, 1))
    assert not rule.allows(nn.Conv2d(64, 64, 3, groups=2))


def test_default_rule_is_the_one_the_committed_table_gives():
    import json
    from pathlib import Path

    from detkd.binary.policy import DEFAULT_RULE, rule_from_table

    table = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "binary_layers.json"
    assert rule_from_table(json.loads(table.read_text())["rows"], 1.5) == DEFAULT_RULE


def test_speed_policy_and_keep_choose_the_binary_convs():
    from detkd.binary.policy import DEFAULT_RULE
    from detkd.errors import ConfigError
    from detkd.models.factory import build_model

    def binary_names(**opts):
        torch.manual_seed(0)
        model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.5, binary={"mode": "xnor", **opts})
        return model, [n for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]

    _, every = binary_names()
    model, fast = binary_names(policy="speed")
    assert fast and set(fast) < set(every)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and name in every:  # what "all" binarizes, "speed" keeps where it loses
            assert (name in fast) == DEFAULT_RULE.allows(module), name
    _, kept = binary_names(policy="speed", keep=[fast[0]])
    assert kept == fast[1:]
    with pytest.raises(ConfigError, match="model.binary.keep"):
        binary_names(keep=["backbone.nope"])


class _OneBinaryConv(nn.Module):
    """A single binary conv as a 'detector' for the OpenVINO route (raw output, identity decode)."""

    def __init__(self, conv: BinaryConv2d, imgsz: int) -> None:
        super().__init__()
        self.conv, self.imgsz, self.class_names = conv, imgsz, ["a"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def decode(self, outputs, cfg=None):
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}] * len(outputs)


@pytest.mark.parametrize("mode", ["bnn", "xnor"])
@pytest.mark.parametrize("c_in,c_out,k,stride,pad,dil,size", [
    (3, 5, 3, 1, 1, 1, 7), (70, 9, 3, 2, 1, 1, 11), (64, 16, 1, 1, 0, 1, 6), (130, 33, 3, 2, 0, 1, 9), (17, 8, 3, 1, 2, 2, 8),
])
def test_openvino_binary_conv_equals_float_simulation(mode, c_in, c_out, k, stride, pad, dil, size, tmp_path):
    from detkd.export.openvino import OpenVINODetector, export_binary_ir

    torch.manual_seed(0)
    conv = BinaryConv2d(c_in, c_out, k, stride, pad, dil, mode=mode)
    with torch.no_grad():
        conv.weight.uniform_(-1, 1)
        conv.bias.uniform_(-1, 1)
    model = _OneBinaryConv(conv, size).eval()
    images = torch.randn(2, c_in, size, size)  # real-valued, signed inputs (the layer signs them itself)
    parity = export_binary_ir(model, tmp_path / "conv.xml", check_images=images[:1])
    assert parity.ok, str(parity)
    deployed = OpenVINODetector(tmp_path / "conv.xml", model)
    with torch.no_grad():
        want = model(images)
        got = deployed(images)
    assert torch.allclose(got, want, atol=1e-4 * max(1.0, float(want.abs().max()))), float((got - want).abs().max())
    assert 'type="BinaryConvolution"' in (tmp_path / "conv.xml").read_text()


def test_binary_student_deploys_to_openvino_ir(tmp_path):
    from detkd.export.onnx import ExportError
    from detkd.export.openvino import OpenVINODetector, export_binary_ir
    from detkd.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.25, binary={"mode": "xnor"}).eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    parity = export_binary_ir(model, tmp_path / "student.xml", check_images=images)
    assert parity.ok and parity.max_abs_diff < 1e-4, str(parity)
    xml = (tmp_path / "student.xml").read_text()
    binary = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    assert xml.count('type="BinaryConvolution"') == binary > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.bin", "student.xml"]  # nothing else left behind
    deployed = OpenVINODetector(tmp_path / "student.xml", model)
    # float32 inference on every CPU (OpenVINO's default is bf16 where AVX512_BF16 or AMX exist)
    assert str(deployed.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    with torch.no_grad():
        assert torch.allclose(deployed(images), model(images), atol=1e-3)
    float_model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.25)
    with pytest.raises(ExportError, match="no binary convs"):
        export_binary_ir(float_model, tmp_path / "float.xml")
    with pytest.raises(ExportError, match=".xml"):
        export_binary_ir(model, tmp_path / "student.onnx")


def test_kernel_build_without_a_compiler_is_one_clear_line():
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": "/nonexistent/c++"}
    proc = subprocess.run([sys.executable, "-m", "detkd.binary.kernels"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: the XNOR kernel needs a C++ compiler (set CXX or install g++ / clang++)"]
