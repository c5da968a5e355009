"""bfloat16 autocast on the CPU (train.cpu_amp): chosen only when asked and supported, float32 outputs."""

from __future__ import annotations

import pytest
import torch
from mmengine.config import Config

from detkd.engine.amp import CpuBf16OptimWrapper, cpu_bf16_supported
from detkd.engine.runner import _optim_wrapper
from detkd.models.factory import build_model
from detkd.options import TrainOptions

CLASSES = ["a", "b", "c"]


def _cfg(**train) -> Config:
    return Config(dict(optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-3)), train=dict(train)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_cpu_amp_only_when_asked_and_supported(monkeypatch):
    assert "type" not in _optim_wrapper(_cfg(), TrainOptions())  # off by default: plain float32
    monkeypatch.setattr("detkd.engine.runner.cpu_bf16_supported", lambda: True)
    assert _optim_wrapper(_cfg(cpu_amp=True), TrainOptions(cpu_amp=True))["type"] is CpuBf16OptimWrapper
    monkeypatch.setattr("detkd.engine.runner.cpu_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert "type" not in _optim_wrapper(_cfg(cpu_amp=True), TrainOptions(cpu_amp=True))


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_step_keeps_float32_outputs_and_learns():
    torch.manual_seed(0)
    model = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.125)
    wrapper = CpuBf16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])} for _ in range(2)]
    losses = []
    for _ in range(3):
        with wrapper.optim_context(model):
            outputs = model(images)
            assert outputs.dtype == torch.float32  # losses and decoding run in full precision
            assert torch.is_autocast_enabled("cpu")  # the convolutions ran in bfloat16
            loss = sum(model.loss(outputs, targets).values())
        wrapper.update_params(loss)
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bfloat16")
def test_ssd_outputs_are_float32_under_autocast():
    model = build_model("ssd_cpu", class_names=CLASSES, imgsz=128, width=0.125)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 128, 128))
    assert {k: v.dtype for k, v in out.items()} == {"bbox_regression": torch.float32, "cls_logits": torch.float32}
