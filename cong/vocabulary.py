"""Every stage and method name of the pipeline, once. Everything else (config, pipeline, tests) derives from here.

A stage's name is also its module under cong/stages/ and its component's folder under components/, and its task
name in the compiled pipeline (with `-` for `_`): a contract with pipelines already submitted.
"""

# The DAG's stages; the config's `resources` and `scheduling` are keyed by these.
STAGES = (
    "plan",
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
)
# Rows of the comparison table, in the order the report shows them. `weak_aligned` is the weak teacher.
METHODS = ("base", "weak_aligned", "weak_sft", "auxconf", "wspo", "icl_refine", "wsd", "wsd_sft", "cong_s", "cong")
# Methods whose row is a trained strong model: the ones a champion/challenger gate can promote.
MODEL_METHODS = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft", "cong_s", "cong")
# The methods whose strong model the sft stage trains.
SFT_METHODS = ("cong_s", "weak_sft", "icl_refine", "wsd_sft")
# Methods whose loss compares weak and strong log-probabilities token by token.
SHARED_VOCAB_METHODS = ("wspo",)
# Trained baselines, each a branch of the DAG that runs only when its method is chosen.
TRAINED_BRANCHES = ("weak_sft", "auxconf", "wspo", "icl_refine", "wsd_sft")
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
# Stages that never touch a model: one core and no GPU unless the config says otherwise.
LIGHT_STAGES = ("plan", "pair", "merge_shards")
# Stages whose output is a model: in a shared store their artifact is a pointer to the weights.
MODEL_WRITERS = TRAINING_STAGES
# Stages that read a model made by the run (through a pointer in a shared store).
MODEL_READERS = (*SHARDED_STAGES, "dpo", "wspo", "wsd", "alpha_sweep", "evaluate", "promote")
# Stages that draw with temperature: a cached result would be a stale draw, not the same computation (promote also
# reads the champion, which changes between runs).
SAMPLING_STAGES = ("weak_align", *SHARDED_STAGES, "alpha_sweep", "evaluate", "promote")
