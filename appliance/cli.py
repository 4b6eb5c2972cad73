"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version


def run(args: argparse.Namespace) -> int:
    """The main job: inspect the configured sources, store results, send alerts over MQTT."""
    import logging

    from appliance.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.config)  # a mistake is named before the runtime's seconds of imports

    from appliance.runtime import run as run_appliance

    def say(line: str) -> None:  # flushed: status lines must reach journals and pipes at once
        print(line, flush=True)

    console = (args.console_host, args.console_port) if args.console else None
    return run_appliance(settings, duration=args.duration, log=say, report_every=args.report_every, console=console)


def console(args: argparse.Namespace) -> int:
    """The operator console against a running appliance's API (this machine's or another's)."""
    import os
    from pathlib import Path

    from appliance.console import exec_console

    token = args.token or os.environ.get("APPLIANCE_TOKEN")
    if token is None and args.token_file and Path(args.token_file).is_file():
        token = Path(args.token_file).read_text().strip()
    sign_in = "signed in" if token else "asks for a token"
    print(f"console: http://{args.host}:{args.port}/ (API {args.api_url}; {sign_in})", flush=True)
    exec_console(args.api_url, token, args.host, args.port)  # does not return
    return 0


def token_create(args: argparse.Namespace) -> int:
    """Create an API bearer token with a role; printed once, only its hash is stored."""
    from appliance.settings import load_settings
    from appliance.storage import store
    from appliance.storage.db import init_db, make_engine

    engine = make_engine(load_settings(args.config).db_url)
    init_db(engine)
    expires_at = store.token_expiry(args.role, args.expires_in_days)
    print(store.create_token(engine, name=args.name, role=args.role, expires_at=expires_at))
    return 0


