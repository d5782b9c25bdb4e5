from kfp import dsl
from kfp.dsl import Artifact, Dataset, Model, Output

from components.image import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def not_selected(method: str, model: Output[Model], data: Output[Dataset], points: Output[Artifact]):
    """Placeholder outputs of a branch the run's methods leave out (dsl.OneOf needs one from every branch).

    Args:
        method: the branch that did not run.
        model: an empty Model artifact marked `not_selected`.
        data: an empty Dataset artifact marked `not_selected`.
        points: an empty Artifact marked `not_selected`.
    """
    from cong.stages import not_selected

    result = not_selected.step(method, model.path, data.path, points.path)
    for artifact in (model, data, points):
        artifact.metadata.update(result["metadata"])
