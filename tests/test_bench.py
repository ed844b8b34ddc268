"""`emtm bench` on the tiny shape: the JSON schema, FLOPs/params order, variant agreement, the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emtm.cli import main
from emtm.config import TrainConfig
from emtm.data.text import PAD, UNK, Vocab
from emtm.engine.checkpoint import SpecInfo, save_weights, write_run_config
from emtm.engine.flops import random_batch
from emtm.errors import ConfigError
from emtm.experiments.bench.measure import stage_split
from emtm.experiments.bench.runner import SHAPES
from emtm.experiments.bench.variants import (
    EagerRunner,
    build_runner,
    compare_outputs,
    merge_agreement,
    parse_variant,
)
from emtm.io import write_json
from emtm.models.base import DataSpec
from emtm.models.layers import SelfAttentionBlock
from emtm.models.registry import build_model, model_config

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--shapes", "tiny", "--runs", "3", "--warmup", "1", "--batch", "4", "--throughput-reps", "1"]
ROW_KEYS = {
    "model", "registry_name", "run_dir", "shape", "n_clips", "variant", "device", "threads",
    "params_trainable", "params_total", "flops", "gflops", "input_bytes_per_query", "latency_ms", "batch",
    "throughput_qps", "throughput_passes", "peak_memory_mib", "split_ms", "agreement", "first_calls_s",
    "error", "vs_student",
}  # fmt: skip


def bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    assert (
        main(["bench", *args, "--json", str(out), "--md", str(tmp_path / "bench.md"), "--no-progress"]) == 0
    )
    return json.loads(out.read_text())


def tiny_student(d: int = 32) -> tuple[torch.nn.Module, DataSpec]:
    spec = DataSpec(24, SHAPES["tiny"], torch.randn(40, 50), 20, 30)
    torch.manual_seed(0)
    model = build_model("student", model_config("student", {"d": d, "n_heads": 4}), spec).eval()
    return model, spec


def test_bench_tiny_schema_and_flops_order(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = bench(tmp_path, "--models", "seqpan,tan2d,regress", *QUICK, "--variants", "none")
    assert result["schema"] == "emtm-bench/1" and result["settings"]["shapes"] == {"tiny": 16}
    assert "thread" in result["device"]
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["student", "seqpan", "tan2d", "regress"]  # the student first: the reference
    for row in rows.values():
        assert set(row) == ROW_KEYS and row["error"] is None
        assert row["flops"] > 0 and row["params_trainable"] > 0
        assert row["params_total"] > row["params_trainable"]  # frozen word vectors are counted in total
        assert row["latency_ms"]["n"] == 3 and row["latency_ms"]["p90"] >= row["latency_ms"]["p50"] > 0
        assert row["throughput_qps"] > 0 and row["batch"] == 4
        assert row["peak_memory_mib"]["batchN"] > 0
        split = row["split_ms"]
        assert set(split) == {"text", "video", "fusion", "prediction", "total"}
        assert min(split.values()) >= 0 and split["text"] > 0 and split["video"] > 0
        assert row["device"] == result["device"]
    student = rows["student"]
    assert student["vs_student"]["flops"] == 1.0
    assert student["flops"] < rows["seqpan"]["flops"] and student["flops"] < rows["tan2d"]["flops"]
    assert rows["seqpan"]["vs_student"]["flops"] == pytest.approx(rows["seqpan"]["flops"] / student["flops"])
    # weights alone set a floor under peak memory
    assert student["peak_memory_mib"]["batch1"] >= student["params_total"] * 4 / 2**20
    table = (tmp_path / "bench.md").read_text()
    assert table.count("\n| ") == 5 and "x student FLOPs" in table  # header + 4 rows
    assert "queries/s" in capsys.readouterr().out  # the summary table


def test_variants_rows_are_checked_against_eager(tmp_path: Path) -> None:
    variants = [
        "bf16",
        "cached",
        "threads=2",
        "graph",
        "bf16+cast",
        "bf16+cast+cached",
        "attn=matmul",
        "attn=math",
    ]
    try:
        import onnxruntime  # noqa: F401

        variants.append("onnx")
    except ImportError:
        pass
    args = ["--models", "student", *QUICK, "--batch", "8", "--check-queries", "16"]
    result = bench(tmp_path, *args, "--variants", ",".join(variants))
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["eager", *variants]
    assert "CUDA" in rows["graph"]["error"] and rows["graph"]["latency_ms"] is None  # no GPU: says why
    for name in set(variants) - {"graph"}:
        row = rows[name]
        assert row["error"] is None, row["error"]
        agreement = row["agreement"]
        assert agreement["n_queries"] == 16 and 0.0 <= agreement["same_span"] <= 1.0
        assert row["vs_student"]["throughput"] > 0
    assert rows["threads=2"]["threads"] == 2 and "2 threads" in rows["threads=2"]["device"]
    for exact in (
        "cached",
        "threads=2",
        "onnx",
        "attn=matmul",
        "attn=math",
    ):  # same fp32 maths: the same spans
        if exact in rows:
            assert rows[exact]["agreement"]["same_span"] == 1.0
            assert rows[exact]["agreement"]["max_rel_prob_err"] < 1e-4
    assert rows["bf16"]["agreement"]["max_rel_prob_err"] > 0  # bf16 is not bit-exact
    for cast in ("bf16+cast", "bf16+cast+cached"):  # bf16 weights and features: close, not exact
        assert 0 < rows[cast]["agreement"]["max_rel_prob_err"] < 0.1
    # the cast copy's resident weights and inputs are half the fp32 ones
    assert rows["bf16+cast"]["peak_memory_mib"]["batch1"] < rows["eager"]["peak_memory_mib"]["batch1"]


def test_limits_compare_the_fastest_student_row_with_this_devices_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = bench(tmp_path, "--models", "student", *QUICK, "--variants", "threads=1", "--limits")
    rows = [r for r in result["rows"] if r["registry_name"] == "student"]
    fastest = max(rows, key=lambda r: r["throughput_qps"])
    limits = result["limits"]["tiny"]
    assert (
        limits["measured_variant"] == fastest["variant"]
        and limits["measured_qps"] == fastest["throughput_qps"]
    )
    assert "gpu" not in limits and set(limits["gpus"]) == {"H100 SXM", "H200"}  # the CPU run: no GPU measured
    estimate = limits["cpu"]["fp32_estimate"]
    assert estimate["compute_floor_us"] == pytest.approx(fastest["flops"] / limits["cpu"]["fp32_flops"] * 1e6)
    assert estimate["measured_share"] == pytest.approx(fastest["throughput_qps"] / estimate["ceiling_qps"])
    line = capsys.readouterr().out
    assert "tiny: student floors on this CPU" in line and f"({fastest['variant']})" in line


def test_gpu_ceiling_timer_runs_the_operation_on_two_distinct_tensors() -> None:
    """copy_ of a tensor onto itself returns at once: the bandwidth probe needs two tensors."""
    from emtm.experiments.bench.limits import _mean_seconds

    seen = []

    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(a.shape), a.dtype, a is b or a.data_ptr() == b.data_ptr()))
        return a.copy_(b)

    assert _mean_seconds(op, torch.device("cpu"), (8, 8), torch.bfloat16) > 0
    assert seen == [((8, 8), torch.bfloat16, False)] * 13  # 3 warm-ups + 10 timed calls


def test_cast_runner_leaves_the_model_in_fp32() -> None:
    model, spec = tiny_student()
    batch = random_batch(spec, SHAPES["tiny"], 4, seed=1)
    runner = build_runner(parse_variant("bf16+cast"), model, torch.device("cpu"), batch, threads=1)
    with torch.inference_mode():
        out = runner(runner.prepare(batch))
    assert out["start_logits"].dtype == torch.bfloat16 and out["windows"].shape == (4, 1, 2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the benchmark's reference is untouched
    assert {p.dtype for p in runner.model.parameters()} == {torch.bfloat16}
    assert batch["video"].dtype == torch.float32
    both = build_runner(parse_variant("bf16+cast+attn=matmul"), model, torch.device("cpu"), batch, threads=1)
    blocks = [m for m in both.model.modules() if isinstance(m, SelfAttentionBlock)]
    assert blocks and all(b.matmul_attention for b in blocks)  # one copy carries both changes
    assert {p.dtype for p in both.model.parameters()} == {torch.bfloat16}
    assert not any(m.matmul_attention for m in model.modules() if isinstance(m, SelfAttentionBlock))
    with torch.inference_mode():
        torch.testing.assert_close(
            both(both.prepare(batch))["start_logits"], out["start_logits"], rtol=0.1, atol=0.1
        )


def test_compare_outputs_on_real_outputs() -> None:
    model, spec = tiny_student()
    batch = random_batch(spec, SHAPES["tiny"], 12, seed=3)
    with torch.inference_mode():
        eager = EagerRunner(model, torch.device("cpu"))(batch)
        bf16 = EagerRunner(model, torch.device("cpu"), dtype="bf16")(batch)
    same = compare_outputs(eager, eager, batch["video_mask"])
    assert same == {"n_queries": 12, "same_span": 1.0, "max_rel_prob_err": 0.0, "max_abs_prob_err": 0.0}
    close = compare_outputs(eager, bf16, batch["video_mask"])
    assert 0 < close["max_rel_prob_err"] < 0.5 and close["max_abs_prob_err"] > 0
    # move the start of every query's best span somewhere else: no span agrees any more
    moved = {k: v.clone() for k, v in eager.items()}
    best_start = eager["windows"][:, 0, 0] * SHAPES["tiny"]
    target = (best_start.long() + 8) % SHAPES["tiny"]
    moved["start_logits"][torch.arange(12), target] = 100.0
    moved["end_logits"][:] = 0.0
    moved["end_logits"][torch.arange(12), SHAPES["tiny"] - 1] = 100.0
    far = compare_outputs(eager, moved, batch["video_mask"])
    assert far["same_span"] < 0.5 and far["max_rel_prob_err"] > 0.5
    merged = merge_agreement([same, far])
    assert merged["n_queries"] == 24 and merged["same_span"] == pytest.approx((1 + far["same_span"]) / 2)
    assert merged["ok"] is False and merge_agreement([same])["ok"] is True


def test_stage_split_parts_add_up() -> None:
    model, spec = tiny_student()
    batch = random_batch(spec, SHAPES["tiny"], 1)
    runner = EagerRunner(model, torch.device("cpu"))
    with torch.inference_mode():
        split = stage_split(model, "student", lambda: runner(batch), 3, torch.device("cpu"))
    assert all(split[k] > 0 for k in ("text", "video", "prediction", "total"))
    assert split["fusion"] >= 0  # no timing comparisons in tests: the parts are medians on a shared machine
    assert "forward" not in model.head.predictor.__dict__ and "encode_query" not in model.encoder.__dict__


def test_parse_variant() -> None:
    assert parse_variant("bf16+compile:max-autotune").name == "bf16+compile:max-autotune"
    assert parse_variant("threads=2+onnx").threads == 2
    assert parse_variant("compile").compile == "default"
    assert parse_variant("fp16+cast+compile:reduce-overhead").name == "fp16+cast+compile:reduce-overhead"
    assert parse_variant("compile+attn=matmul+fp16").name == "fp16+attn=matmul+compile"
    assert parse_variant("graph+combo+compile+fp16+cast").name == "fp16+cast+compile+combo+graph"
    assert parse_variant("attn=efficient+compile:max-autotune-no-cudagraphs+graph").attn == "efficient"
    bad_variants = [
        ("turbo", "unknown variant"),
        ("onnx+bf16", "onnx"),
        ("threads=x", "whole number"),
        ("cast", "bf16 or fp16"),
        ("attn=fast", "attn=matmul or an SDPA kernel"),
        ("combo", "add compile"),
        ("graph+compile:reduce-overhead", "own CUDA graphs"),
        ("graph+cached", "graph cannot use cached"),
    ]
    for bad, words in bad_variants:
        with pytest.raises(ConfigError, match=words):
            parse_variant(bad)


def make_run(root: Path, name: str, model: str, options: dict) -> Path:
    vocab = Vocab([PAD, UNK, *(f"word{i}" for i in range(30))], [PAD, UNK, *"abcdefghijklmnopqrstuvwxyz"])
    info = SpecInfo(24, SHAPES["tiny"], len(vocab), 50, vocab.n_chars)
    cfg = TrainConfig(data=str(root / "data.yaml"), model=model, model_options=options)
    torch.manual_seed(0)
    net = build_model(model, model_config(model, options), info.to_spec(torch.randn(len(vocab), 50)))
    run = root / name
    write_run_config(run, cfg, info)
    write_json(run / "vocab.json", vocab.to_json())
    save_weights(net, run / "model.safetensors")
    return run


def test_bench_trained_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    student = make_run(tmp_path, "s", "student", {"d": 32, "n_heads": 4})
    teacher = make_run(tmp_path, "t", "seqpan", {"d": 64, "n_heads": 4, "n_dual": 1})
    result = bench(tmp_path, "--run", str(student), "--run", str(teacher), *QUICK[2:], "--variants", "cached")
    rows = result["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [("s", "eager"), ("t", "eager"), ("s", "cached")]
    assert {r["shape"] for r in rows} == {"run L=16"} and rows[1]["run_dir"] == str(teacher)
    assert rows[1]["vs_student"]["flops"] > 1 and rows[2]["agreement"]["same_span"] == 1.0
    joint = make_run(tmp_path, "joint", "emtm", {"d": 32, "n_heads": 4})
    assert main(["bench", "--run", str(joint), "--no-progress"]) == 2
    assert "student" in capsys.readouterr().err


def test_bench_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--models", "student,nope", "--shapes", "tiny", "--no-progress"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["bench", "--shapes", "huge", "--no-progress"]) == 2
    assert "unknown shape" in capsys.readouterr().err
    assert main(["bench", "--variants", "warp", "--shapes", "tiny", "--no-progress"]) == 2
    assert "unknown variant part" in capsys.readouterr().err


def test_plot_accuracy_flops(tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    rows = [
        {
            "model": m,
            "registry_name": m,
            "variant": "eager",
            "shape": "charades",
            "gflops": g,
            "run_dir": None,
        }
        for m, g in [("student", 0.096), ("seqpan", 0.664)]
    ]
    write_json(bench_json, {"rows": rows})
    points = tmp_path / "points.json"
    write_json(points, [{"model": "tan2d", "r1@0.7": 30.0, "gflops": 13.5}])
    evaluated = tmp_path / "student_test.json"
    write_json(evaluated, {"model": "student", "run": "runs/x", "r1@0.7": 42.0, "miou": 50.0})
    summary = tmp_path / "ablation_summary.json"
    write_json(summary, {"student + seqpan": {"r1@0.7": {"mean": 44.0, "std": 1.0}, "gflops": 0.096}})
    out = tmp_path / "fig.png"
    script = REPO / "benchmarks" / "plot_accuracy_flops.py"
    args = [sys.executable, str(script), "--bench", str(bench_json), "--out", str(out)]
    for results in (points, evaluated, summary):
        args += ["--results", str(results)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "student: R1@0.7 42.00, 0.096 GFLOPs/query" in done.stdout
    missing = tmp_path / "missing.json"
    write_json(missing, [{"model": "eamat", "r1@0.7": 30.0}])
    done = subprocess.run(
        [*args[:-6], "--results", str(missing)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "no GFLOPs for 'eamat'" in done.stderr


def test_random_batch_is_laid_out_as_collate_lays_out_a_batch() -> None:
    from emtm.engine.flops import dummy_batch

    _, spec = tiny_student()
    batch = random_batch(spec, SHAPES["tiny"], 5, n_words=6, seed=2)
    reference = dummy_batch(spec, SHAPES["tiny"], 6, batch_size=5)
    assert set(batch) == set(reference)
    for key, value in reference.items():
        assert batch[key].dtype == value.dtype, key
        assert batch[key].shape[0] == 5 and batch[key].shape[1:2] == value.shape[1:2], key
    lengths = (batch["chars"] > 0).sum(-1)
    assert ((lengths >= 2) & (lengths <= 8)).all()  # 2 to 8 characters per word, then padding
    first_pad = (batch["chars"] == 0).float().argmax(-1)
    assert (first_pad == lengths).all()  # the characters come first
    assert (batch["words"] >= 2).all() and (batch["words"] < spec.word_vectors.shape[0]).all()
    one = random_batch(spec, SHAPES["tiny"], 3, seed=2, one_video=True)
    assert torch.equal(one["video"][0], one["video"][2])
    assert not torch.equal(batch["video"][0], batch["video"][1])
