"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version


def run(args: argparse.Namespace) -> int:
    """Main job. The runtime (connectors → pipeline → storage → MQTT → API) is issue #5 and not
    built yet; until it lands, say so and show the engine working on the seed's experiment."""
    from appliance.selfcheck import logistic_regression_4_vs_9

    print("appliance runtime: not built yet (connectors, pipeline, MQTT alerts and API come with")
    print("the runtime issue). Running the engine self-check instead: the seed's experiment,")
    print("a 1-layer logistic regression separating 4 from 9 on scikit-learn's digits.")
    accuracy = logistic_regression_4_vs_9(epochs=args.epochs, log=print)
    print(f"validation accuracy: {accuracy:.4f}")
    return 0 if accuracy >= 0.95 else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Industrial anomaly-detection appliance")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('anomaly-appliance')}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the appliance's main job")
    p_run.add_argument("--epochs", type=int, default=30, help="self-check training epochs")
    p_run.set_defaults(func=run)

    p_net = sub.add_parser("network", help="network specs and the model zoo")
    net_sub = p_net.add_subparsers(dest="network_command", required=True)
    p_stats = net_sub.add_parser("stats", help="per-layer statistics (NNC's) plus activation memory")
    p_stats.add_argument("spec", help="a spec file (.yaml/.json) or a zoo network name")
    p_stats.add_argument("--input", help="input shape for a zoo network, e.g. 1,28,28")
    p_stats.add_argument("--batch-size", type=int, default=1, help="batch size for activation memory")
    p_stats.add_argument("--json", help="also write the statistics as JSON here")
    p_stats.add_argument("--chart", help="also write a bar chart PNG here")
    p_stats.set_defaults(func=network_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
