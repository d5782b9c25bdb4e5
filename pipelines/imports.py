"""The run's external inputs as artifacts: one dsl.importer per input the config names.

Each importer registers what the plan task said of its input (cong.inputs.describe) as the artifact's URI and
metadata, so the Kubeflow UI's graph and artifact pages start at the base models and prompt sets, with their
references and digests. An importer takes its URI from a pipeline input only (KFP's launcher resolves no task
output there), so each sits in a one-task sub-pipeline whose inputs are the plan's outputs.

With `artifacts.store: workspace`, a model is downloaded once into the run's workspace (`download_to_workspace`)
instead of by every pod that reads it.
"""
# No `from __future__ import annotations` here: kfp reads the pipeline signatures' annotations as types.

from kfp import dsl
from kfp.dsl import Dataset, Model

from cong.config import Config
from cong.inputs import IMPORT_KEYS, reference
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
    for _, field in INPUT_FIELDS:
        if reference(cfg, field) is not None:
            made[field] = _model_importer(field, cfg) if field in MODEL_INPUTS else _dataset_importer(field)
    return made


def _model_importer(field: str, cfg: Config):
    to_workspace = cfg.artifacts.store == "workspace"

    @dsl.pipeline(name=f"import-{field}", description=f"models.{field}, registered as a Model artifact")
    def import_model(uri: str, reference: str, digest: str, vocab_size: int) -> Model:
        metadata = {"reference": reference, "uri": uri, "digest": digest, "vocab_size": vocab_size}
        return dsl.importer(
            artifact_uri=uri, artifact_class=Model, metadata=metadata, download_to_workspace=to_workspace
        ).output

    return import_model


def _dataset_importer(field: str):
    @dsl.pipeline(name=f"import-{field}", description=f"data.{field}, registered as a Dataset artifact")
    def import_dataset(uri: str, reference: str, digest: str) -> Dataset:
        metadata = {"reference": reference, "uri": uri, "digest": digest}
        return dsl.importer(artifact_uri=uri, artifact_class=Dataset, metadata=metadata).output

    return import_dataset


def import_inputs(importers: dict, planned: dsl.PipelineTask) -> dict:
    """Each external input imported (`importers`) with the metadata the plan task (`planned`) gave it."""
    described = planned.outputs
    imported = {}
    for field, importer in importers.items():
        given = {key: described[f"{field}_{key}"] for key in IMPORT_KEYS}
        if field in MODEL_INPUTS:
            given["vocab_size"] = described[f"{field}_vocab_size"]
        imported[field] = importer(**given).set_display_name(DISPLAY_NAMES[field]).output
    return imported
