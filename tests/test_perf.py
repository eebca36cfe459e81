"""The fast explanation path (scripts/fast_path.py) and the speed benchmark (python -m scripts.perf).

CPU: the fast path's maps match float32 eager within the stated tolerance for every option that runs on a CPU,
and the benchmark command runs end to end on a tiny size and writes the JSON it documents. CUDA-only options
(CUDA graphs, fp16, TF32) and ``torch.compile`` (about a minute to compile on a 2-core CPU) are tested when a GPU
is present (scripts/perf_gpu.sh runs this file there); ``SIMADV_SLOW_TESTS=1`` also runs the CPU compile test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, bundle_env

from scripts.fast_path import (
    TOLERANCES,
    FastPathOptions,
    check_fast_path,
    eager_reference,
    make_fast_explainer,
    relative_l2_error,
    tolerance_for,
)
from scripts.networks import SimAdvGenerator

SIZE = 32
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA-only option (scripts/perf_gpu.sh runs it on a GPU)")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: stable and fast on a small, shared CPU (restored afterwards)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _generator(mode: str, seed: int = 0, device: str = "cpu") -> SimAdvGenerator:
    """Random weights with non-zero heads, so the map is not trivially 0."""
    torch.manual_seed(seed)
    return SimAdvGenerator(mode=mode, zero_init=False).to(device).eval()


def _input(batch: int = 2, size: int = SIZE, device: str = "cpu") -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(1)).to(device)


def test_relative_l2_error():
    a = torch.tensor([3.0, 4.0])
    assert relative_l2_error(a, a) == 0.0
    assert relative_l2_error(torch.tensor([3.0, 5.0]), a) == pytest.approx(1 / 5)
    assert relative_l2_error(torch.tensor([0.0, 2.0]), torch.zeros(2)) == pytest.approx(2.0)  # absolute when ref is 0
    with pytest.raises(ValueError):
        relative_l2_error(torch.zeros(2), torch.zeros(3))


def test_options_parse_describe_and_tolerance():
    o = FastPathOptions.parse("bf16+channels_last+cuda_graph")
    assert (o.autocast, o.channels_last, o.cuda_graph, o.compile) == ("bf16", True, True, False)
    assert FastPathOptions.parse(o.describe()) == o
    assert FastPathOptions.parse("compile=max-autotune-no-cudagraphs").compile_mode == "max-autotune-no-cudagraphs"
    assert FastPathOptions.parse("eager") == FastPathOptions()
    assert tolerance_for(FastPathOptions()) == TOLERANCES["exact"]
    assert tolerance_for(o) == TOLERANCES["bf16"]
    with pytest.raises(ValueError, match="unknown fast-path option"):
        FastPathOptions.parse("turbo")
    with pytest.raises(ValueError, match="reduce-overhead"):
        FastPathOptions.parse("compile=reduce-overhead+cuda_graph")


@pytest.mark.parametrize("mode", ["single", "duo", "naive"])
@pytest.mark.parametrize("options", ["eager", "channels_last", "bf16", "bf16+channels_last"])
def test_fast_path_matches_fp32_eager_on_cpu(mode, options):
    from monai.networks.nets import DenseNet121

    from scripts.explainers import SimAdvExplainer

    gen = _generator(mode)
    x = _input()
    bundle_map = SimAdvExplainer(DenseNet121(2, 1, 2, init_features=8, growth_rate=4), gen)(x)
    assert bundle_map.abs().sum() > 0  # non-trivial map (heads not zero-initialised)
    torch.testing.assert_close(eager_reference(gen, x), bundle_map)  # the reference is the bundle's map
    fast = make_fast_explainer(gen, options)
    out = fast(x)
    assert out.shape == (2, 1, SIZE, SIZE) and out.dtype == torch.float32
    error = relative_l2_error(out, bundle_map)
    assert error <= tolerance_for(fast.options) == fast.tolerance, f"{mode} {options}: relative L2 error {error:.2e}"
    assert check_fast_path(gen, fast, x) == pytest.approx(error, rel=1e-6, abs=1e-12)


def test_fast_path_leaves_the_callers_generator_alone():
    gen = _generator("single").train()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    fast = make_fast_explainer(gen, "channels_last")
    fast(_input())
    assert gen.training  # mode untouched
    conv = next(p for p in gen.parameters() if p.ndim == 4)
    assert conv.is_contiguous()  # NCHW kept: the fast path converted its own copy
    for k, v in gen.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # a snapshot: training the original afterwards does not change the fast path's maps
    ref = fast(_input())
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.1)
    torch.testing.assert_close(fast(_input()), ref)


def test_cuda_only_options_refuse_cpu():
    gen = _generator("single")
    with pytest.raises(ValueError, match="CUDA"):
        make_fast_explainer(gen, "cuda_graph")
    with pytest.raises(ValueError, match="fp16"):
        make_fast_explainer(gen, "fp16")


@pytest.mark.skipif(not os.environ.get("SIMADV_SLOW_TESTS"), reason="torch.compile takes ~1 min on a 2-core CPU; "
                    "set SIMADV_SLOW_TESTS=1 (scripts/perf_gpu.sh tests compile on CUDA)")
def test_fast_path_compile_matches_on_cpu():
    gen = _generator("single")
    x = _input()
    fast = make_fast_explainer(gen, "compile")
    assert check_fast_path(gen, fast, x) <= tolerance_for(fast.options)


@needs_cuda
@pytest.mark.parametrize(
    "options",
    ["eager", "channels_last", "cuda_graph", "tf32", "bf16", "fp16", "bf16+channels_last+cuda_graph",
     "fp16+channels_last+cuda_graph", "compile"],
)
def test_fast_path_matches_fp32_eager_on_cuda(options):
    gen = _generator("single", device="cuda")
    for batch in (4,) if "compile" in options else (1, 4):  # a CUDA graph per shape; one compile is enough
        x = _input(batch, 64, "cuda")
        fast = make_fast_explainer(gen, options)
        first = fast(x)
        error = check_fast_path(gen, fast, x)
        # fast.tolerance: float32 options on CUDA also get the TF32 tolerance while cuDNN's TF32 default is on
        assert error <= fast.tolerance, f"{options} b={batch}: relative L2 error {error:.2e} > {fast.tolerance}"
        torch.testing.assert_close(fast(x), first)  # replays give the same map


@needs_cuda
def test_strict_float32_fast_path_on_cuda():
    """Without TF32, the float32-only options (NHWC, CUDA graph) hold the tight tolerance."""
    gen = _generator("single", device="cuda")
    fast = make_fast_explainer(gen, "no_tf32+channels_last+cuda_graph")
    assert fast.tolerance == TOLERANCES["exact"]
    error = check_fast_path(gen, fast, _input(2, 64, "cuda"))
    assert error <= fast.tolerance, f"relative L2 error {error:.2e}"


def test_sync_counter_ignores_the_prototype_notice():
    """The notice PyTorch prints once when the sync debug mode is switched on is not a sync."""
    from scripts.perf.training import is_host_sync_warning

    notice = ("Synchronization debug mode is a prototype feature and does not yet detect all synchronizing "
              "operations (Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1003.)")
    assert not is_host_sync_warning(notice)
    assert is_host_sync_warning("called a synchronizing CUDA operation (Triggered internally at ...)")
    assert not is_host_sync_warning("some other warning")


@needs_cuda
@pytest.mark.parametrize("options", ["eager", "bf16+channels_last+fused"])
def test_explainer_training_step_has_no_host_sync_on_cuda(options):
    from scripts.perf.methods import build_networks
    from scripts.perf.training import TrainOptions, count_host_syncs, make_explainer_step

    device = torch.device("cuda")
    nets = build_networks(device, 64, modes=("single",))
    step = make_explainer_step(device, _input(8, 64, "cuda"), nets.classifier, "single", TrainOptions.parse(options))
    step()
    syncs = count_host_syncs(step, device)
    assert syncs["flagged"] == 0, syncs


def test_explainer_training_step_is_the_trainers_step(monkeypatch):
    """The benchmark's explainer step runs scripts.trainer.simadv_step (the step of every SimAdvTrainer iteration)
    on its generator, with one classifier call on both generated images."""
    import scripts.perf.training as training
    from scripts.perf.methods import build_networks

    device = torch.device("cpu")
    nets = build_networks(device, SIZE, modes=("single",))
    seen = []

    def spy(x, generator, classifier, *args, **kwargs):
        seen.append((generator, kwargs["network"]))
        return simadv_step(x, generator, classifier, *args, **kwargs)

    from scripts.trainer import simadv_step

    monkeypatch.setattr(training, "simadv_step", spy)
    step = training.make_explainer_step(device, _input(2), nets.classifier, "single", training.TrainOptions())
    first, second = step(), step()
    assert len(seen) == 2 and seen[0][0] is seen[0][1] and seen[0][1].mode == "single"
    assert torch.isfinite(first) and not torch.equal(first, second)  # the generator trains between the calls


def test_training_steps_update_weights_on_cpu():
    from scripts.perf.methods import build_networks
    from scripts.perf.training import TrainOptions, count_host_syncs, make_explainer_step

    device = torch.device("cpu")
    nets = build_networks(device, SIZE, modes=("single",))
    step = make_explainer_step(device, _input(2), nets.classifier, "single", TrainOptions.parse("bf16+foreach"))
    loss = step()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert count_host_syncs(step, device) is None  # the check is CUDA-only
    with pytest.raises(ValueError, match="unknown training option"):
        TrainOptions.parse("warp-speed")


def test_missing_peer_is_reported_not_raised(monkeypatch):
    from scripts.perf import methods

    monkeypatch.setitem(methods._PEER_PACKAGES, "captum-saliency", ("no_such_package_xyz", "no-such-package"))
    status, reason = methods.peer_status("captum-saliency")
    assert status == "not installed" and "no-such-package" in reason
    with pytest.raises(ValueError, match="unknown method"):
        methods.method_names("ours-single,quantum-cam")


def test_benchmark_cli_end_to_end(tmp_path):
    """``python -m scripts.perf`` on 32×32 with batch sizes 1, 2: every section, a valid JSON with the fields."""
    from scripts.data.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(data, num_train=6, num_val=2, num_test=2, size=SIZE, seed=0)
    out = tmp_path / "perf.json"
    md = tmp_path / "perf.md"
    cmd = [
        sys.executable, "-m", "scripts.perf", "--device", "cpu", "--threads", "1", "--sizes", str(SIZE),
        "--batch-sizes", "1", "2", "--methods",
        "ours-single,ours-single-s2d,gradient,captum-saliency,pytorch-grad-cam",
        "--fast", "channels_last", "--warmup", "1", "--min-time", "0.01", "--min-iters", "1", "--max-iters", "2",
        "--latency-min-iters", "2", "--latency-max-iters", "3", "--train-what", "explainer-single",
        "--train-batch-sizes", "2", "--data-images", "4", "--data-batch-size", "2", "--dataset-dir", str(data),
        "--out", str(out), "--markdown", str(md), "--quiet",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "simadv_explainer.perf/1"
    assert result["command"].startswith("python -m scripts.perf --device cpu")
    for key in ("device", "device_name", "torch", "monai", "memory_kind", "torch_threads"):
        assert key in result["environment"]
    rows = {r["method"]: r for r in result["explanation"][str(SIZE)]}
    assert set(rows) == {"ours-single", "ours-single-s2d", "gradient", "captum-saliency", "pytorch-grad-cam",
                         "ours-single[channels_last]"}
    for name in ("ours-single", "ours-single-s2d", "gradient", "ours-single[channels_last]"):
        r = rows[name]
        assert r["status"] == "ok", r
        assert [t["batch_size"] for t in r["throughput"]] == [1, 2]
        assert r["best"]["images_per_s"] > 0 and r["best"]["batch_size"] in (1, 2)
        assert r["latency"]["median_ms"] > 0 and r["latency"]["iterations"] >= 2
        assert r["best"]["peak_memory_mib"] is not None  # Linux: RSS sampled
    generators = result["networks"]  # the configured trunk and the space-to-depth one, side by side
    assert "generator_single" in generators and "generator_single-s2d" in generators
    fast = rows["ours-single[channels_last]"]["info"]
    assert fast["check_passed"] and fast["rel_l2_error"] <= fast["tolerance"]
    for peer in ("captum-saliency", "pytorch-grad-cam"):  # optional extras: run, or a row saying why not
        assert rows[peer]["status"] in ("ok", "not installed", "unavailable"), rows[peer]
        assert rows[peer]["family"] == "peer"
    (train,) = result["training"]
    assert train["what"] == "explainer-single" and train["best"]["images_per_s"] > 0
    (data_row,) = result["data_loading"]
    assert data_row["num_images"] == 4 and data_row["cached_image_shape"] == [1, SIZE, SIZE]
    assert data_row["ms_per_batch_from_cache"] > 0
    summary = result["summary"]
    assert summary["per_size"][str(SIZE)]["fastest_ours"] in ("ours-single", "ours-single-s2d", "ours-single[channels_last]")
    assert all("not applicable" in t["verdict"] for t in summary["targets"]["items"])  # CPU run
    assert "| ours-single |" in md.read_text() and "| ours-single |" in proc.stdout
    # tables again from the saved JSON, measuring nothing
    from scripts.perf.cli import main

    merged = main(["--report", str(out), "--markdown", str(tmp_path / "again.md")])
    assert merged["summary"] == result["summary"] and "| ours-single |" in (tmp_path / "again.md").read_text()


def test_fast_explainer_plugs_into_the_explainer_interface_and_tta():
    from monai.networks.nets import DenseNet121

    from scripts.explainers import SimAdvExplainer, TTAExplainer
    from scripts.fast_path import FastSimAdvExplainer

    gen = _generator("single")
    clf = DenseNet121(2, 1, 2, init_features=8, growth_rate=4)
    x = _input()
    fast = FastSimAdvExplainer(clf, gen, "channels_last")
    torch.testing.assert_close(fast(x), SimAdvExplainer(clf, gen)(x), rtol=1e-4, atol=1e-5)
    expected = TTAExplainer(SimAdvExplainer(clf, gen), num_augmentations=2)(x)
    got = TTAExplainer(fast, num_augmentations=2)(x)
    assert relative_l2_error(got, expected) <= TOLERANCES["channels_last"]
    with pytest.raises(ValueError, match="expected a batch"):
        fast(torch.rand(SIZE, SIZE))
    calls = []
    fast.compute_map = lambda x, class_idx: calls.append(class_idx) or torch.zeros(x.shape[0], 1, *x.shape[2:])
    assert fast(x).shape == (x.shape[0], 1, *x.shape[2:]) and calls == [None]  # the call goes through the template
    assert fast.networks() == ()  # its generator copy stays in eval mode: nothing to switch per call
