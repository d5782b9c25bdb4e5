"""What the command groups share: the config options, loading the config they name, the KFP connection."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cong.errors import CongError


def config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="a preset shipped with cong (default: tiny); see `cong presets`")
    parser.add_argument("--config", type=Path, help="a YAML config file (may `extends:` a preset)")
    parser.add_argument(
        "--methods",
        help="comma-separated methods to compare, or `all` (overrides the config's `methods`); see `cong presets`",
    )
    parser.add_argument(
        "--alpha-sweep",
        metavar="ALPHAS",
        help="CD alphas to sweep, e.g. `0,0.25,0.5` or `0,0.1,...,1` (overrides stages.alpha_sweep.alphas)",
    )
    parser.add_argument(
        "--allow-failed-gates",
        action="store_true",
        help="run even where the world or the weak pair fails a gate (cong/evaluation/gates.py); every output says so",
    )


def parse_alphas(text: str) -> list[float]:
    """`0,0.5,1` as given; `a,b,...,z` as the progression from a in steps of b - a up to z."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." not in parts:
            return [float(p) for p in parts]
        if len(parts) != 4 or parts[2] != "...":
            raise ValueError
        first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
        step = second - first
        if step <= 0 or last < first:
            raise ValueError
        count = round((last - first) / step)
        return [round(first + i * step, 10) for i in range(count + 1)]
    except ValueError:
        raise CongError(
            f"--alpha-sweep {text!r}: give comma-separated numbers in [0, 1] (e.g. 0,0.25,0.5) or a progression "
            "`first,second,...,last` (e.g. 0,0.1,...,1)."
        ) from None


def load(args: argparse.Namespace):
    from cong.config import load_config

    overrides: dict = {}
    if getattr(args, "methods", None):
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if getattr(args, "alpha_sweep", None):
        overrides["stages"] = {"alpha_sweep": {"alphas": parse_alphas(args.alpha_sweep)}}
    if getattr(args, "allow_failed_gates", False):
        overrides["allow_failed_gates"] = True
    return load_config(args.config, args.preset, overrides)


KFP_EPILOG = (
    "Connection: the KFP API at --host or KFP_HOST (a port-forward of svc/ml-pipeline, e.g. http://localhost:8888, "
    "or your Kubeflow address + /pipeline); --namespace or KFP_NAMESPACE on a multi-user Kubeflow (your profile "
    "namespace); run links point at --ui-url or KFP_UI_URL (default: the host). Authentication: a bearer token from "
    "KFP_TOKEN, else the file named by KF_PIPELINES_SA_TOKEN_PATH (default "
    "/var/run/secrets/kubeflow/pipelines/token, the service-account token projected into a pod)."
)


def kfp_args(parser: argparse.ArgumentParser, experiment: bool = True) -> None:
    parser.add_argument("--host", help="the KFP API's URL (default: $KFP_HOST)")
    parser.add_argument("--namespace", help="the Kubeflow namespace to work in (default: $KFP_NAMESPACE, or none)")
    parser.add_argument("--ui-url", metavar="URL", help="the KFP UI's URL for links (default: $KFP_UI_URL, or --host)")
    if experiment:
        parser.add_argument(
            "--experiment",
            default=os.environ.get("KFP_EXPERIMENT", "cong"),
            help="the KFP experiment (default: $KFP_EXPERIMENT, or cong); created when missing",
        )


def kfp_client(args: argparse.Namespace):
    from cong.cluster.kfp_api import Connection, KfpClient

    return KfpClient(Connection.resolve(args.host, args.namespace, args.ui_url))
