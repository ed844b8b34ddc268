r"""The teacher gap over seeds: the best teacher at several seeds against the student alone and EMTM.

    python benchmarks/gap_seeds.py --teacher T0.json T1.json T2.json \
        --ablation runs/bench/distill-hard/ablation/ablation_summary.json \
        [--emtm E0.json E1.json E2.json --emtm-label "EMTM from these teachers"] --out DIR

`--teacher` takes the `emtm evaluate --json` files of one teacher trained at several seeds (their
`run` field names the run, whose FLOPs per query are counted); the student alone and the full EMTM
student come from an `emtm ablate` summary (rows "student alone" and "student + KAU + shared encoder
(EMTM)", mean over their seeds); `--emtm` adds another EMTM group from `emtm evaluate --json` files
(for example students distilled from a stronger teacher). Writes DIR/gap_seeds.json and
DIR/gap_seeds.md: each group's mean ± std (ddof = 1), the gap between the teacher's mean and the
student alone's, the gap at the teacher's worst and best seed, the share of the gap each EMTM group
recovers, and the FLOPs ratio to the teacher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emtm.engine.checkpoint import load_run
from emtm.engine.flops import flops_per_query
from emtm.errors import EmtmError
from emtm.experiments.ablation_report import mean_std, mean_std_text, stat_text
from emtm.io import write_json, write_markdown_table

ALONE, EMTM = "student alone", "student + KAU + shared encoder (EMTM)"


def read_results(paths: list[Path], key: str) -> list[dict[str, Any]]:
    """The `emtm evaluate --json` files, each checked for `key`."""
    results = []
    for path in paths:
        result = json.loads(path.read_text())
        if key not in result:
            raise EmtmError(f"{path}: no {key!r}; pass the JSON of `emtm evaluate --json`")
        results.append({**result, "run": result.get("run", str(path))})
    return results


def run_gflops(run_dir: str) -> float:
    run = load_run(Path(run_dir))
    return flops_per_query(run.model, run.spec.to_spec(), run.spec.max_video_len) / 1e9


def gap_over_seeds(
    teacher: list[float],
    alone: dict[str, Any],
    emtm_groups: dict[str, dict[str, Any]],
    teacher_gflops: float,
) -> dict[str, Any]:
    """The gap between the teacher's and the student alone's means, its range over the teacher's
    seeds, and the share of it each EMTM group (mean over its seeds) recovers."""
    stat = mean_std(teacher)
    gap, best_gap = stat["mean"] - alone["mean"], max(teacher) - alone["mean"]
    groups = {}
    for label, group in emtm_groups.items():
        gain = group["mean"] - alone["mean"]
        groups[label] = {
            **group,
            "recovered": gain / gap if gap > 0 else None,
            "recovered_of_best_seed": gain / best_gap if best_gap > 0 else None,
            "flops_ratio": group["gflops"] / teacher_gflops,
        }
    return {
        "teacher": {**stat, "seeds": teacher, "gflops": teacher_gflops},
        "student_alone": alone,
        "gap": gap,
        "gap_worst_teacher_seed": min(teacher) - alone["mean"],
        "gap_best_teacher_seed": best_gap,
        "emtm": groups,
    }


def table_rows(result: dict[str, Any], teacher_label: str) -> list[list[str]]:
    teacher, alone = result["teacher"], result["student_alone"]
    rows = [
        [f"best teacher: {teacher_label} ({len(teacher['seeds'])} seeds)", mean_std_text(teacher["seeds"]),
         ", ".join(f"{v:.2f}" for v in teacher["seeds"])],
        [f"student alone ({alone['n_seeds']} seeds)", stat_text(alone, alone["n_seeds"]), ""],
        ["gap (teacher mean - student alone mean)", f"**{result['gap']:.2f}**",
         f"worst teacher seed {result['gap_worst_teacher_seed']:.2f}, "
         f"best {result['gap_best_teacher_seed']:.2f}"],
    ]  # fmt: skip
    for label, group in result["emtm"].items():
        if group["recovered"] is None:
            share = "nothing: there is no gap to recover"
        else:
            best = 100 * group["recovered_of_best_seed"]
            share = f"**{100 * group['recovered']:.0f}%** of the gap ({best:.0f}% of the best seed's)"
        seeds = "1 seed" if group["n_seeds"] == 1 else f"{group['n_seeds']} seeds"
        rows.append([f"{label} ({seeds})", stat_text(group, group["n_seeds"]),
                     f"recovers {share}; {group['flops_ratio']:.2f} of the teacher's FLOPs"])  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--teacher", nargs="+", type=Path, required=True, help="emtm evaluate --json, one per seed"
    )
    p.add_argument("--ablation", type=Path, required=True, help="ablation_summary.json of emtm ablate")
    p.add_argument("--emtm", nargs="*", type=Path, default=[], help="emtm evaluate --json of EMTM students")
    p.add_argument("--emtm-label", default="EMTM, --emtm students")
    p.add_argument("--key", default="r1@0.7", help="metric (default r1@0.7)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    teachers = read_results(args.teacher, args.key)
    teacher = [float(r[args.key]) for r in teachers]
    runs = [r["run"] for r in teachers]
    names = {r.get("model", "teacher") for r in teachers}
    summary = json.loads(args.ablation.read_text())
    missing = [row for row in (ALONE, EMTM) if row not in summary]
    if missing:
        raise SystemExit(f"{args.ablation}: no row(s) {missing}; run emtm ablate with --rows 1,5")

    def ablation_group(row: str) -> dict[str, Any]:
        return {
            **summary[row][args.key],
            "n_seeds": summary[row]["n_seeds"],
            "gflops": summary[row]["gflops"],
        }

    groups = {"full EMTM (ablation row 5)": ablation_group(EMTM)}
    if args.emtm:
        students = read_results(args.emtm, args.key)
        values = [float(r[args.key]) for r in students]
        groups[args.emtm_label] = {**mean_std(values), "n_seeds": len(values), "seeds": values,
                                   "gflops": run_gflops(students[0]["run"])}  # fmt: skip
    result = gap_over_seeds(teacher, ablation_group(ALONE), groups, run_gflops(runs[0]))
    result.update({"metric": args.key, "teacher_runs": runs, "ablation": str(args.ablation)})
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gap_seeds.json", result)
    label = "/".join(sorted(names))
    rows = table_rows(result, label)
    title = f"teacher gap over seeds, test {args.key}"
    write_markdown_table(args.out / "gap_seeds.md", ["quantity", "value", "notes"], rows, title)
    print((args.out / "gap_seeds.md").read_text())


if __name__ == "__main__":
    main()
