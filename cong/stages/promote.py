"""promote: the champion/challenger gate of scheduled retraining.

The challenger (this run's model of `promotion.method`) and the champion (the model published at the champion
location) answer the same held-out prompts with the evaluate stage's sampling settings and seeds, and the
evaluate stage's reward backend scores both. The challenger replaces the champion when there is none yet, or
when its win rate against the champion (ties count one half) reaches `promotion.threshold`; otherwise the
champion stays and the decision says why, with the numbers.

The champion location is one folder published with `cong.storage.folders.publish_dir`: the model's files and
`promotion.json` (how this model became the champion, and the records of the champions before it), with the
manifest written last. A reader sees the old champion, "not published" while a promotion uploads, or the new
one, never a mix. A promotion that dies mid-upload leaves files without a manifest: the next run finds no
champion, says so, and promotes its challenger.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cong.config import EvaluateSettings, PromotionSettings, config_from_dict
from cong.data import PROMPT_FIELDS, read_jsonl
from cong.decoding.sampler import Sampler
from cong.errors import CongError, stage_step
from cong.evaluation.rewards import reward_backend
from cong.evaluation.stats import bootstrap_mean, win_rate
from cong.inputs.refs import resolve
from cong.models import is_model_dir
from cong.progress import log
from cong.stages.step import StepResult, lineage, rewards
from cong.storage.folders import MANIFEST_NAME, Manifest, fetch_dir, find_manifest, publish_dir
from cong.storage.handoff import follow
from cong.storage.s3 import S3Settings, parse_s3_uri, storage_error

STAGE = "promote"
RECORD_FILE = "promotion.json"
HISTORY = 20  # earlier champions a champion's record keeps, newest first
# What a champion's record keeps of the decision that promoted it.
DECIDED = ("reason", "threshold", "prompts", "win_rate", "win_rate_ci95_low", "win_rate_ci95_high")


def promote(
    challenger: str,
    prompts_path: str,
    out_path: Path,
    settings: PromotionSettings,
    evaluation: EvaluateSettings,
    champion_uri: str,
    lineage: dict[str, Any],
    max_prompts: int | None = None,
    store: S3Settings | None = None,
) -> dict[str, Any]:
    """Compare the challenger (a local model folder) with the champion at `champion_uri`, publish the challenger
    there when it wins, and write the decision to `out_path` (JSON). `lineage` names the challenger (run id,
    artifact URI, config); it becomes the `model` of the new champion's record."""
    decision: dict[str, Any] = {"method": settings.method, "threshold": settings.threshold}
    if not settings.enabled:
        decision.update(promoted=False, reason="not compared: promotion.enabled is false in this run's config")
        return _write(out_path, decision)
    if not is_model_dir(challenger):
        raise CongError(f"promote: the challenger {challenger!r} is not a model folder (no config.json).")
    store = store or S3Settings.from_env()
    limits = [n for n in (settings.prompts, max_prompts) if n]
    rows = read_jsonl(prompts_path, PROMPT_FIELDS, min(limits) if limits else None)
    decision.update(prompts=len(rows), champion_uri=champion_uri, challenger=lineage)
    manifest = find_manifest(champion_uri, store)
    if manifest is None:
        unfinished = _holds_files(champion_uri, store)
        decision.update(
            promoted=True,
            champion=None,
            reason=f"promoted: {champion_uri} holds files but no {MANIFEST_NAME} (an earlier promotion did not "
            "finish), so there is no champion to compare with"
            if unfinished
            else f"promoted: there is no champion at {champion_uri} yet",
        )
    else:
        champion_dir = fetch_dir(champion_uri, settings=store)
        decision["champion"] = _record(champion_dir, manifest)
        prompts = [r["prompt"] for r in rows]
        backend = reward_backend(evaluation)
        rewards = {}
        for name, model in (("challenger", challenger), ("champion", str(champion_dir))):
            log(STAGE, f"sampling the {name} ({model}) on {len(rows)} eval prompts")
            rewards[name] = backend.score(prompts, Sampler(model)(rows, evaluation.sampling, STAGE))
        rate = win_rate(rewards["challenger"], rewards["champion"])
        promoted = rate.value >= settings.threshold
        numbers = (
            f"win rate {rate.value:.3f} [{rate.low:.3f}, {rate.high:.3f}] against the champion on {len(rows)} prompts"
        )
        decision.update(
            promoted=promoted,
            reason=f"promoted: {numbers} reaches the threshold {settings.threshold}"
            if promoted
            else f"kept the champion: {numbers} is below the threshold {settings.threshold}",
            win_rate=rate.value,
            win_rate_ci95_low=rate.low,
            win_rate_ci95_high=rate.high,
            challenger_reward_mean=bootstrap_mean(rewards["challenger"]).value,
            champion_reward_mean=bootstrap_mean(rewards["champion"]).value,
        )
    if decision["promoted"]:
        published = _publish(challenger, champion_uri, _new_record(decision, lineage), store)
        decision["published"] = {"digest": published.digest, "files": len(published.files)}
    log(STAGE, decision["reason"])
    return _write(out_path, decision)


