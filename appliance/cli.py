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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Industrial anomaly-detection appliance")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('anomaly-appliance')}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the appliance's main job")
    p_run.add_argument("--epochs", type=int, default=30, help="self-check training epochs")
    p_run.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
