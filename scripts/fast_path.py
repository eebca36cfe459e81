"""A fast explanation path for ours: the same map ``E(x) = Σ_c |g_s(x) − g_a(x)|``, computed faster.

:func:`make_fast_explainer` takes a trained :class:`scripts.networks.SimAdvGenerator` (any mode) and returns a
:class:`FastExplainer`, a callable ``x -> E(x)`` (float32, ``(B, 1, *spatial)``) with the speed-ups chosen in
:class:`FastPathOptions`. Each one is an option, none changes what is computed; what they change is the arithmetic
(precision, summation order), which :func:`check_fast_path` measures as the relative L2 error against the plain
float32 eager map (:func:`eager_reference`, TF32 off) on the same input.

========================  ==================================================================  ===========  =========
option                    what it does                                                        devices      tolerance
========================  ==================================================================  ===========  =========
(always)                  eval mode once, ``torch.inference_mode``, no per-call mode              all          exact
                          save/restore (``Explainer.__call__`` walks every module each call)
``channels_last``         NHWC weights and input (tensor-core friendly; not faster on the CPU)    all          1e-5
``autocast="bf16"``       ``torch.autocast`` bfloat16 (convolutions in bf16, the output           all          5e-2
                          parametrisation and the map stay float32)
``autocast="fp16"``       ``torch.autocast`` float16                                              CUDA         2e-2
``tf32=True``             TF32 convolutions / matmuls (float32 storage, 10-bit mantissa mults)    CUDA         2e-2
                          (also with ``tf32=None`` while cuDNN's TF32 default is on)
``compile=True``          ``torch.compile`` (Inductor; ``compile_mode`` as torch's ``mode``)     all (slow    1e-5
                                                                                                  to compile
                                                                                                  on CPU)
``cuda_graph=True``       CUDA graph per input shape: capture once, then one replay per call      CUDA         1e-5
========================  ==================================================================  ===========  =========

Tolerances (:func:`tolerance_for`) are the largest of the options in use; the float32-only options only reorder
sums, the reduced-precision ones keep 8 (bf16) or 11 (fp16, TF32) significant bits per product. They were set from
random-weight generators (heads not zero-initialised, so the map is not trivially 0); docs/performance.md gives the
measured errors.

Example::

    gen = load_network(SimAdvGenerator(), "models/explainer.pt", key="generator").cuda()
    fast = make_fast_explainer(gen, FastPathOptions(autocast="bf16", channels_last=True, cuda_graph=True))
    maps = fast(x)                                     # (B, 1, H, W) float32, same shapes as SimAdvExplainer
    err = check_fast_path(gen, fast, x)                # relative L2 error vs float32 eager
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .explainers.base import Explainer
from .networks import generator_map

__all__ = [
    "FastPathOptions",
    "FastExplainer",
    "FastSimAdvExplainer",
    "make_fast_explainer",
    "relative_l2_error",
    "eager_reference",
    "check_fast_path",
    "tolerance_for",
    "tf32_mode",
    "TOLERANCES",
]

#: relative L2 tolerance of each option against the float32 eager map (the largest of those in use applies).
TOLERANCES = {
    "exact": 1e-5,
    "channels_last": 1e-5,
    "compile": 1e-5,
    "cuda_graph": 1e-5,
    "tf32": 2e-2,
    "fp16": 2e-2,
    "bf16": 5e-2,
}
_AUTOCAST = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class FastPathOptions:
    """Which speed-ups the fast path uses (all off: the plain float32 map, without the per-call overhead).

    Args:
        autocast: ``None``, ``"bf16"`` or ``"fp16"``: ``torch.autocast`` of the generator's forward.
        channels_last: NHWC memory format for weights and input (2D generators only).
        compile: wrap the generator in ``torch.compile``.
        compile_mode: ``torch.compile``'s ``mode`` (``None`` = default; ``"reduce-overhead"`` adds Inductor's own
            CUDA graphs, so leave ``cuda_graph`` off with it; ``"max-autotune-no-cudagraphs"`` autotunes).
        cuda_graph: capture one CUDA graph per input shape and replay it (CUDA only).
        tf32: ``True``/``False`` switch TF32 convolutions and matmuls on/off for the call (CUDA); ``None`` leaves
            PyTorch's global setting as it is.
    """

    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cuda_graph: bool = False
    tf32: bool | None = None

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in _AUTOCAST:
            raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")
        if self.cuda_graph and self.compile and self.compile_mode == "reduce-overhead":
            raise ValueError("compile_mode='reduce-overhead' already uses CUDA graphs: leave cuda_graph off")

    @classmethod
    def parse(cls, text: str) -> FastPathOptions:
        """Options from a ``+``- or ``,``-separated list: ``"bf16+channels_last+cuda_graph"``, ``"compile"``,
        ``"compile=reduce-overhead"``, ``"tf32"``, ``"fp16"``; ``"eager"`` or ``""`` for none."""
        kwargs: dict = {}
        for raw in text.replace(",", "+").split("+"):
            item = raw.strip().lower().replace("-", "_")
            if item in ("", "eager", "none", "fp32"):
                continue
            if item in ("bf16", "bfloat16", "fp16", "float16"):
                kwargs["autocast"] = "bf16" if item.startswith("b") else "fp16"
            elif item in ("channels_last", "nhwc"):
                kwargs["channels_last"] = True
            elif item in ("cuda_graph", "cudagraph", "cuda_graphs", "graph"):
                kwargs["cuda_graph"] = True
            elif item == "tf32":
                kwargs["tf32"] = True
            elif item == "no_tf32":
                kwargs["tf32"] = False
            elif item == "compile":
                kwargs["compile"] = True
            elif item.startswith("compile="):
                kwargs["compile"] = True
                kwargs["compile_mode"] = raw.strip().split("=", 1)[1]
            else:
                raise ValueError(
                    f"unknown fast-path option {raw.strip()!r} (bf16, fp16, channels_last, compile[=mode], "
                    "cuda_graph, tf32, no_tf32, eager)"
                )
        return cls(**kwargs)

    def describe(self) -> str:
        """Short label, e.g. ``"bf16+channels_last+cuda_graph"`` (``"eager"`` when all off)."""
        parts = []
        if self.autocast:
            parts.append(self.autocast)
        if self.tf32 is not None:
            parts.append("tf32" if self.tf32 else "no_tf32")
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile" if self.compile_mode is None else f"compile={self.compile_mode}")
        if self.cuda_graph:
            parts.append("cuda_graph")
        return "+".join(parts) or "eager"


def tolerance_for(options: FastPathOptions, device: torch.device | str | None = None) -> float:
    """The relative L2 tolerance of ``options`` against float32 eager (the loosest option in use).

    On a CUDA ``device`` with ``tf32=None`` PyTorch's global setting applies, and cuDNN convolutions use TF32 by
    default (``torch.backends.cudnn.allow_tf32``): the TF32 tolerance then applies too.
    """
    used = ["exact"]
    if options.autocast:
        used.append("bf16" if options.autocast.startswith("b") else "fp16")
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if options.tf32 or (options.tf32 is None and on_cuda and torch.backends.cudnn.allow_tf32):
        used.append("tf32")
    if options.channels_last:
        used.append("channels_last")
    if options.compile:
        used.append("compile")
    if options.cuda_graph:
        used.append("cuda_graph")
    return max(TOLERANCES[u] for u in used)


def relative_l2_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``‖actual − expected‖₂ / ‖expected‖₂`` in float64 (``‖actual − expected‖₂`` when ``expected`` is 0)."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}")
    num = torch.linalg.vector_norm(a - e).item()
    den = torch.linalg.vector_norm(e).item()
    return num / den if den > 0 else num


@contextlib.contextmanager
def tf32_mode(enabled: bool | None) -> Iterator[None]:
    """Switch TF32 for cuDNN convolutions and CUDA matmuls on/off inside the block (``None``: leave as is)."""
    if enabled is None:
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _generate(generator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = generator(x)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"generator must return (x_s, x_a), got {type(out).__name__}")
    return out[0], out[1]


@torch.inference_mode()
def eager_reference(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The plain float32 eager map ``Σ_c |x_s − x_a|`` (TF32 off, generator in eval mode; its mode is restored)."""
    was_training = generator.training
    generator.eval()
    try:
        with tf32_mode(False):
            x_s, x_a = _generate(generator, x.float().contiguous())
            return generator_map(generator, x_s.float(), x_a.float())
    finally:
        generator.train(was_training)


