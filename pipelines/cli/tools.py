"""Tools beside the pipeline: `cong bench cd`, `cong serve` (a local judge endpoint), `cong presets`."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from pipelines.cli.common import config_args, load

# The API key `cong serve` asks of clients, when set.
SERVE_KEY_ENV = "CONG_SERVE_API_KEY"


def cmd_bench_cd(args: argparse.Namespace) -> int:
    from cong.data import PROMPT_FIELDS, read_jsonl
    from cong.decoding.bench import format_bench, random_lora_expert, run_bench, write_json
    from cong.decoding.contrastive import CdParams
    from cong.inputs.refs import resolve

    cfg = load(args)
    cd = cfg.stages.cd_sample
    amateur = resolve(cfg.models.weak_base, cfg)
    rows = read_jsonl(resolve(cfg.data.eval_prompts, cfg), PROMPT_FIELDS, args.prompts)
    with tempfile.TemporaryDirectory(prefix="cong-bench-") as folder:
        if cfg.models.weak_aligned:
            expert = resolve(cfg.models.weak_aligned, cfg)
            name = f"expert {cfg.models.weak_aligned}, amateur {cfg.models.weak_base}"
        else:
            expert = random_lora_expert(amateur, Path(folder), args.lora_rank)
            name = f"amateur {cfg.models.weak_base}, expert the same plus a random rank-{args.lora_rank} LoRA adapter"
        result = run_bench(
            expert,
            amateur,
            [r["prompt"] for r in rows],
            max_new_tokens=args.max_new_tokens,
            batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
            reference_prompts=args.reference_prompts,
            repeats=args.repeats,
            cd=CdParams.of(cd),
            model_name=name,
        )
    print(format_bench(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cong.evaluation.serve import ChatModel, make_server
    from cong.inputs.refs import resolve

    cfg = load(args)
    name = args.name or args.model
    server = make_server(ChatModel(resolve(args.model, cfg), name), args.host, args.port, os.environ.get(SERVE_KEY_ENV))
    print(f"serving {args.model} as {name!r} on http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from cong.config import load_config, preset_names

    for name in preset_names():
        cfg = load_config(preset=name)
        print(f"{name:<28} weak {cfg.models.weak_base}  ->  strong {cfg.models.strong_base}")
    return 0


def register(sub) -> None:
    """Add this group's commands to the `cong` parser's sub-commands."""
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks of the decoding engine.")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    cd = benches.add_parser(
        "cd",
        help="contrastive decoding: the engine against the reference, a naive port and one model alone",
        description="Time contrastive decoding of the config's weak pair (amateur: the weak base; expert: "
        "models.weak_aligned when set, else the weak base plus a random LoRA adapter) on its first eval prompts: the "
        "released code's way (one prompt at a time), a naive HF generate port, the engine at each batch size with two "
        "models and, when the expert keeps its LoRA adapter, with one shared-weight model, and the expert alone.",
    )
    config_args(cd)
    cd.add_argument("--prompts", type=int, default=64, help="eval prompts decoded by the batched rows (default 64)")
    cd.add_argument("--reference-prompts", type=int, default=8, help="prompts of the one-at-a-time rows (default 8)")
    cd.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    cd.add_argument("--batch-sizes", default="1,8,32,64", help="engine batch sizes (default 1,8,32,64)")
    cd.add_argument("--repeats", type=int, default=5, help="timed runs per row; the median is reported (default 5)")
    cd.add_argument(
        "--lora-rank", type=int, default=16, help="rank of the random adapter when no aligned model is set (default 16)"
    )
    cd.add_argument("--json", type=Path, help="also write the results as JSON here")
    cd.set_defaults(func=cmd_bench_cd)

    serve = sub.add_parser(
        "serve",
        help="serve a chat model over the OpenAI chat-completions protocol (for the judge)",
        description="Serve MODEL (a path, hub id, testbed: or gguf: reference) on /v1/chat/completions and "
        f"/v1/models, enough of the OpenAI protocol for the pairwise judge. With {SERVE_KEY_ENV} set, requests need "
        "'Authorization: Bearer <key>'.",
    )
    serve.add_argument("model", help="the chat model to serve")
    config_args(serve)
    serve.add_argument("--name", help="the model name clients ask for (default: MODEL as given)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.set_defaults(func=cmd_serve)

    pre = sub.add_parser("presets", help="list the shipped presets", description="List the shipped presets.")
    pre.set_defaults(func=cmd_presets)
