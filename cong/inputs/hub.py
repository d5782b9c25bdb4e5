"""References to the Hugging Face Hub, checked within seconds before anything loads them.

transformers and datasets retry a hub they cannot reach for minutes before giving up (3 min 9 s measured for a paper
preset's models and prompt sets on a machine without hub access), and their last error fits no fix. `hub_problems`
asks the hub once per reference, all at once, with a short timeout and no retry, and names the cause with the fixes
that fit it: no hub reachable, an unknown or private id, a gated model, a model that is not one.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from cong.inputs.refs import HUB_ID, hf_prompts_file, pinned

# The hub answers a metadata request in well under a second; a machine that cannot reach it learns so in this time.
PROBE_TIMEOUT_S = 5.0


def hub_reference(ref: str, is_model: bool) -> tuple[str, str] | None:
    """("model" or "dataset", repo id) when `ref` names the hub: `hf:org/name[:split]` a dataset whose prompts are
    not cached yet; for a model, `org/name[@revision]` that is no folder here (transformers takes it for a hub id
    too); None for anything else."""
    if ref.startswith("hf:"):
        name = ref.removeprefix("hf:").partition(":")[0]
        return None if hf_prompts_file(ref).is_file() else ("dataset", name)
    repo, _ = pinned(ref)
    if not is_model or ref.startswith(("/", ".", "~")) or ":" in ref or Path(ref).exists() or not HUB_ID.match(repo):
        return None
    return ("model", ref)


def hub_problems(models: list[str], files: list[str]) -> dict[str, str]:
    """What stops this machine from loading each hub reference among the `models` and prompt `files` (references
    it can load, and those not on the hub, are left out)."""
    found: dict[str, str] = {}
    refs = [(ref, True) for ref in models] + [(ref, False) for ref in files]
    probes = {ref: kind_id for ref, is_model in refs if (kind_id := hub_reference(ref, is_model))}

    def probe(ref: str, kind: str, repo_id: str) -> None:
        problem = _problem(kind, repo_id)
        if problem:
            found[ref] = problem

    # Daemon threads, so that a name lookup that hangs past its timeout cannot hold the process.
    threads = {ref: threading.Thread(target=probe, args=(ref, *probes[ref]), daemon=True) for ref in probes}
    for thread in threads.values():
        thread.start()
    for ref, thread in threads.items():
        thread.join(PROBE_TIMEOUT_S + 1)
        if thread.is_alive():
            found[ref] = _unreachable(*probes[ref], f"no answer within {PROBE_TIMEOUT_S:.0f} s")
    return found


def _problem(kind: str, ref: str) -> str | None:
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = pinned(ref)
    if constants.HF_HUB_OFFLINE:
        if kind == "dataset" or _cached(ref):
            return None  # datasets looks in its own cache, and says so when the dataset is not there
        return (
            f"HF_HUB_OFFLINE is set and this machine's Hugging Face cache ({constants.HF_HUB_CACHE}) has no copy of "
            f"it. Fix: give a local model folder or an s3:// URI; or download it once where the hub is reachable "
            f"(`{_download(ref)}`, with HF_HOME naming this cache); or unset HF_HUB_OFFLINE."
        )
    try:
        if kind == "model":
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=revision), timeout=PROBE_TIMEOUT_S)
        else:
            HfApi().dataset_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except RevisionNotFoundError:
        return (
            f"{repo_id} on the hub has no revision {revision!r}. Fix: after the @, a branch, tag or commit it has "
            f"({constants.ENDPOINT}/{repo_id}/commits/main lists the commits)."
        )
    except GatedRepoError:
        return (
            f"{repo_id} is gated on the hub. Fix: accept its conditions at {constants.ENDPOINT}/{repo_id} while "
            f"logged in, then set HF_TOKEN to a token of that account; or give a local copy (a folder or an s3:// URI)."
        )
    except RepositoryNotFoundError:
        return (
            f"no folder {repo_id} here, and the hub ({constants.ENDPOINT}) has no {kind} {repo_id}, or it is "
            f"private and no token here grants it. Fix: a local folder's path, or the hub id as on its page "
            f"(org/name); for a private {kind}, set HF_TOKEN."
            if kind == "model"
            else f"the hub ({constants.ENDPOINT}) has no dataset {repo_id}, or it is private and no token here "
            f"grants it. Fix: the id as on its page (org/name); for a private dataset, set HF_TOKEN."
        )
    except RemoteEntryNotFoundError:
        return f"{repo_id} on the hub has no config.json: it is not a transformers model. Fix: name a model repository."
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no status"
        return _unreachable(kind, ref, f"it answered {status}")
    except Exception as exc:  # connection refused, a name that does not resolve, a timeout: the hub's client has many
        return _unreachable(kind, ref, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return None


def _cached(ref: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = pinned(ref)
    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def _download(ref: str) -> str:
    repo_id, revision = pinned(ref)
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def _unreachable(kind: str, ref: str, reason: str) -> str:
    from huggingface_hub import constants

    if kind == "dataset":
        local = "give a local prompt file (JSONL) or an s3:// URI of one"
        cache = ""
    elif _cached(ref):
        local = "give a local model folder or an s3:// URI"
        commit = cached_commit(ref)
        pin = f" (pin the copy it has: {pinned(ref)[0]}@{commit})" if commit else ""
        cache = f"; or set HF_HUB_OFFLINE=1: this machine's cache ({constants.HF_HUB_CACHE}) has a copy{pin}"
    else:
        local = "give a local model folder or an s3:// URI"
        cache = f"; or download it once where the hub is reachable (`{_download(ref)}`), then set HF_HUB_OFFLINE=1"
    return (
        f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached from here ({reason}). Fix: {local}; or point "
        f"HF_ENDPOINT at a mirror of the hub{cache}."
    )


def hub_revision(ref: str) -> str | None:
    """The commit a hub model reference stands for (`org/name`, or pinned `org/name@revision`): the hub's answer,
    or offline the one this machine's cache holds (None when neither says)."""
    from huggingface_hub import HfApi, constants

    repo_id, revision = pinned(ref)
    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S).sha
        except Exception:  # the run's check (hub_problems) has named what stops the hub; the digest is then unknown
            return None
    return cached_commit(ref)


def cached_commit(ref: str) -> str | None:
    """The commit of a hub model that this machine's Hugging Face cache holds for its revision (`main` unless
    pinned); a pinned commit is its own."""
    from huggingface_hub import constants

    repo_id, revision = pinned(ref)
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    refs = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    return refs.read_text().strip() if refs.is_file() else None
