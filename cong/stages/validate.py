"""The prerequisites of a run, checked before any stage spends GPU time: `cong validate`, the local preflight and
the pipeline's first task (plan) call `check_run`.

It reports every problem it finds in one message, each naming the field, file, row or model and the fix: the
prompt files (rows, ids, UTF-8, prompts longer than the models can take), the models (a model folder, a
tokenizer with a chat template), tokenizers that must be one (the contrastive pair; WSPO's weak and strong
models), and the object store (reachable, the bucket there, the credentials accepted).
"""

from __future__ import annotations

from typing import Any

from cong.config import Config
from cong.data import PROMPT_FIELDS, check_jsonl, problem_list
from cong.errors import CongError
from cong.inputs.hub import hub_problems
from cong.storage.s3 import S3Settings
from cong.vocabulary import INPUT_FIELDS, SHARED_VOCAB_METHODS


def check_run(
    cfg: Config, storage: S3Settings | None = None, models: bool = True, cluster: bool = False, probe: str | None = None
) -> None:
    """Raise one CongError listing every problem of the run's inputs; `storage`: also check the store there (and
    with `probe`, a key under it, that the run may write);
    `models`: load each model's config and tokenizer (the pipeline's plan task skips it for models in the store,
    which it would have to download); `cluster`: also check what the run needs of the Kubernetes cluster it runs
    in (the plan task, in a pod)."""
    problems = storage_problems(cfg, storage, probe) if storage is not None else []
    if cluster:
        problems += cluster_problems(cfg)
    # References to the hub first, in seconds: a model or prompt set the hub will not give is not loaded at all.
    refs = _references(cfg)
    unreachable = hub_problems(
        [r for f, r in refs if f.startswith("models.")], [r for f, r in refs if not f.startswith("models.")]
    )
    problems += [f"{field} {ref!r}: {unreachable[ref]}" for field, ref in refs if ref in unreachable]
    tokenizers: dict[str, Any] = {}
    if models:
        for field in ("weak_base", "strong_base", "weak_aligned"):
            ref = getattr(cfg.models, field)
            if ref is not None and ref not in unreachable:
                tokenizer, problem = _model(ref, cfg)
                if problem:
                    problems.append(f"models.{field} {ref!r}: {problem}")
                else:
                    tokenizers[field] = tokenizer
        problems += _shared_tokenizer_problems(cfg, tokenizers)
    models_unreachable = any(getattr(cfg.models, f) in unreachable for f in ("weak_base", "strong_base"))
    if not models_unreachable:  # the methods' checks compare the models' vocabularies
        problems += _method_problems(cfg)
    context = _context(cfg) if models and not models_unreachable else None
    problems += prompt_problems(cfg, tokenizers.get("strong_base"), context, skip=set(unreachable))
    if problems:
        raise CongError(problem_list(f"run {cfg.name!r} cannot start", problems, "Nothing was run or published."))


def _references(cfg: Config) -> list[tuple[str, str]]:
    """(field, reference) of every model and prompt file the run reads: its inputs, and the downstream tasks' data."""
    refs = [(f"{section}.{name}", getattr(getattr(cfg, section), name)) for section, name in INPUT_FIELDS]
    refs += [(f"stages.evaluate.downstream[{i}].data", t.data) for i, t in enumerate(cfg.stages.evaluate.downstream)]
    return [(field, ref) for field, ref in refs if ref]


def prompt_problems(
    cfg: Config, tokenizer: Any = None, context: int | None = None, skip: set[str] = frozenset()
) -> list[str]:
    """Every bad row of the prompt files (train, eval, the downstream tasks'), and prompts longer than the run's
    lengths leave room for (under `tokenizer`, the strong model's); files whose reference is in `skip` are not
    read."""
    from cong.evaluation.downstream import TASK_FIELDS
    from cong.inputs.refs import resolve

    files = [("data.train_prompts", cfg.data.train_prompts, PROMPT_FIELDS, _train_limit(cfg, context))]
    files.append(("data.eval_prompts", cfg.data.eval_prompts, PROMPT_FIELDS, _eval_limit(cfg, context)))
    for i, task in enumerate(cfg.stages.evaluate.downstream):
        files.append((f"stages.evaluate.downstream[{i}].data", task.data, TASK_FIELDS, (None, "")))
    problems = []
    for field, ref, required, (limit, because) in files:
        if ref in skip:
            continue
        try:
            path = resolve(ref, cfg)
            rows, bad = check_jsonl(path, required)
        except CongError as exc:
            problems.append(f"{field} {ref!r}: {exc}")
            continue
        fix = f"Fix: one UTF-8 JSON object per line with non-empty string fields {', '.join(required)}, ids unique."
        if bad:
            problems.append(problem_list(f"{field} ({path})", bad, fix))
        elif not rows:
            problems.append(f"{field} ({path}) has no rows. {fix}")
        long = _over_length(rows, tokenizer, limit, because) if tokenizer is not None and limit else []
        if long:
            problems.append(problem_list(f"{field} ({path})", long, "Fix: shorten those prompts or drop their rows."))
    return problems


