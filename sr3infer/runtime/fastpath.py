"""Fast paths for the U-Net call: `torch.compile` and CUDA-graph replay, each falling back to eager."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import first_line

__all__ = ["FastModel", "compile_unavailable_reason"]

log = logging.getLogger(__name__)

ModelCall = Callable[[Tensor, Tensor], Tensor]
"""`(inputs (B, C, H, W), noise_level (B,)) -> output (B, C_out, H, W)`: one U-Net call."""

GRAPH_WARMUP_CALLS = 3  # eager/compiled calls on a side stream before capture (cuDNN/autotune choices settle)


def compile_unavailable_reason() -> str | None:
    """Why `torch.compile` cannot be tried in this interpreter, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile (it needs torch >= 2.0)"
    try:
        import torch._dynamo as dynamo
    except Exception as err:  # noqa: BLE001 - any import failure means the same thing here
        return f"torch._dynamo does not import ({type(err).__name__}: {err})"
    if not dynamo.is_dynamo_supported():
        version = ".".join(map(str, sys.version_info[:3]))
        return f"torch {torch.__version__} does not support torch.compile on Python {version}"
    return None


@dataclass
class _Graph:
    graph: Any          # torch.cuda.CUDAGraph
    inputs: Tensor      # static input buffer the graph reads
    noise_level: Tensor
    output: Tensor      # static output buffer the graph writes (overwritten by every replay)


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {first_line(err)}"


class FastModel:
    """One U-Net call, run eagerly, through `torch.compile`, and/or replayed from CUDA graphs.

    An optimisation that fails warns once and is switched off for good: it costs speed, never the
    result. Graphs are captured per input shape, dtype and layout (at most `max_graphs`), and each
    replay's output is cloned, so results outlive the next call.

    Args:
        model: the U-Net; it must keep its device and dtype until `reset()`.
        compile: run the model through `torch.compile` with `compile_mode` and `compile_backend`.
        cuda_graphs: capture and replay CUDA graphs for CUDA inputs.
        max_graphs: the most shapes captured at once.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        cuda_graphs: bool = False,
        max_graphs: int = 8,
    ) -> None:
        self.model = model
        self.compile = compile
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self._compiled: ModelCall | None = None
        self._graphs: dict[tuple, _Graph] = {}
        self._pool: Any = None
        self.reset()

    def configure(
        self,
        *,
        compile: bool | None = None,
        compile_mode: str | None = None,
        compile_backend: str | None = None,
        cuda_graphs: bool | None = None,
    ) -> None:
        """Switch optimisations on or off (None keeps one), forgetting compiled code and graphs;
        `compile_mode="reduce-overhead"` with `cuda_graphs=True` (both capture) is a ValueError."""
        compile = self.compile if compile is None else compile
        cuda_graphs = self.cuda_graphs if cuda_graphs is None else cuda_graphs
        mode = compile_mode if compile_mode is not None else self.compile_mode
        if compile and cuda_graphs and mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(
                f"torch.compile mode {mode!r} captures CUDA graphs itself, so it cannot be combined with "
                "cuda_graphs=True. Use mode 'default' or 'max-autotune-no-cudagraphs' with cuda_graphs, "
                "or drop cuda_graphs."
            )
        self.compile, self.compile_mode, self.cuda_graphs = compile, mode, cuda_graphs
        if compile_backend is not None:
            self.compile_backend = compile_backend
        self.reset()

    def reset(self) -> None:
        """Forget compiled code and captured graphs; call after moving or casting the model."""
        self._compiled = None
        self._compile_failed = False
        self._graphs.clear()
        self._graphs_failed = False
        self._pool = None
        self._warned_cpu_graphs = False

    @property
    def compile_active(self) -> bool:
        """Compile is requested and has not failed."""
        return self.compile and not self._compile_failed

    @property
    def cuda_graphs_active(self) -> bool:
        """CUDA graphs are requested and have not failed."""
        return self.cuda_graphs and not self._graphs_failed

    def __call__(self, inputs: Tensor, noise_level: Tensor) -> Tensor:
        if self.cuda_graphs_active and inputs.is_cuda:
            return self._graph_call(inputs, noise_level)
        if self.cuda_graphs_active and not self._warned_cpu_graphs:
            self._warned_cpu_graphs = True
            log.warning("CUDA graphs apply to CUDA inputs only; running the %s U-Net call without them.", inputs.device)
        return self._forward(inputs, noise_level)

    # Compile.

    def _compiled_fn(self) -> ModelCall | None:
        if not self.compile_active:
            return None
        if self._compiled is None:
            reason = compile_unavailable_reason()
            if reason is not None:
                self._disable_compile(reason)
                return None
            try:
                self._compiled = torch.compile(self.model, mode=self.compile_mode, backend=self.compile_backend,
                                               dynamic=False)
            except Exception as err:  # noqa: BLE001 - an unknown mode/backend or a broken install
                self._disable_compile(_first_line(err))
                return None
        return self._compiled

    def _call_target(self) -> ModelCall:
        """The compiled model when compile is active, else the plain one (never truth-tested: the
        compiled module's `bool()` calls `len()`, which the U-Net lacks)."""
        compiled = self._compiled_fn()
        return self.model if compiled is None else compiled

    def _disable_compile(self, reason: str) -> None:
        self._compile_failed = True
        self._compiled = None
        log.warning("torch.compile is unavailable or failed (%s); running the U-Net eagerly from now on.", reason)

    def _forward(self, inputs: Tensor, noise_level: Tensor) -> Tensor:
        compiled = self._compiled_fn()
        if compiled is None:
            return self.model(inputs, noise_level)
        try:
            return compiled(inputs, noise_level)
        except Exception as err:  # noqa: BLE001 - inductor/dynamo raise many types (missing compiler, codegen)
            # Run eagerly first: if that fails too, the error is the model's, not compile's, and is raised as is.
            output = self.model(inputs, noise_level)
            self._disable_compile(_first_line(err))
            return output

    # CUDA graphs.

    def _graph_call(self, inputs: Tensor, noise_level: Tensor) -> Tensor:
        key = (tuple(inputs.shape), inputs.stride(), inputs.dtype, inputs.device,
               tuple(noise_level.shape), noise_level.dtype)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self.max_graphs:
                return self._forward(inputs, noise_level)
            try:
                graph = self._capture(inputs, noise_level)
            except Exception as err:  # noqa: BLE001 - capture fails on ops that sync or allocate on the host
                self._graphs_failed = True
                self._graphs.clear()
                self._pool = None
                log.warning("CUDA graph capture failed (%s); running the U-Net without CUDA graphs from now on.",
                            _first_line(err))
                return self._forward(inputs, noise_level)
            self._graphs[key] = graph
        graph.inputs.copy_(inputs)
        graph.noise_level.copy_(noise_level)
        graph.graph.replay()
        return graph.output.clone()

    def _capture(self, inputs: Tensor, noise_level: Tensor) -> _Graph:
        static_inputs = inputs.clone()  # keeps the memory format (channels_last stays channels_last)
        static_level = noise_level.clone()
        current = torch.cuda.current_stream(inputs.device)
        side = torch.cuda.Stream(device=inputs.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):  # also where compile happens, or fails and falls back
                self._forward(static_inputs, static_level)
        current.wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        call = self._call_target()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_output = call(static_inputs, static_level)
        return _Graph(graph, static_inputs, static_level, static_output)
