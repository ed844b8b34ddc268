"""Ways to run the same model at inference, each checked against eager fp32.

A variant is written as features joined by '+', e.g. `bf16+compile:max-autotune`:

* `threads=N`           N intra-op CPU threads (the default: the benchmark's thread count);
* `bf16`, `fp16`        autocast to that dtype (fp16 on CUDA only);
* `cast`                with bf16/fp16: instead of autocast, a copy of the model's weights and the
                        video features are converted to that dtype once, before timing (no casts
                        inside a call: fewer kernels, half the input bytes);
* `attn=matmul`         self-attention as two batched matmuls around a masked softmax (on a copy of
                        the model) instead of F.scaled_dot_product_attention's fused kernel;
* `attn=BACKEND`        F.scaled_dot_product_attention restricted to one of its kernels (flash,
                        efficient, cudnn, math: torch.nn.attention.SDPBackend), for compiling and calls;
* `compile[:MODE]`      torch.compile of forward + decoding, MODE as torch.compile's (default: 'default');
* `combo`               with compile: Inductor's combo kernels (independent kernels, e.g. of the video
                        and the query branch, launched as one: fewer launches at small batches);
* `graph`               CUDA-graph replay of forward + decoding for each fixed input shape (CUDA only);
                        with compile (a mode without CUDA graphs of its own), the compiled code is
                        captured: one graph launch per call, without reduce-overhead's bookkeeping;
* `onnx`                export to ONNX, run with onnxruntime on the CPU (decoding stays in PyTorch);
* `cached`              one video, many queries: the video is encoded once beforehand (models with
                        `encode_video` / `ground_encoded`, the student), each call grounds the queries.

Every runner returns the model's outputs plus `windows` and `scores` of the top-1 moment, decoded on
the device (`model.predict(..., top_k=1)`).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emtm.engine import speed
from emtm.errors import ConfigError
from emtm.models.decode import decode_spans
from emtm.models.layers import SelfAttentionBlock, masked_softmax

Batch = dict[str, Tensor]
Outputs = dict[str, Tensor]
INPUT_KEYS = ("video", "video_mask", "words", "chars", "query_mask")
AGREEMENT_TARGET = 0.99  # share of queries whose argmax span must match eager fp32
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that make CUDA graphs


@dataclass(frozen=True)
class Variant:
    threads: int | None = None
    dtype: str | None = None
    cast: bool = False
    attn: str | None = None
    compile: str | None = None
    combo: bool = False
    graph: bool = False
    onnx: bool = False
    cached: bool = False

    @property
    def name(self) -> str:
        parts = []
        if self.threads:
            parts.append(f"threads={self.threads}")
        if self.dtype:
            parts.append(self.dtype)
        if self.cast:
            parts.append("cast")
        if self.attn:
            parts.append(f"attn={self.attn}")
        if self.compile:
            parts.append("compile" if self.compile == "default" else f"compile:{self.compile}")
        parts += [flag for flag in ("combo", "graph", "onnx", "cached") if getattr(self, flag)]
        return "+".join(parts) or "eager"


def parse_variant(text: str) -> Variant:
    """'bf16+compile:max-autotune' -> Variant; a clear ConfigError for anything else."""
    variant = Variant()
    for part in text.strip().split("+"):
        key, _, value = part.strip().partition(":") if part.startswith("compile") else (part.strip(), "", "")
        if key == "eager":  # the plain fp32 forward: the name of a Variant with nothing set
            continue
        if key.startswith("threads="):
            try:
                variant = replace(variant, threads=int(key.split("=", 1)[1]))
            except ValueError:
                raise ConfigError(f"variant {text!r}: threads=N needs a whole number, got {key!r}") from None
        elif key.startswith("attn="):
            choice = key.split("=", 1)[1]
            if choice not in ("matmul", *SDPA_BACKENDS):
                raise ConfigError(
                    f"variant {text!r}: {key!r}; choose attn=matmul or an SDPA kernel: "
                    + ", ".join(f"attn={b}" for b in SDPA_BACKENDS)
                )
            variant = replace(variant, attn=choice)
        elif key in ("bf16", "fp16"):
            variant = replace(variant, dtype=key)
        elif key == "compile":
            variant = replace(variant, compile=value or "default")
        elif key in ("graph", "onnx", "cached", "cast", "combo"):
            variant = replace(variant, **{key: True})
        else:
            raise ConfigError(
                f"unknown variant part {part!r} in {text!r}; use eager, threads=N, bf16, fp16, cast, "
                "attn=matmul|flash|efficient|cudnn|math, compile[:MODE], combo, graph, onnx, cached, "
                "joined by '+'"
            )
    if variant.cast and not variant.dtype:
        raise ConfigError(f"variant {text!r}: cast converts weights and features to bf16 or fp16; name one")
    if variant.onnx and (variant.dtype or variant.compile or variant.graph or variant.cached or variant.attn):
        raise ConfigError(f"variant {text!r}: onnx runs fp32 in onnxruntime; combine it only with threads=N")
    if variant.combo and not variant.compile:
        raise ConfigError(f"variant {text!r}: combo is an option of torch.compile; add compile")
    if variant.graph and variant.cached:
        raise ConfigError(f"variant {text!r}: graph cannot use cached")
    if variant.graph and variant.compile in CUDA_GRAPH_MODES:
        raise ConfigError(
            f"variant {text!r}: compile:{variant.compile} makes its own CUDA graphs; capture a mode "
            "without them (compile, compile:max-autotune-no-cudagraphs) with graph"
        )
    return variant


def compiled(fn: Callable, mode: str, combo: bool = False) -> Callable:
    """torch.compile(fn) for fixed shapes (one specialised graph per input shape: batch 1 and the
    throughput batch), in `mode`, with Inductor's combo kernels when `combo`."""
    if not combo:
        return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)
    from torch._inductor import list_mode_options

    return torch.compile(fn, options={**list_mode_options(mode), "combo_kernels": True}, dynamic=False)


