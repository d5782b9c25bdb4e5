"""group_done: the last task of a group of the DAG (a method's branch, a sampling shard), never answered by KFP's cache.

KFP's backend marks a group complete only when one of its tasks finishes through the launcher after all the others
(kubeflow/pipelines 2.17.0, backend/src/v2/metadata/client.go UpdateDAGExecutionsState, called only from
component/launcher_v2.go); a task the cache answers never reaches the launcher, and a dsl.OneOf takes only a complete
branch (driver/resolve.go, GetProducerTask). This task, after every other task of its group, completes the group.
"""

from __future__ import annotations

from cong.progress import log


def step(group: str) -> None:
    """Say that the group's tasks have finished; running at all is this task's work."""
    log("plan", f"{group}: every task of the group has finished")