def _write(out_path: Path, decision: dict[str, Any]) -> dict[str, Any]:
    Path(out_path).write_text(json.dumps(decision, indent=2) + "\n")
    return decision


def _holds_files(uri: str, store: S3Settings) -> bool:
    """Whether anything is stored under `uri`: files without a manifest are an upload that did not finish."""
    target = parse_s3_uri(uri)
    try:
        listing = store.client().list_objects_v2(Bucket=target.bucket, Prefix=target.key(""), MaxKeys=1)
    except Exception as exc:
        raise storage_error(exc, store, f"listing {target}", target.bucket) from None
    return listing.get("KeyCount", 0) > 0


def _record(champion_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """The champion's record, named by its manifest's digest (a folder published by hand has only that)."""
    path = champion_dir / RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {"digest": manifest.digest, **record}


def _new_record(decision: dict[str, Any], lineage: dict[str, Any]) -> dict[str, Any]:
    """promotion.json of the new champion: where it came from, why it won, and the champions before it."""
    previous = decision["champion"]
    history = []
    if previous is not None:
        history = [{k: v for k, v in previous.items() if k != "history"}, *previous.get("history", [])]
    return {
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": lineage,
        "decision": {k: decision[k] for k in DECIDED if k in decision},
        "history": history[:HISTORY],
    }


def _publish(challenger: str, uri: str, record: dict[str, Any], store: S3Settings) -> Manifest:
    """The challenger's files (linked, not copied: models are large) and its record, published at `uri`."""
    source = Path(challenger)
    with tempfile.TemporaryDirectory(prefix="cong-champion-") as staging:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            # A model fetched from the store carries its manifest, and a former champion its record.
            if path.is_file() and relative.as_posix() not in (MANIFEST_NAME, RECORD_FILE):
                link = Path(staging) / relative
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
        (Path(staging) / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return publish_dir(staging, uri, settings=store)


@stage_step
def step(
    config: dict, challenger: str, challenger_uri: str, decision: str, run_id: str = "", model_store: str = ""
) -> StepResult:
    """The champion/challenger gate: the challenger becomes the champion only when it wins often enough."""
    cfg = config_from_dict(config)
    s = cfg.promotion
    out = promote(
        follow(challenger, model_store),
        resolve(cfg.data.eval_prompts, cfg),
        Path(decision),
        s,
        rewards(cfg.stages.evaluate, cfg),
        cfg.champion_uri(),
        lineage(cfg, "promote", method=s.method, source=challenger_uri, run_id=run_id or None),
        cfg.data.max_eval_prompts,
    )
    reported = (
        "prompts",
        "win_rate",
        "win_rate_ci95_low",
        "win_rate_ci95_high",
        "challenger_reward_mean",
        "champion_reward_mean",
    )
    return {
        "metrics": {"promoted": float(out["promoted"]), "threshold": s.threshold}
        | {k: out[k] for k in reported if k in out},
        "metadata": {
            "decision": lineage(
                cfg,
                "promote",
                method=s.method,
                promoted=out["promoted"],
                reason=out["reason"],
                threshold=s.threshold,
                win_rate=out.get("win_rate"),
                champion=out.get("champion_uri"),
                previous_champion=(out.get("champion") or {}).get("digest"),
                published=out.get("published", {}).get("digest"),
            )
        },
    }
