"""Export of the trained explainer, beyond the ckpt_export test of test_bundle.py (which exports the tiny bundle's
Single AE through the README command and compares it with inference.json's explainer):

* ``monai.bundle ckpt_export network_def`` of inference.json for every generator layout (single, duo, naive:
  ``--network_def#mode``), from a random-weight checkpoint, gives the maps of the bundle's ``SimAdvExplainer`` at
  several sizes (the network is fully convolutional: the TorchScript is not tied to the export size);
* ``torch.export`` with a dynamic batch and spatial size (multiples of 8), saved and loaded back as ``.pt2``;
* ONNX (``torch.onnx.export``, run with onnxruntime) where ``onnx``, ``onnxscript`` and ``onnxruntime`` are
  installed (they are not runtime dependencies; the GPU image has them).

No trained bundle is needed: random weights with non-zero output heads, so the maps are not trivially 0.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from monai.networks.nets import DenseNet121

from conftest import ROOT

from scripts.explainers import SimAdvExplainer
from scripts.networks import SimAdvExplanationNet, SimAdvGenerator

SIZE = 32


def _checkpoint(tmp_path, mode: str) -> tuple[SimAdvGenerator, str]:
    torch.manual_seed({"single": 0, "duo": 1, "naive": 2}[mode])
    gen = SimAdvGenerator(mode=mode, zero_init=False).eval()
    path = tmp_path / f"explainer_{mode}.pt"
    torch.save({"generator": gen.state_dict()}, path)  # the layout AtomicCheckpointSaver writes
    return gen, str(path)


def _bundle_maps(gen: SimAdvGenerator, x: torch.Tensor) -> torch.Tensor:
    classifier = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4)
    maps = SimAdvExplainer(classifier, gen)(x)
    assert maps.abs().sum() > 0
    return maps


@pytest.mark.parametrize("mode", ["single", "duo", "naive"])
def test_ckpt_export_gives_the_bundle_maps(tmp_path, mode):
    from monai.bundle import ckpt_export

    gen, ckpt = _checkpoint(tmp_path, mode)
    ts = tmp_path / f"explainer_{mode}.ts"
    # the README's command (python -m monai.bundle ckpt_export network_def ...), in-process
    ckpt_export(
        "network_def", filepath=str(ts), ckpt_file=ckpt, key_in_ckpt="generator",
        meta_file=str(ROOT / "configs/metadata.json"), config_file=str(ROOT / "configs/inference.json"),
        bundle_root=str(ROOT), **{"network_def#mode": mode},
    )
    exported = torch.jit.load(str(ts))
    for shape in [(3, 1, SIZE, SIZE), (1, 1, 48, 64)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            got = exported(x)
        torch.testing.assert_close(got, _bundle_maps(gen, x), rtol=1e-4, atol=1e-5)


def test_torch_export_round_trip_with_dynamic_shapes(tmp_path):
    gen, _ = _checkpoint(tmp_path, "single")
    net = SimAdvExplanationNet(mode="single", zero_init=False).eval()
    net.load_state_dict(gen.state_dict())
    batch = torch.export.Dim("batch", min=1, max=64)
    h8, w8 = torch.export.Dim("h8", min=1, max=256), torch.export.Dim("w8", min=1, max=256)
    example = torch.rand(2, 1, SIZE, SIZE)
    program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch, 2: 8 * h8, 3: 8 * w8}})
    path = tmp_path / "explainer.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    for shape in [(2, 1, SIZE, SIZE), (3, 1, 48, 64)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            got = loaded(x)
        torch.testing.assert_close(got, _bundle_maps(gen, x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx, onnxscript and onnxruntime are not installed (optional; scripts/perf_gpu.sh runs this on the GPU image)",
)
def test_onnx_export_gives_the_bundle_maps(tmp_path):
    import onnxruntime as ort

    gen, _ = _checkpoint(tmp_path, "single")
    net = SimAdvExplanationNet(mode="single", zero_init=False).eval()
    net.load_state_dict(gen.state_dict())
    path = tmp_path / "explainer.onnx"
    example = torch.rand(2, 1, SIZE, SIZE)
    torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["explanation"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    (got,) = session.run(None, {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), _bundle_maps(gen, x), rtol=1e-3, atol=1e-4)
