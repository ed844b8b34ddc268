"""`emtm serve`: run the web demo and JSON API (FastAPI + uvicorn, imported only here)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

from emtm.cli.argtypes import nonneg_int, positive_float, positive_int
from emtm.errors import EmtmError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(sub: Any) -> None:
    """Register `emtm serve` on the CLI's subparsers (no web import here)."""
    from emtm.serve.limits import Limits

    d = Limits()
    p = sub.add_parser("serve", help="web demo + JSON API over a model (needs `pip install emtm[serve]`)")
    p.add_argument("--model", required=True, help="a model folder (emtm export) or a run directory")
    p.add_argument("--videos", help="folder whose video files the page and POST /ground may use")
    p.add_argument(
        "--cache", help="feature/upload cache folder (default: .emtm-serve-cache beside the model)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=nonneg_int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--allow-remote", action="store_true", help="needed to listen on an address other than loopback"
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument(
        "--max-upload-mb", type=positive_float, default=d.max_upload_bytes / 2**20, help="upload size limit"
    )
    p.add_argument(
        "--max-body-kb", type=positive_float, default=d.max_body_bytes / 2**10, help="other request bodies"
    )
    p.add_argument("--max-query-chars", type=positive_int, default=d.max_query_chars)
    p.add_argument("--max-top-k", type=positive_int, default=d.max_top_k)
    p.add_argument(
        "--max-extract-jobs", type=positive_int, default=d.max_extract_jobs, help="concurrent extractions"
    )
    p.add_argument("--timeout", type=positive_float, default=d.timeout_s, help="seconds per request")
    p.add_argument(
        "--max-upload-cache",
        type=int,
        default=d.max_upload_cache,
        help="uploads kept; the least recently used is deleted first (all are deleted at shutdown)",
    )
    p.add_argument(
        "--max-upload-cache-mb",
        type=float,
        default=d.max_upload_cache_bytes / 2**20,
        help="bytes of kept uploads plus their extracted features",
    )
    t = p.add_argument_group("teachers and KAU view (when --model is a run written by `emtm distill`)")
    t.add_argument(
        "--teachers", nargs="+", help="caches exported on --split, in the run's order (default: its own)"
    )
    t.add_argument("--data", help="data.yaml of the examples (default: the run's)")
    t.add_argument("--split", default="train", help="the examples' split (default train)")
    t.add_argument("--no-teachers", action="store_true", help="no teachers and KAU view")
    p.set_defaults(func=cmd_serve)


def page_url(host: str, port: int) -> str:
    """The page's URL; an IPv6 address goes in brackets (http://[::1]:8000/)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def readable(name: str, value: object) -> str:
    """A limit for the start-up table: byte counts in KiB/MiB, as the flags take them."""
    if name.endswith("_bytes") and isinstance(value, int):
        return f"{value / 2**20:g} MiB" if value >= 2**20 else f"{value / 2**10:g} KiB"
    return str(value)


def limits_from(args: argparse.Namespace) -> Any:
    from emtm.serve.limits import Limits

    values = {
        "--max-upload-mb": args.max_upload_mb,
        "--max-body-kb": args.max_body_kb,
        "--max-query-chars": args.max_query_chars,
        "--max-top-k": args.max_top_k,
        "--timeout": args.timeout,
        "--max-upload-cache": args.max_upload_cache,
        "--max-upload-cache-mb": args.max_upload_cache_mb,
    }
    for flag, value in values.items():
        if not value > 0:
            raise EmtmError(f"{flag} {value}: must be positive")
    if args.max_extract_jobs < 0:
        raise EmtmError(f"--max-extract-jobs {args.max_extract_jobs}: must be 0 (no extraction) or more")
    return Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_body_bytes=int(args.max_body_kb * 2**10),
        max_query_chars=args.max_query_chars,
        max_top_k=args.max_top_k,
        max_extract_jobs=args.max_extract_jobs,
        timeout_s=args.timeout,
        max_upload_cache=args.max_upload_cache,
        max_upload_cache_bytes=int(args.max_upload_cache_mb * 2**20),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        raise EmtmError(
            f"--host {args.host} is not a loopback address: anyone who can reach it could use this server; "
            "add --allow-remote if that is what you want, or leave --host at 127.0.0.1"
        )
    try:
        import uvicorn

        from emtm.serve.app import create_app
        from emtm.serve.teachers import TeacherOptions
    except ImportError as err:
        raise EmtmError(
            f"emtm serve needs the web extra ({err.name} is missing): pip install 'emtm[serve]'"
        ) from None
    from emtm.console import print_table

    limits = limits_from(args)
    teachers = TeacherOptions(
        enabled=not args.no_teachers,
        caches=tuple(args.teachers) if args.teachers else None,
        data=args.data,
        split=args.split,
    )
    app = create_app(
        args.model, args.videos, limits, cache_dir=args.cache, device=args.device, teachers=teachers
    )
    service, examples = app.state.service, app.state.teachers
    extraction = service.info()["extraction"]
    rows = [
        ["model", f"{args.model} ({service.info()['architecture']})"],
        ["videos", str(Path(args.videos).resolve()) if args.videos else "none (uploads and features only)"],
        ["raw video", f"{extraction['backbone']} at {extraction['fps']:g} fps" if extraction["available"]
         else "refused: model records no feature spec"],
        ["cache", str(service.cache_dir)],
        ["teachers/KAU", examples.summary() if examples is not None else f"off: {app.state.teachers_off}"],
        *[[k, readable(k, v)] for k, v in limits.as_dict().items()],
        ["page", page_url(args.host, args.port)],
    ]  # fmt: skip
    print_table("emtm serve", ["setting", "value"], rows)
    if not is_loopback(args.host):
        print(
            f"WARNING: listening on {args.host}, not loopback: anyone who can reach this address can use "
            "the server (no authentication, no TLS)",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