class _ExplanationModule(nn.Module):
    """``x -> Σ_c |x_s − x_a|`` in float32, with the generator forward under autocast when asked."""

    def __init__(self, generator: nn.Module, autocast: str | None) -> None:
        super().__init__()
        self.generator = generator
        self.autocast_dtype = _AUTOCAST[autocast] if autocast else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            x_s, x_a = _generate(self.generator, x)
        else:
            # cache_enabled=False: the weight-cast cache must not outlive a CUDA graph capture
            with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):
                x_s, x_a = _generate(self.generator, x)
        return generator_map(self.generator, x_s.float(), x_a.float())


class _CUDAGraphRunner:
    """One captured CUDA graph of ``fn`` for one input shape: copy in, replay, copy the output out."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, warmup: int = 3) -> None:
        self.static_input = example.detach().clone()
        stream = torch.cuda.Stream(device=example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):  # warm-up (cuDNN autotuning, lazy init) outside the capture
            for _ in range(warmup):
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = fn(self.static_input)

    def __call__(self, x: torch.Tensor, clone: bool = True) -> torch.Tensor:
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone() if clone else self.static_output


class FastExplainer:
    """Callable ``x -> E(x)`` (float32, ``(B, 1, *spatial)``): ours with the options of :class:`FastPathOptions`.

    The fast path holds its own copy of the generator (a snapshot of its weights at creation, in eval mode, NHWC
    with ``channels_last``), so the caller's network is left as it was. ``x`` may be any float tensor; it is moved
    to the generator's device. With ``cuda_graph`` one graph is captured per input shape on first
    use (a few forward passes); ``clone_output=False`` returns the graph's static output buffer, overwritten by the
    next call of that shape.
    """

    def __init__(self, generator: nn.Module, options: FastPathOptions | None = None, clone_output: bool = True) -> None:
        self.options = options or FastPathOptions()
        self.generator = copy.deepcopy(generator).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.clone_output = clone_output
        self.device = next((p.device for p in generator.parameters()), torch.device("cpu"))
        if self.options.cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph needs a generator on a CUDA device")
        if self.options.autocast in ("fp16", "float16") and self.device.type != "cuda":
            raise ValueError("fp16 autocast is for CUDA; use bf16 on CPU")
        if self.options.channels_last:
            self.generator.to(memory_format=torch.channels_last)
        module: nn.Module = _ExplanationModule(self.generator, self.options.autocast)
        self.module = module
        self.forward: Callable[[torch.Tensor], torch.Tensor] = module
        if self.options.compile:
            kwargs = {} if self.options.compile_mode is None else {"mode": self.options.compile_mode}
            # dynamic=None: the first shape compiles static, a second one recompiles with dynamic sizes once
            self.forward = torch.compile(module, **kwargs)
        self._graphs: dict[tuple, _CUDAGraphRunner] = {}

    @property
    def tolerance(self) -> float:
        """:func:`tolerance_for` these options on this device (relative L2 error against float32 eager)."""
        return tolerance_for(self.options, self.device)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(x, "as_tensor"):  # a MONAI MetaTensor: the plain tensor (no metadata tracking per op)
            x = x.as_tensor()
        x = x.to(self.device, torch.float32, non_blocking=True)
        if self.options.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, class_idx: torch.Tensor | None = None) -> torch.Tensor:
        """The map of ``x``; ``class_idx`` is accepted for the :class:`Explainer` interface and ignored (ours
        explains the classifier's own decision, see :class:`scripts.explainers.SimAdvExplainer`)."""
        x = self._prepare(x)
        with tf32_mode(self.options.tf32):
            if not self.options.cuda_graph:
                return self.forward(x)
            key = (tuple(x.shape), x.dtype, x.device, x.stride())
            runner = self._graphs.get(key)
            if runner is None:
                runner = self._graphs[key] = _CUDAGraphRunner(self.forward, x)
            return runner(x, clone=self.clone_output)


class FastSimAdvExplainer(Explainer):
    """The fast path behind the bundle's :class:`~scripts.explainers.Explainer` interface, a drop-in for
    :class:`~scripts.explainers.SimAdvExplainer` in configs and inside :class:`~scripts.explainers.TTAExplainer`::

        {"_target_": "scripts.fast_path.FastSimAdvExplainer", "classifier": "@classifier",
         "generator": "@generator", "options": "bf16+channels_last+cuda_graph"}

    Like ours, it explains the classifier's own decision and does not run the classifier. A call goes through the
    :class:`Explainer` template (input checks, then :meth:`compute_map`); :meth:`networks` is empty, so the
    template's per-call eval-mode save/restore walks no module (the fast path's generator copy is always in eval
    mode).
    """

    uses_class_idx = False

    def __init__(
        self, classifier: nn.Module, generator: nn.Module, options: FastPathOptions | str | None = None
    ) -> None:
        super().__init__(classifier)
        self.fast = make_fast_explainer(generator, options)

    def networks(self) -> tuple[nn.Module, ...]:
        """None to switch: the fast path's own generator copy never leaves eval mode."""
        return ()

    def compute_map(self, x: torch.Tensor, class_idx: torch.Tensor | None) -> torch.Tensor:
        return self.fast(x)


def make_fast_explainer(
    generator: nn.Module, options: FastPathOptions | str | None = None, clone_output: bool = True
) -> FastExplainer:
    """The fast path of ``generator`` with ``options`` (a :class:`FastPathOptions` or its string form)."""
    if isinstance(options, str):
        options = FastPathOptions.parse(options)
    return FastExplainer(generator, options, clone_output=clone_output)


def check_fast_path(generator: nn.Module, fast: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Relative L2 error of ``fast(x)`` against :func:`eager_reference` of ``generator`` on the same ``x``."""
    expected = eager_reference(generator, x)
    actual = fast(x)
    return relative_l2_error(actual.float(), expected)
