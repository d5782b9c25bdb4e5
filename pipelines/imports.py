"""The run's external inputs as artifacts: one dsl.importer per input the config names.

Each importer registers the copy of its input that the `fetch` task put into the run's store (cong.inputs.fetch), so
the Kubeflow UI's graph starts at the base models and prompt sets. An importer takes its URI from a pipeline input only
(KFP's launcher resolves no task output there: backend/src/v2/component/importer_launcher.go), so each sits in a
one-task sub-pipeline whose input is the fetch task's output. Its metadata is constant: the backend copies importer
metadata verbatim and resolves no placeholder in it (importer_launcher.go), so the inputs' references and digests are
the fetch task's `described` output, where they are resolved.

With `artifacts.store: workspace`, a model is downloaded once into the run's workspace (`download_to_workspace`)
instead of by every pod that reads it.
"""
# No `from __future__ import annotations` here: kfp reads the pipeline signatures' annotations as types.

from kfp import dsl
from kfp.dsl import Dataset, Model

from cong.config import Config
from cong.inputs.fetch import reference
from cong.vocabulary import INPUT_FIELDS, MODEL_INPUTS

# What a user sees of each input in the run's graph.
DISPLAY_NAMES = {
    "weak_base": "weak base model",
    "strong_base": "strong base model",
    "weak_aligned": "aligned weak model (given)",
    "train_prompts": "training prompts",
    "eval_prompts": "held-out prompts",
}


def importers(cfg: Config) -> dict:
    """A sub-pipeline `import-<input>` per external input the config names. Built outside the run's pipeline
    (kfp allows no pipeline definition inside another's); `import_inputs` calls them."""
    made = {}
    for section, field in INPUT_FIELDS:
        if reference(cfg, field) is not None:
            made[field] = _importer(section, field, cfg)
    return made


# The same in every run: an importer with reimport=False registers the artifact it registered before when URI and
# metadata match (backend/src/v2/metadata/client.go, FindMatchedArtifact), so unchanged inputs keep their ML Metadata
# ids, which the cache keys of the stages that read them hold.
def _metadata(section: str, field: str) -> dict:
    return {"input": f"{section}.{field}", "described_by": "the fetch task's `described` output"}


def _importer(section: str, field: str, cfg: Config):
    metadata = _metadata(section, field)
    if field in MODEL_INPUTS:
        to_workspace = cfg.artifacts.store == "workspace"

        @dsl.pipeline(name=f"import-{field}", description=f"{section}.{field}, registered as a Model artifact")
        def import_model(uri: str) -> Model:
            return dsl.importer(
                artifact_uri=uri, artifact_class=Model, metadata=metadata, download_to_workspace=to_workspace
            ).output

        return import_model

    @dsl.pipeline(name=f"import-{field}", description=f"{section}.{field}, registered as a Dataset artifact")
    def import_dataset(uri: str) -> Dataset:
        return dsl.importer(artifact_uri=uri, artifact_class=Dataset, metadata=metadata).output

    return import_dataset


def import_inputs(importers: dict, fetched: dsl.PipelineTask) -> dict:
    """Each external input imported (`importers`) from the URI the fetch task (`fetched`) gave it."""
    imported = {}
    for field, importer in importers.items():
        task = importer(uri=fetched.outputs[f"{field}_uri"]).set_display_name(DISPLAY_NAMES[field])
        imported[field] = task.output
    return imported
