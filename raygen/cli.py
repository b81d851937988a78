"""`raygen` command line: run the pipeline (or some stages) from a YAML config; recommend from a finished run."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def setup_logging(verbose: bool) -> None:
    """raygen's log format on the root logger (INFO, or DEBUG when ``verbose``)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def cmd_run(args) -> int:
    from raygen.config import load_config
    from raygen.pipeline import run_pipeline

    cfg = load_config(args.config, args.overrides)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    if args.pin:
        from raygen.pin import install_pin

        print(f"pinned stages {install_pin(cfg, args.pin)} copied from {args.pin}", flush=True)
    summary = run_pipeline(cfg, only=args.stages or None, force=args.force or None, wait_lock=args.wait_lock)
    print(json.dumps({k: v.get("status") for k, v in summary.items()}, indent=1))
    return 0


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _ids(text: str) -> list[str]:
    """Item ids as given (the run's own ids: integers, or strings when its data came from a table of string
    ids); the run turns them into its internal ids (raygen.data.idmap.ItemIds) and names any it lacks."""
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"expected comma-separated item ids, got {text!r}")
    return ids


def cmd_recommend(args) -> int:
    from raygen.recommend import recommend

    if sum(x is not None for x in (args.history, args.query, args.histories)) != 1:
        print("raygen recommend: give one of --history, --query or --histories", file=sys.stderr)
        return 2
    if (args.histories is None) != (args.out is None):
        print("raygen recommend: --histories and --out go together", file=sys.stderr)
        return 2
    if args.histories is not None:
        from raygen.recommend import Recommender
        from raygen.recommend_batch import recommend_file

        with Recommender(args.run, workers=args.workers) as rec:
            summary = recommend_file(rec, args.histories, args.out, args.k, exclude_history=args.exclude_history,
                                     hybrid=args.hybrid, chunk_rows=args.chunk_rows, overwrite=args.overwrite)
        print(json.dumps(summary, indent=1))
        return 0
    recs = recommend(args.run, args.history, args.k, exclude_history=args.exclude_history, query=args.query,
                     hybrid=args.hybrid)
    if args.json:
        print(json.dumps(recs, indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>9}  {'item_id':>10}  {'sid':24s}  title")
    for rank, r in enumerate(recs, 1):
        print(f"{rank:>4}  {r['score']:>9.4f}  {r['item_id']:>10}  {r['sid']:24s}  {r['title']}")
    return 0


def cmd_add_items(args) -> int:
    from raygen.additions import add_items

    report = add_items(args.run, args.items)
    print(json.dumps(report, indent=1))
    return 0


def cmd_pin(args) -> int:
    from raygen.config import load_config
    from raygen.pin import save_pin

    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or cfg.run_dir
    manifest = save_pin(cfg, run_dir, args.out, args.stages, note=args.note)
    print(json.dumps({"pinned": manifest["stages"], "upstream": list(manifest["upstream"]), "out": args.out}))
    return 0


def cmd_stages(args) -> int:
    from raygen.pipeline import STAGES

    for s in STAGES:
        reads = ", ".join(dict.fromkeys((*s.deps, *s.reads))) or "-"
        print(f"{s.name:8s} reads {reads:42s} config {', '.join(s.sections) or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raygen", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline; finished stages with the same config are skipped")
    r.add_argument("--config", default="configs/default.yaml")
    r.add_argument("--run-dir", default="", help="override run_dir")
    r.add_argument("--stages", type=_csv, default=None, help="comma-separated: run only these stages")
    r.add_argument("--force", type=_csv, default=None, help="comma-separated: re-run these stages even if up to date")
    r.add_argument("--pin", default="", help="a pin folder (`raygen pin`): run its upstream stages, then copy its "
                                             "pinned stages in (checked) instead of computing them")
    r.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another run holds the run folder, wait up to this long for it (default 0: refuse)")
    r.add_argument("overrides", nargs="*", help="section.field=value")
    r.set_defaults(fn=cmd_run)
    pn = sub.add_parser("pin", help="copy finished stages (default corpus,sids: the SID build) of a run into a new "
                                    "folder, to reuse them with `raygen run --pin` on any machine")
    pn.add_argument("--config", default="configs/default.yaml")
    pn.add_argument("--run-dir", default="", help="the run holding the finished stages (default: the config's)")
    pn.add_argument("--out", required=True, help="the new pin folder (never overwritten)")
    pn.add_argument("--stages", type=_csv, default=["corpus", "sids"], help="comma-separated stages to pin")
    pn.add_argument("--note", default="", help="free text kept in pin.json")
    pn.add_argument("overrides", nargs="*", help="section.field=value (must be the run's config)")
    pn.set_defaults(fn=cmd_pin)
    rc = sub.add_parser("recommend", help="top-K items for a user history (or a search query), from the final "
                                          "model of a finished run")
    rc.add_argument("--run", required=True, help="run folder of a finished `raygen run` (its run_dir)")
    rc.add_argument("--history", type=_ids, default=None, help="comma-separated item ids (the run's own ids), oldest first")
    rc.add_argument("--query", default=None, help="a free-text search query instead of a history")
    rc.add_argument("-k", type=int, default=10, help="number of items to return (default 10)")
    rc.add_argument("--exclude-history", action="store_true", help="do not recommend items of the history")
    rc.add_argument("--hybrid", action=argparse.BooleanOptionalAction, default=None,
                    help="--hybrid: fuse the model's list with the content ranking (text-embedding neighbours of the "
                         "last history items) by reciprocal rank fusion, the eval table's 'raygen+content'; "
                         "--no-hybrid: the model alone; neither (default): the one the eval stage chose on the "
                         "valid split (its metrics.json 'serving'; the model alone where the run has no eval)")
    rc.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    rc.add_argument("--histories", default=None, help="batch: a JSON Lines file (.gz too) of {user_id, history, "
                                                      "optional target} objects, one user per line; needs --out; "
                                                      "rows with a target are scored (HR/NDCG with 95%% intervals)")
    rc.add_argument("--out", default=None, help="batch output, .parquet or .jsonl: one row per input line "
                                                "(line, user_id, item_ids, scores, skipped, target), written "
                                                "atomically")
    rc.add_argument("--chunk-rows", type=int, default=256, help="batch: histories ranked together (default 256)")
    rc.add_argument("--overwrite", action="store_true", help="batch: replace an existing --out file")
    rc.add_argument("--workers", type=int, default=0, help="batch: rank on this many Ray actors of the generation "
                                                           "pool, each reserving eval.resources (default 0: here)")
    rc.set_defaults(fn=cmd_recommend)
    ad = sub.add_parser("add-items", help="add items to a finished run's catalog without retraining: embedded "
                                          "with the run's embedder, SIDs from its quantizer; recommend knows them")
    ad.add_argument("--run", required=True, help="run folder of a finished `raygen run` (its run_dir)")
    ad.add_argument("--items", required=True, help="JSON Lines file, one item per line: item_id, title, optional "
                                                   "description, brand, categories")
    ad.set_defaults(fn=cmd_add_items)
    s = sub.add_parser("stages", help="list the stages")
    s.set_defaults(fn=cmd_stages)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from raygen.configbase import ConfigError, os_error_text
    from raygen.data.schema import DataError
    from raygen.pin import PinError
    from raygen.recommend import RecommendError
    from raygen.runner import RunnerError

    try:
        return args.fn(args)
    except (ConfigError, DataError, PinError, RecommendError, RunnerError) as e:
        return _error(str(e))
    except OSError as e:  # permissions, read-only, not a directory, disk full, a symlink loop, Ray unreachable
        return _error(os_error_text(e))


MAX_ERROR_CHARS = 500
"""Longest error message the CLI prints (a message quoting a huge value is cut, saying by how much)."""


def _error(text: str) -> int:
    """Print ``text`` as one ``raygen: error:`` line, cut to :data:`MAX_ERROR_CHARS`; the CLI's exit code 2."""
    msg = " ".join(text.splitlines())  # one line, whatever the message holds
    if len(msg) > MAX_ERROR_CHARS:
        msg = f"{msg[:MAX_ERROR_CHARS]}... ({len(msg) - MAX_ERROR_CHARS} more chars)"
    print(f"raygen: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