def auto_variants(device: torch.device, base_threads: int, everything: bool = False) -> list[str]:
    """The variants worth a row on this device ('auto'); everything=True ('all') adds torch.compile on
    the CPU, left out of 'auto' there because compiling takes minutes on a small CPU machine."""
    if device.type == "cuda":
        return [
            "bf16",
            "fp16",
            "compile",
            "bf16+compile",
            "bf16+compile:reduce-overhead",
            "bf16+compile:max-autotune-no-cudagraphs",
            "fp16+cast+compile",
            "fp16+cast+compile:reduce-overhead",
            "fp16+cast+compile+graph",
            "fp16+cast+attn=matmul+compile",
            "graph",
            "bf16+graph",
            "cached",
            "bf16+cached",
        ]
    other = 2 if base_threads == 1 else 1
    names = [f"threads={other}", "bf16", "cached"]
    if everything:
        names += ["compile", "bf16+compile"]
    try:
        import onnxruntime  # noqa: F401

        names.append("onnx")
    except ImportError:
        pass
    return names


def check_variant(variant: Variant, device: torch.device, model: nn.Module) -> None:
    """Raise a ConfigError when the variant cannot run here (so the row says why)."""
    if variant.graph and device.type != "cuda":
        raise ConfigError("graph (CUDA-graph replay) needs --device cuda")
    if variant.dtype == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 is for CUDA; use bf16 on the CPU")
    if variant.onnx and device.type != "cpu":
        raise ConfigError("onnx rows run onnxruntime on the CPU; use --device cpu")
    if variant.attn in ("efficient", "cudnn") and device.type != "cuda":
        raise ConfigError(f"attn={variant.attn} is a CUDA kernel; on the CPU use attn=flash or attn=math")
    if variant.cached and not (hasattr(model, "encode_video") and hasattr(model, "ground_encoded")):
        raise ConfigError(f"{type(model).__name__} has no encode_video / ground_encoded: nothing to cache")


class Runner:
    """prepare(batch) once per input (not timed), then call(prepared) -> outputs (timed)."""

    model: nn.Module

    def inputs(self, batch: Batch) -> Batch:
        """The inputs as this runner keeps them (resident, not timed)."""
        return batch

    def prepare(self, batch: Batch) -> Any:
        return batch

    def __call__(self, prepared: Any) -> Outputs:  # pragma: no cover - interface
        raise NotImplementedError


class CastRunner(Runner):
    """Another runner on a copy of the model whose weights are in `dtype`, fed features in `dtype`:
    the casts autocast makes inside every call are made once, in prepare()."""

    def __init__(self, inner: Runner, dtype: torch.dtype):
        self.inner, self.dtype, self.model = inner, dtype, inner.model

    def inputs(self, batch: Batch) -> Batch:
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in batch.items()}

    def prepare(self, batch: Batch) -> Any:
        return self.inner.prepare(self.inputs(batch))

    def __call__(self, prepared: Any) -> Outputs:
        return self.inner(prepared)