def network_stats(args: argparse.Namespace) -> int:
    """NNC's per-layer statistics of a spec file or zoo network: table, JSON, bar chart."""
    import json
    from pathlib import Path

    from models.spec import SpecError, build
    from models.stats import stats_chart, stats_json, stats_table
    from models.zoo import ZOO, get_spec

    try:
        shape = [int(v) for v in args.input.split(",")] if args.input else None
        spec = get_spec(args.spec, shape) if args.spec in ZOO else args.spec
        if shape and args.spec not in ZOO:
            msg = "--input applies to zoo networks; a spec file states its own input"
            raise SpecError(msg)
        net = build(spec)
    except (SpecError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(stats_table(net, args.batch_size))
    if args.json:
        Path(args.json).write_text(json.dumps(stats_json(net, args.batch_size), indent=2))
        print(f"wrote {args.json}")
    if args.chart:
        stats_chart(net, args.chart, args.batch_size)
        print(f"wrote {args.chart}")
    return 0


def dataset_check(args: argparse.Namespace) -> int:
    """Validate a whole dataset CSV; report every problem with its row and column."""
    from appliance.datasets import check_dataset

    problems = check_dataset(args.csv, allow_absolute=args.allow_absolute)
    for p in problems:
        print(f"{args.csv}: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.csv}: OK")
    return 0


def dataset_create(args: argparse.Namespace) -> int:
    """Dataset CSVs from image folders, or from an MVTec AD category."""
    from appliance.datasets import ImageFormat, create_image_dataset, import_mvtec

    fmt = ImageFormat(args.channels, args.width, args.height, args.mode)
    if args.mvtec:
        summary = import_mvtec(args.source, args.out, fmt)
    else:
        summary = create_image_dataset(
            args.source, args.out, fmt, args.train_percent, not args.no_shuffle, args.seed, log=print
        )
    print(" ".join(f"{k}={v}" for k, v in summary.items() if k != "skipped"))
    return 0


def dataset_sample(args: argparse.Namespace) -> int:
    from appliance.datasets import create_sample

    summary = create_sample(args.name, args.out)
    print(f"wrote {args.out}: " + " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def train_command(args: argparse.Namespace) -> int:
    from appliance.workflows import train

    every_line = args.no_progress and not args.quiet  # else the bar shows the same figures

    def lines(line: str) -> None:
        if every_line or line.startswith("warning:"):  # warnings always reach the engineer
            _stderr_line(line)

    result = train(
        args.project, args.output, resume=args.resume, log=lines, progress=not (args.quiet or args.no_progress)
    )
    final = " ".join(f"{k}={v:.4g}" for k, v in result.final.items() if k not in ("epoch", "time"))
    print(f"run: {result.directory}")
    print(f"final epoch {int(result.final['epoch'])}: {final}")
    print(f"model: {result.best_bundle or result.last_bundle}")
    return 0


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


def evaluate_command(args: argparse.Namespace) -> int:
    from appliance.workflows import evaluate

    report = evaluate(args.model, args.dataset, args.output)
    for key in ("accuracy", "auroc", "threshold", "mae", "rmse", "r2"):
        if key in report:
            print(f"{key}: {report[key]:.4f}")
    if "macro_avg" in report:
        m = report["macro_avg"]
        print(f"macro avg: precision {m['precision']:.4f} recall {m['recall']:.4f} F-measure {m['f_measure']:.4f}")
    if "confusion_matrix" in report:
        print("confusion matrix (rows true, columns predicted):")
        for label, row in zip(report["classes"], report["confusion_matrix"], strict=True):
            print(f"  {label:>8}: " + " ".join(f"{v:5d}" for v in row))
    print(f"wrote {report['output_dir']}/output_result.csv")
    return 0


def forward_command(args: argparse.Namespace) -> int:
    from appliance.workflows import forward

    print(f"wrote {forward(args.config, args.dataset, args.output)}")
    return 0


def search_command(args: argparse.Namespace) -> int:
    from appliance.workflows.search import search

    overrides = {
        "method": args.method,
        "objective": args.objective,
        "max_trials": args.trials,
        "time_limit_minutes": args.time_limit,
        "workers": args.workers,
        "epochs": args.epochs,
        "seed": args.seed,
    }
    try:
        result = search(
            args.project,
            args.output,
            resume=args.resume,
            overrides=overrides,
            log=None if args.quiet else print,
            executor=args.executor,
        )
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; continue with the same command and --resume", file=sys.stderr)
        return 130
    print(f"search: {result.directory} ({len(result.trials)} trials, stopped by {result.stopped_by})")
    base = result.base
    if base.get("error") is not None:
        print(f"base network: error {base['error']:.4f}, {base['multiply_adds']:,} multiply-adds")
    print("Pareto front (trial, error, multiply-adds):")
    for row in result.pareto:
        print(f"  {row['trial']:4d}  {row['error']:.4f}  {row['multiply_adds']:>12,}  {row['mutations'] or 'base'}")
    print(f"table: {result.directory / 'trials.csv'}  plot: {result.directory / 'tradeoff.png'}")
    print(f"export one: appliance search-export {result.directory} TRIAL model.zip")
    return 0


def search_export_command(args: argparse.Namespace) -> int:
    from appliance.workflows.search import export_trial

    print(f"wrote {export_trial(args.run, args.trial, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from appliance.cli_detector import add_detector_commands
    from appliance.cli_nnc import add_nnc_commands
    from appliance.datasets.create import SAMPLES

    parser = argparse.ArgumentParser(prog="appliance", description="Industrial anomaly-detection appliance")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('anomaly-appliance')}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the appliance's main job")
    p_run.add_argument("--config", help="settings file (YAML); APPLIANCE_* environment variables also apply")
    p_run.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p_run.add_argument("--report-every", type=float, default=10.0, help="seconds between status lines")
    p_run.add_argument("--console", action="store_true", help="also start the operator console (Streamlit)")
    p_run.add_argument("--console-host", default="127.0.0.1")
    p_run.add_argument("--console-port", type=int, default=8501)
    p_run.set_defaults(func=run)

    p_console = sub.add_parser("console", help="start the operator console (Streamlit) against an appliance's API")
    p_console.add_argument("--api-url", default="http://127.0.0.1:8000", help="the appliance's REST API")
    p_console.add_argument("--token", help="bearer token (default: APPLIANCE_TOKEN, then --token-file)")
    p_console.add_argument("--token-file", default="var/admin-token", help="file holding a token (first-start admin)")
    p_console.add_argument("--host", default="127.0.0.1")
    p_console.add_argument("--port", type=int, default=8501)
    p_console.set_defaults(func=console)

    p_token = sub.add_parser("token", help="API tokens")
    token_sub = p_token.add_subparsers(dest="token_command", required=True)
    p_tc = token_sub.add_parser("create", help="create a bearer token (printed once)")
    p_tc.add_argument("--role", required=True, choices=("viewer", "operator", "engineer", "admin"))
    p_tc.add_argument("--name", required=True)
    p_tc.add_argument("--config", help="settings file (YAML)")
    p_tc.add_argument("--expires-in-days", type=float, help="default: 30 for viewer and operator, never for the others")
    p_tc.set_defaults(func=token_create)

    p_net = sub.add_parser("network", help="network specs and the model zoo")
    net_sub = p_net.add_subparsers(dest="network_command", required=True)
    p_stats = net_sub.add_parser("stats", help="per-layer statistics (NNC's) plus activation memory")
    p_stats.add_argument("spec", help="a spec file (.yaml/.json) or a zoo network name")
    p_stats.add_argument("--input", help="input shape for a zoo network, e.g. 1,28,28")
    p_stats.add_argument("--batch-size", type=int, default=1, help="batch size for activation memory")
    p_stats.add_argument("--json", help="also write the statistics as JSON here")
    p_stats.add_argument("--chart", help="also write a bar chart PNG here")
    p_stats.set_defaults(func=network_stats)

    p_data = sub.add_parser("dataset", help="NNC dataset CSVs")
    data_sub = p_data.add_subparsers(dest="dataset_command", required=True)
    p_check = data_sub.add_parser("check", help="validate a dataset CSV, naming row and column of every problem")
    p_check.add_argument("csv")
    p_check.add_argument("--allow-absolute", action="store_true", help="accept absolute file paths in cells")
    p_check.set_defaults(func=dataset_check)
    p_create = data_sub.add_parser("create", help="make training/validation CSVs from an image folder")
    p_create.add_argument("source", help="folder of class subfolders, a folder of normal images, or an MVTec category")
    p_create.add_argument("out")
    p_create.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p_create.add_argument("--width", type=int, default=28)
    p_create.add_argument("--height", type=int, default=28)
    p_create.add_argument("--mode", default="trimming", choices=("trimming", "padding"))
    p_create.add_argument("--train-percent", type=float, default=80.0)
    p_create.add_argument("--no-shuffle", action="store_true")
    p_create.add_argument("--seed", type=int, default=0)
    p_create.add_argument("--mvtec", action="store_true", help="source is an MVTec AD category folder")
    p_create.set_defaults(func=dataset_create)
    p_sample = data_sub.add_parser("sample", help="write a ready dataset made from data inside scikit-learn")
    p_sample.add_argument("name", choices=SAMPLES)
    p_sample.add_argument("out")
    p_sample.set_defaults(func=dataset_sample)

    p_train = sub.add_parser("train", help="train a project (YAML): network, datasets, config")
    p_train.add_argument("project")
    p_train.add_argument("-o", "--output", help="run folder (default runs/<project>-<time>)")
    p_train.add_argument("--resume", action="store_true", help="continue the run in -o from its last checkpoint")
    p_train.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p_train.add_argument("--no-progress", action="store_true", help="per-epoch lines instead of a progress bar")
    p_train.set_defaults(func=train_command)

    p_search = sub.add_parser("search", help="structure search: mutate the project's network, keep the Pareto front")
    p_search.add_argument("project")
    p_search.add_argument("-o", "--output", help="search folder (default runs/search-<project>-<time>)")
    p_search.add_argument("--resume", action="store_true", help="continue the search in -o; finished trials are kept")
    p_search.add_argument("--method", choices=("random", "bayes"), help="random mutation (NNC's) or model-based")
    p_search.add_argument("--objective", choices=("error", "error_and_madds"))
    p_search.add_argument("--trials", type=int, help="trial budget, the base network included")
    p_search.add_argument("--time-limit", type=float, help="wall-time budget in minutes")
    p_search.add_argument("--workers", type=int, help="trials in parallel (default: one per core, or the cluster's)")
    p_search.add_argument(
        "--executor", help="run trials on a Dask cluster: dask://scheduler:8786 (default: local processes)"
    )
    p_search.add_argument("--epochs", type=int, help="epochs per trial (default: the project's max_epoch)")
    p_search.add_argument("--seed", type=int)
    p_search.add_argument("--quiet", action="store_true", help="no line per trial")
    p_search.set_defaults(func=search_command)
    p_sexp = sub.add_parser("search-export", help="copy one trial's model bundle out of a search folder")
    p_sexp.add_argument("run", help="search folder")
    p_sexp.add_argument("trial", type=int)
    p_sexp.add_argument("out", help="bundle file to write (.zip)")
    p_sexp.set_defaults(func=search_export_command)

    p_eval = sub.add_parser("evaluate", help="metrics and output_result.csv of a run or model on a dataset")
    p_eval.add_argument("model", help="run folder or model bundle (.zip)")
    p_eval.add_argument("--dataset", required=True)
    p_eval.add_argument("-o", "--output", help="output folder (default <run>/evaluation)")
    p_eval.set_defaults(func=evaluate_command)

    p_fwd = sub.add_parser("forward", help="run a model over a dataset like nnabla_cli forward")
    p_fwd.add_argument("-c", "--config", required=True, help="model bundle (.zip) or run folder")
    p_fwd.add_argument("-d", "--dataset", required=True)
    p_fwd.add_argument("-o", "--output", required=True)
    p_fwd.set_defaults(func=forward_command)
    add_detector_commands(sub)
    add_nnc_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; user errors print one clear line and exit 2, never a traceback."""
    from appliance.errors import user_errors

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