def _over_length(rows: list[dict], tokenizer: Any, limit: int, because: str) -> list[str]:
    from cong.models import prompt_ids

    ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])
    return [
        f"id {r['id']!r}: the prompt has {len(i)} tokens, over the {limit} that {because} leaves"
        for r, i in zip(rows, ids, strict=True)
        if len(i) > limit
    ]


def _context(cfg: Config) -> int | None:
    """The smaller context window of the weak and strong base models (None when neither says)."""
    from transformers import AutoConfig

    from cong.inputs.refs import resolve

    windows = []
    for ref in (cfg.models.weak_base, cfg.models.strong_base):
        try:
            config = AutoConfig.from_pretrained(resolve(ref, cfg, weights=False))
            windows.append(getattr(config, "max_position_embeddings", None))
        except (OSError, ValueError, CongError):
            continue
    return min((w for w in windows if w), default=None)


def _train_limit(cfg: Config, context: int | None) -> tuple[int | None, str]:
    """Train prompts are sampled (CD, weak and strong samples) and trained on with their responses."""
    s = cfg.stages
    new_tokens = max(s.cd_sample.sampling.max_new_tokens, s.strong_sample.sampling.max_new_tokens)
    max_length = min(s.sft.train.max_length, s.dpo.train.max_length)
    if context is None:
        return max_length - 1, f"stages.sft/dpo.train.max_length {max_length}"
    window = context - new_tokens
    if window < max_length:
        return window, f"the models' {context}-token context less {new_tokens} new tokens"
    return max_length - 1, f"stages.sft/dpo.train.max_length {max_length}"


def _eval_limit(cfg: Config, context: int | None) -> tuple[int | None, str]:
    new_tokens = cfg.stages.evaluate.sampling.max_new_tokens
    if context is None:
        return None, ""
    return context - new_tokens, f"the models' {context}-token context less {new_tokens} new tokens (evaluate)"


def _model(ref: str, cfg: Config) -> tuple[Any, str | None]:
    """A chat model's tokenizer, or what is wrong with the model at `ref`."""
    from pathlib import Path

    from transformers import AutoConfig

    from cong.inputs.refs import resolve
    from cong.models import is_model_dir, load_plain_tokenizer

    try:
        path = resolve(ref, cfg, weights=False)
    except CongError as exc:
        return None, str(exc)
    if (path.startswith(("/", ".", "~")) or Path(path).exists()) and not is_model_dir(path):
        return None, f"{path} is not a Hugging Face model folder (no config.json). Point it at a saved model."
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        return None, f"its config.json does not load ({_first_line(exc)}). Save the model again."
    try:
        tokenizer = load_plain_tokenizer(path)
    except (CongError, ValueError, TypeError) as exc:
        return None, f"{_first_line(exc)}. Save the tokenizer with the model."
    if tokenizer.chat_template is None:
        return None, (
            "its tokenizer has no chat template, and the pipeline renders prompts as chats. Use a chat or "
            "instruct model, or add a chat_template to its tokenizer_config.json."
        )
    return tokenizer, None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _shared_tokenizer_problems(cfg: Config, tokenizers: dict[str, Any]) -> list[str]:
    """Contrastive decoding subtracts the weak pair's log-probabilities token by token: one vocabulary."""
    base, aligned = tokenizers.get("weak_base"), tokenizers.get("weak_aligned")
    if base is None or aligned is None or base.get_vocab() == aligned.get_vocab():
        return []
    return [
        f"models.weak_aligned {cfg.models.weak_aligned!r} and models.weak_base {cfg.models.weak_base!r} tokenize "
        "differently; contrastive decoding compares them token by token. Give the aligned model trained from "
        "this weak base, or unset weak_aligned to align the base here."
    ]