class SdpaBackendRunner(Runner):
    """Another runner with F.scaled_dot_product_attention restricted to one kernel, in prepare() (where
    CUDA graphs are captured) and in every call (where torch.compile traces on the first one)."""

    def __init__(self, inner: Runner, backend: str):
        from torch.nn.attention import SDPBackend

        self.inner, self.model = inner, inner.model
        self.backend = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH,
        }[backend]

    def kernel(self) -> contextlib.AbstractContextManager:
        from torch.nn.attention import sdpa_kernel

        return sdpa_kernel(self.backend)

    def inputs(self, batch: Batch) -> Batch:
        return self.inner.inputs(batch)

    def prepare(self, batch: Batch) -> Any:
        with self.kernel():
            return self.inner.prepare(batch)

    def __call__(self, prepared: Any) -> Outputs:
        with self.kernel():
            return self.inner(prepared)


def decode_top1(model: nn.Module, outputs: Outputs, batch: Batch) -> Outputs:
    pred = model.predict(outputs, batch, top_k=1)
    return {**outputs, "windows": pred.windows, "scores": pred.scores}


class EagerRunner(Runner):
    """forward + top-1 decoding, optionally under autocast and/or torch.compile."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: str | None = None,
        compile: str | None = None,
        combo: bool = False,
    ):
        self.model, self.device, self.precision = model, device, dtype or "fp32"
        self.fn: Callable[[Batch], Outputs] = compiled(self.infer, compile, combo) if compile else self.infer

    def autocast(self) -> contextlib.AbstractContextManager:
        return speed.autocast(self.precision, self.device)

    def infer(self, batch: Batch) -> Outputs:
        with self.autocast():
            return decode_top1(self.model, self.model(batch), batch)

    def __call__(self, prepared: Batch) -> Outputs:
        return self.fn(prepared)


class CachedRunner(EagerRunner):
    """One video, many queries: the batch's first video is encoded in prepare(); calls ground the queries."""

    def prepare(self, batch: Batch) -> tuple[Batch, Tensor, Tensor]:
        mask = batch["video_mask"][:1]
        with self.autocast():
            return batch, self.model.encode_video(batch["video"][:1], mask), mask

    def infer(self, prepared: tuple[Batch, Tensor, Tensor]) -> Outputs:  # type: ignore[override]
        batch, encoded, mask = prepared
        with self.autocast():
            outputs = self.model.ground_encoded(
                encoded, mask, batch["words"], batch["chars"], batch["query_mask"]
            )
            return decode_top1(self.model, outputs, batch)


