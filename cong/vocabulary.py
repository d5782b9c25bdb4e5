"""Every stage and method name of the pipeline, once. Everything else (config, pipeline, tests) derives from here.

A stage's name is also its module under cong/stages/ and its component's folder under components/, and its task
name in the compiled pipeline (with `-` for `_`): a contract with pipelines already submitted.
"""

# The pipeline's name in Kubeflow Pipelines, which KFP writes into every output's URI (cong.storage.runs).
PIPELINE_NAME = "cong"
# The DAG's stages; the config's `resources` and `scheduling` are keyed by these.
STAGES = (
    "plan",
    "fetch",
    "weak_align",
    "weak_sample",
    "cd_sample",
    "sft",
    "strong_sample",
    "pair",
    "dpo",
    "auxconf",
    "wspo",
    "icl_refine",
    "wsd",
    "alpha_sweep",
    "evaluate",
    "promote",
    "merge_shards",
    "lineage",
)
# Rows of the comparison table, in the order the report shows them. `weak_aligned` is the weak teacher and
# `strong_ceiling` the strong model trained on correct aligned responses: the two ends of the gap that a weak-to-strong
# method recovers (the performance gap recovered, PGR, of every row: cong.evaluation.stats.gap_recovered).
METHODS = (
    "base",
    "weak_aligned",
    "strong_ceiling",
    "weak_sft",
    "auxconf",
    "wspo",
    "icl_refine",
    "wsd",
    "wsd_sft",
    "cong_s",
    "cong",
)
# Methods whose row is a strong model trained from the weak models: the ones a champion/challenger gate can promote
# (the ceiling learns from reference responses, which a weak-to-strong run does not have).
MODEL_METHODS = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft", "cong_s", "cong")
# The methods whose strong model the sft stage trains.
SFT_METHODS = ("cong_s", "weak_sft", "icl_refine", "wsd_sft", "strong_ceiling")
# Methods whose loss compares weak and strong log-probabilities token by token.
SHARED_VOCAB_METHODS = ("wspo",)
# Trained rows besides ConG's, each a branch of the DAG that runs only when its method is chosen.
TRAINED_BRANCHES = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft", "strong_ceiling")
# Methods trained on one weak sample per train prompt (the weak labels).
WEAK_LABEL_METHODS = ("weak_sft", "auxconf", "icl_refine")

# Each training stage's inputs (required, optional), as `--input NAME=REF` of the training entry.
TRAINING_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "weak_align": (("pairs",), ()),
    "sft": (("data",), ()),
    "dpo": (("model", "pairs"), ()),
    "auxconf": (("data",), ()),
    "wspo": (("data",), ("weak_aligned",)),
}
TRAINING_STAGES = tuple(TRAINING_INPUTS)
# Stages that can train on more than one node (as a Kubeflow TrainJob, cong.cluster.trainjob).
MULTI_NODE_STAGES = ("sft", "dpo")
# Sampling stages split over pods, each shard a task, merged by merge_shards (cong.stages.shards).
SHARDED_STAGES = ("weak_sample", "cd_sample", "strong_sample")
# Stages whose pods are retried by default: training resumes from its last checkpoint, a sampling shard from its
# finished batches.
RESUMABLE_STAGES = (*TRAINING_STAGES, *SHARDED_STAGES)
# Stages that run no model: one core and no GPU unless the config says otherwise (fetch copies models file by file).
LIGHT_STAGES = ("plan", "fetch", "pair", "merge_shards", "lineage")
# Stages whose output is a model: in a shared store their artifact is a pointer to the weights.
MODEL_WRITERS = TRAINING_STAGES
# Stages that read a model made by the run (through a pointer in a shared store).
MODEL_READERS = (*SHARDED_STAGES, "dpo", "wspo", "wsd", "alpha_sweep", "evaluate", "promote")
# Stages that KFP's cache never answers: each reads what changes between runs with the same inputs (plan and fetch: the
# hub's current revisions and the store; promote: the champion; lineage: the run's own records). Every other stage is a
# function of its inputs, sampling included (each prompt's draws are seeded by its id, cong.decoding.sampler), so a
# cache hit is the same computation (evaluate too, unless an external judge scores it: pipelines.pipeline).
UNCACHED_STAGES = ("plan", "fetch", "promote", "lineage")

# The run's external inputs as (config section, field): each enters the DAG through a dsl.importer, as a Model
# (the models) or a Dataset (the prompt sets), and the stages read it from that artifact.
INPUT_FIELDS = (
    ("models", "weak_base"),
    ("models", "strong_base"),
    ("models", "weak_aligned"),
    ("data", "train_prompts"),
    ("data", "eval_prompts"),
)
MODEL_INPUTS = ("weak_base", "strong_base", "weak_aligned")
# The external inputs each stage reads, besides the aligned weak model: stages that read that one take it as
# weak_align's output, or as the imported `models.weak_aligned` when the config supplies it. A stage that reads an
# input not listed here fails, naming it (cong.stages.step.for_task).
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "plan": (),
    "fetch": (),
    "weak_align": ("weak_base", "train_prompts"),
    "weak_sample": ("weak_base", "train_prompts"),
    "cd_sample": ("weak_base", "train_prompts"),
    "merge_shards": ("train_prompts",),
    "sft": ("strong_base",),
    "strong_sample": ("train_prompts",),
    "pair": (),
    "dpo": (),
    "auxconf": ("strong_base",),
    "wspo": ("weak_base", "strong_base"),
    "icl_refine": ("strong_base",),
    "wsd": ("strong_base", "train_prompts", "eval_prompts"),
    "alpha_sweep": ("weak_base", "eval_prompts"),
    "evaluate": ("weak_base", "strong_base", "eval_prompts"),
    "promote": ("eval_prompts",),
    # It reads no input's content: it lists every input as the fetch task described it.
    "lineage": (),
}
# Each method as the paper names it (the Kubeflow UI's task names).
METHOD_TITLES = {
    "base": "Base",
    "weak_aligned": "Weak aligned",
    "strong_ceiling": "Strong ceiling",
    "weak_sft": "WeakSFT",
    "auxconf": "AuxConf",
    "wspo": "WSPO",
    "icl_refine": "ICL-Refine",
    "wsd": "WSD",
    "wsd_sft": "WSD-SFT",
    "cong_s": "ConG-S",
    "cong": "ConG",
}
