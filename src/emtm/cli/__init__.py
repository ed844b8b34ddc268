"""Command line: `emtm COMMAND`. Each module registers its commands' options, calls the library and
prints; `main` turns an EmtmError into one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import logging
import sys

from emtm.cli import bench, data, distill, experiments, extract, ground, predict, serve, train
from emtm.cli.options import run_config, train_config_from_args
from emtm.errors import EmtmError
from emtm.io import check_writable
from emtm.version import __version__

__all__ = ["build_parser", "main", "run_config", "train_config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emtm",
        description="Fast temporal sentence grounding in videos with multi-teacher knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"emtm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        data.add_synth, train.add_train, distill.add_distill, distill.add_teachers, experiments.add_ablate,
        experiments.add_recipe, distill.add_show, train.add_evaluate, predict.add_predict, predict.add_export,
        experiments.add_demo, data.add_data, bench.add_parser, extract.add_parser, ground.add_parser,
        serve.add_parser,  # argparse only; FastAPI loads in the command
    ):  # fmt: skip
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        for flag in ("out", "json"):  # an unwritable output fails now, not after the work
            value = getattr(args, flag, None)
            if isinstance(value, str) and value != "-":
                check_writable(value, f"--{flag}")
        return args.func(args)
    except EmtmError as err:
        code = getattr(err, "exit_code", 2)  # 128 + signal when SIGINT/SIGTERM stopped training cleanly
        print(f"emtm {args.command}: {'error: ' if code == 2 else ''}{err}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"emtm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
