"""The pipeline's stages, each a plain function from input paths/ids to output paths plus metrics.

Names are the pipeline's vocabulary: weak_align, cd_sample, sft, strong_sample, pair, dpo, evaluate.
"""
