"""Console output shared by every layer: rich tables, the metric columns, and the JSON/table switch
of commands that report moments (`--json FILE|-`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

METRIC_KEYS = ("r1@0.3", "r1@0.5", "r1@0.7", "r5@0.3", "r5@0.5", "r5@0.7", "miou")


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    Console(width=max(100, 12 * len(columns) + 20)).print(table)


def metrics_row(name: str, metrics: dict[str, Any], extra: list[Any] | None = None) -> list[Any]:
    return [name, *[metrics[k] for k in METRIC_KEYS], *(extra or [])]


def report_moments(
    source: str, duration: float, queries: list[str], results: list, json_out: str | None
) -> None:
    """One table of ranked moments per query; with `json_out`, the same as JSON (to stdout for "-",
    the tables then going to stderr)."""
    import contextlib
    import json

    from emtm.io import write_json

    record = {"source": source, "duration": duration, "queries": []}
    to_stderr = contextlib.redirect_stdout(sys.stderr) if json_out == "-" else contextlib.nullcontext()
    with to_stderr:
        for query, moments in zip(queries, results):
            moments = moments if isinstance(moments, list) else [moments]
            print_table(
                f"{query!r} in {Path(source).name} ({duration:.1f} s)",
                ["rank", "start (s)", "end (s)", "score"],
                [[i + 1, m.start, m.end, m.score] for i, m in enumerate(moments)],
            )
            record["queries"].append(
                {
                    "query": query,
                    "moments": [{"start": m.start, "end": m.end, "score": m.score} for m in moments],
                }
            )
    if json_out == "-":
        print(json.dumps(record, allow_nan=False))
    elif json_out:
        write_json(json_out, record)
        print(f"wrote {json_out}")


def print_sensitivity(sens: dict[str, Any]) -> None:
    """The two query-sensitivity figures of `emtm evaluate --sensitivity`, as one table."""

    def share(key: str) -> str:
        return "n/a" if sens[key] is None else f"{sens[key]:.1f}%"

    rows = [
        ["videos with >= 2 queries", sens["n_videos"]],
        ["... whose queries get more than one top-1 moment", share("distinct_top1_share")],
        ["... whose queries each get their own top-1 moment", share("all_distinct_share")],
    ]
    if sens.get("n_swapped"):
        rows.append(["queries asked again with another sentence of their video", sens["n_swapped"]])
        for key in ("r1@0.5", "r1@0.7", "miou"):
            rows.append([
                f"{key}: own sentence -> swapped (drop)",
                f"{sens[f'own_{key}']:.2f} -> {sens[f'swapped_{key}']:.2f} ({sens[f'drop_{key}']:+.2f})",
            ])  # fmt: skip
    print_table("does the model read the sentence? (a model that listens loses accuracy when swapped)",
                ["measure", "value"], rows)  # fmt: skip


def print_kau_summary(summary: dict[str, Any]) -> None:
    """The table of TeacherView.summary: how the KAU weighs the teachers, against a per-query oracle."""
    from emtm.stats import verdict

    rows = [
        [
            t["teacher"],
            f"{t['weight_start']:.3f} / {t['weight_end']:.3f}",
            f"{t['weight_std']:.3f}",
            f"{100 * t['kau_top_share']:.1f}%",
            f"{100 * t['oracle_share']:.1f}%",
            f"{t['hard_loss']:.3f}",
        ]
        for t in summary["teachers"]
    ]
    rows += [
        [f"mix: {name}", "", "", "", "", f"{v:.3f}"] for name, v in summary["ensemble_hard_loss"].items()
    ]
    own = summary.get("aggregator", "KAU")  # "KAU", "fixed" or "plain mean": what weighs the teachers
    print_table(
        f"{own} weights over {summary['n_queries']} {summary['split']} queries; its top pick is the oracle's "
        f"on {100 * summary['kau_agrees_with_oracle']:.1f}% of the boundaries; hard loss: lower is better",
        ["teacher", "weight start / end", "std (queries)", f"{own}'s top pick", "oracle's pick", "hard loss"],
        rows,
    )
    versus, mine = summary.get("kau_minus", {}), f"the {own} mixture"
    if versus:
        print_table(
            f"the {own} mixture's hard loss minus each other's, paired over the queries (negative: the {own} "
            "mixture is better)",
            ["mixture", f"{own} - mixture", "95% CI", "verdict"],
            [
                [name, f"{d['mean']:+.3f}", f"± {d['ci'] or 0:.3f}", verdict(d, "the mixture", mine)]
                for name, d in versus.items()
            ],
        )