class GraphRunner(Runner):
    """CUDA-graph replay of forward + top-1 span decoding, one graph per input shape, captured in
    prepare(); a call copies the inputs into the graph's static tensors and replays. Decoding runs in
    the graph too (it makes no host tensors). Autocast runs without its weight cache, as capture requires.
    With `compile`, the torch.compile'd forward is what is captured (compiled in prepare's warm-up).
    The outputs are the graph's static tensors, overwritten by the next replay."""

    def __init__(
        self, model: nn.Module, dtype: str | None = None, compile: str | None = None, combo: bool = False
    ):
        self.model, self.precision = model, dtype or "fp32"
        self.body: Callable[[Batch], Outputs] = self.infer
        if compile:
            self.body = compiled(self.infer, compile, combo)

    def infer(self, batch: Batch) -> Outputs:
        with speed.autocast(self.precision, torch.device("cuda"), cache_enabled=False):
            return decode_top1(self.model, self.model(batch), batch)

    def prepare(self, batch: Batch) -> tuple[Batch, Batch, Any, Outputs]:
        static = {k: batch[k].clone() for k in INPUT_KEYS}  # all that forward and decoding read
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.body(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.body(static)
        return batch, static, graph, outputs

    def __call__(self, prepared: tuple[Batch, Batch, Any, Outputs]) -> Outputs:
        batch, static, graph, outputs = prepared
        torch._foreach_copy_(list(static.values()), [batch[k] for k in static])  # one call, not five
        graph.replay()
        return outputs


class _LogitsOnly(nn.Module):
    """Tensor-in, tensor-out view of a span model for ONNX export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.model(dict(zip(INPUT_KEYS, inputs)))
        return outputs["start_logits"], outputs["end_logits"]


class OnnxRunner(Runner):
    """The model exported to ONNX (TorchScript exporter, dynamic batch) and run with onnxruntime's CPU
    provider at `threads` intra-op threads; top-1 decoding of its logits in PyTorch."""

    def __init__(self, model: nn.Module, example: Batch, threads: int):
        import onnxruntime as ort

        self.model = model
        wrapper = _LogitsOnly(model).eval()  # a fresh module is in training mode: dropout would be exported
        names = ["start_logits", "end_logits"]
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            path = Path(tmp) / "model.onnx"
            torch.onnx.export(
                wrapper,
                tuple(example[k] for k in INPUT_KEYS),
                str(path),
                input_names=list(INPUT_KEYS),
                output_names=names,
                dynamic_axes={k: {0: "batch"} for k in (*INPUT_KEYS, *names)},
                opset_version=17,
                dynamo=False,
            )
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # unused inputs are pruned by export

    def prepare(self, batch: Batch) -> tuple[Batch, dict[str, Any]]:
        return batch, {k: batch[k].numpy() for k in self.inputs}

    def __call__(self, prepared: tuple[Batch, dict[str, Any]]) -> Outputs:
        batch, feeds = prepared
        start, end = self.session.run(None, feeds)
        outputs = {"start_logits": torch.from_numpy(start), "end_logits": torch.from_numpy(end)}
        return decode_top1(self.model, outputs, batch)


def build_runner(
    variant: Variant, model: nn.Module, device: torch.device, example: Batch, threads: int
) -> Runner:
    """The runner of `variant` for a model already in eval mode on `device` (raises ConfigError if the
    variant cannot run here). ONNX export happens here; torch.compile compiles on the first call."""
    check_variant(variant, device, model)
    if variant.onnx:  # grad mode on: under no_grad, attention would export as an unsupported fused op
        return OnnxRunner(model, example, threads)
    if variant.attn and variant.attn != "matmul":
        inner = build_runner(replace(variant, attn=None), model, device, example, threads)
        return SdpaBackendRunner(inner, variant.attn)
    if variant.attn or variant.cast:  # matmul attention and/or cast: one private copy, changed in place
        private = copy.deepcopy(model)
        if variant.attn:
            for block in private.modules():
                if isinstance(block, SelfAttentionBlock):
                    block.matmul_attention = True
        if not variant.cast:
            return build_runner(replace(variant, attn=None), private, device, example, threads)
        dtype = speed.PRECISIONS[variant.dtype]
        rest = replace(variant, attn=None, dtype=None, cast=False)
        return CastRunner(build_runner(rest, private.to(dtype), device, example, threads), dtype)
    if variant.graph:
        return GraphRunner(model, variant.dtype, variant.compile, variant.combo)
    cls = CachedRunner if variant.cached else EagerRunner
    return cls(model, device, variant.dtype, variant.compile, variant.combo)


def compare_outputs(reference: Outputs, outputs: Outputs, mask: Tensor) -> dict[str, float]:
    """How a variant's span outputs agree with eager fp32 on the same queries.

    same_span: share of queries with the same top-1 span (decode_spans of each one's logits);
    max_rel_prob_err: max over queries and boundaries of max_t |p' - p| / max_t p, p the start (end)
    probabilities over the valid clips; max_abs_prob_err: max |p' - p|.
    """
    mask = mask.bool().cpu()
    ref_s, ref_e = (reference[k].detach().float().cpu() for k in ("start_logits", "end_logits"))
    var_s, var_e = (outputs[k].detach().float().cpu() for k in ("start_logits", "end_logits"))
    ref_spans, _ = decode_spans(ref_s, ref_e, mask, top_k=1)
    var_spans, _ = decode_spans(var_s, var_e, mask, top_k=1)
    same = (ref_spans == var_spans).all(-1).squeeze(1)
    rel, absolute = [], []
    for ref, var in ((ref_s, var_s), (ref_e, var_e)):
        p_ref, p_var = masked_softmax(ref, mask), masked_softmax(var, mask)
        diff = (p_var - p_ref).abs().amax(-1)
        rel.append(diff / p_ref.amax(-1))
        absolute.append(diff)
    return {
        "n_queries": int(same.numel()),
        "same_span": float(same.float().mean()),
        "max_rel_prob_err": float(torch.stack(rel).max()),
        "max_abs_prob_err": float(torch.stack(absolute).max()),
    }


def merge_agreement(parts: list[dict[str, float]]) -> dict[str, Any]:
    """Combine compare_outputs over several check batches; `ok` says whether the 99% target is met."""
    n = sum(p["n_queries"] for p in parts)
    same = sum(p["same_span"] * p["n_queries"] for p in parts) / max(n, 1)
    return {
        "n_queries": n,
        "same_span": same,
        "max_rel_prob_err": max(p["max_rel_prob_err"] for p in parts),
        "max_abs_prob_err": max(p["max_abs_prob_err"] for p in parts),
        "ok": same >= AGREEMENT_TARGET,
    }
