from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sft(config: dict, data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Stage I (ConG-S): supervised fine-tuning of the strong base model, loss on response tokens only.

    Args:
        config: the run's configuration; `stages.sft.train` holds the trainer settings.
        data: (prompt, response) rows to imitate.
        model: the fine-tuned strong model (Hugging Face folder).
        metrics: training loss and steps.
    """
    from cong import steps

    result = steps.sft(config, data=data.path, model=model.path)
    steps.record(result, metrics, model=model)