def _method_problems(cfg: Config) -> list[str]:
    try:
        check_methods(cfg)
    except CongError as exc:
        return [f"methods: {exc}"]
    return []


def cluster_problems(cfg: Config) -> list[str]:
    """A run with multi-node training stages needs the TrainJob API and the verbs of manifests/base/role.yaml."""
    multi_node = [stage for stage, r in cfg.resources.items() if r.nodes > 1]
    if not multi_node:
        return []
    from cong.cluster.kube import Cluster

    try:
        problems = Cluster.connect().prerequisite_problems()
    except CongError as exc:
        problems = [str(exc)]
    return [f"resources.{'/'.join(multi_node)}.nodes > 1: {p}" for p in problems]


def storage_problems(cfg: Config, settings: S3Settings, probe: str | None = None) -> list[str]:
    """The run's store (`storage`, located) and an s3:// pipeline root's bucket reachable with these credentials; with
    `probe`, a key of the run under the store, that the store takes a write there (then the probe is deleted)."""
    from cong.storage.s3 import check_bucket, parse_s3_uri, storage_error

    storage = cfg.storage.located(cfg.pipeline_root)
    buckets = [storage.bucket]
    if cfg.pipeline_root and cfg.pipeline_root.startswith("s3://"):
        buckets.append(parse_s3_uri(cfg.pipeline_root).bucket)
    problems = []
    client = settings.client()
    for bucket in dict.fromkeys(buckets):
        try:
            check_bucket(client, settings, bucket)
        except CongError as exc:
            problems.append(f"storage: {settings.scrub(str(exc))}")
    if probe and not problems:
        target = parse_s3_uri(probe)
        try:
            client.put_object(Bucket=target.bucket, Key=target.prefix, Body=b"cong: can this run write here?")
            client.delete_object(Bucket=target.bucket, Key=target.prefix)
        except Exception as exc:
            given = "storage.bucket and storage.prefix" if cfg.storage.bucket else "the pipeline root"
            refused = storage_error(exc, settings, f"writing {probe}", target.bucket)
            problems.append(
                f"storage: {refused} The run keeps its records, checkpoints and results under {storage.uri()}, which "
                f"{given} name (storage.bucket unset: the pipeline root's store, from the run's pipeline_root or the "
                "namespace's kfp-launcher defaultPipelineRoot). Fix: a key that may write there, or "
                "storage.bucket/storage.prefix naming where it may."
            )
    return problems


def _vocabulary(ref: str, cfg: Config) -> dict[str, int]:
    from transformers import AutoTokenizer

    from cong.inputs.refs import resolve

    try:
        return AutoTokenizer.from_pretrained(resolve(ref, cfg, weights=False)).get_vocab()
    except OSError as exc:
        raise CongError(f"cannot load a tokenizer from {ref!r}: {exc}") from None


def shares_vocabulary(weak_ref: str, strong_ref: str, cfg: Config) -> bool:
    """Whether two models tokenize alike. Testbed models share the testbed's tokenizer and no other."""
    weak_testbed, strong_testbed = weak_ref.startswith("testbed:"), strong_ref.startswith("testbed:")
    if weak_testbed or strong_testbed:
        return weak_testbed and strong_testbed
    return weak_ref == strong_ref or _vocabulary(weak_ref, cfg) == _vocabulary(strong_ref, cfg)


def check_methods(cfg: Config) -> None:
    """Refuse methods the models cannot run, before any stage starts."""
    needs_shared = [m for m in cfg.methods if m in SHARED_VOCAB_METHODS]
    if needs_shared and not shares_vocabulary(cfg.models.weak_base, cfg.models.strong_base, cfg):
        raise CongError(
            f"method {', '.join(needs_shared)} needs the weak and strong models to share a tokenizer (its loss "
            f"compares their log-probabilities token by token), but {cfg.models.weak_base!r} and "
            f"{cfg.models.strong_base!r} use different vocabularies: this is a cross-family setting. Remove "
            f"{', '.join(needs_shared)} from `methods` (every other method works across families), or choose a "
            "strong model from the weak model's family."
        )
