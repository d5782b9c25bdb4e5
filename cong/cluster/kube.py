"""The Kubernetes side of a TrainJob: create or adopt it, follow its rank-0 log, wait for its condition, delete it
(the kubernetes client, with the permissions cong.cluster.trainjob.NEEDED lists)."""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cong.cluster.trainjob import (
    API_VERSION,
    CONTAINER,
    GROUP,
    INDEX_LABEL,
    JOBSET_LABEL,
    NEEDED,
    PLURAL,
    RBAC,
    REPLICATED_JOB_LABEL,
    RUN_ANNOTATION,
    RUNTIMES,
    SERVICE_ACCOUNT_NAMESPACE,
    STAGE,
    VERSION,
)
from cong.errors import CongError
from cong.progress import log


def _condition(job: dict[str, Any]) -> tuple[str, str] | None:
    """("Complete" | "Failed", "reason: message") once the job has ended, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            detail = ": ".join(p for p in (condition.get("reason"), condition.get("message")) if p)
            return condition["type"], detail or "no reason given"
    return None


def _pod_summary(pods: list[dict[str, Any]]) -> str:
    """Pods by phase, with why containers wait (e.g. `2 Running, 1 Pending (ImagePullBackOff)`)."""
    counts: collections.Counter[str] = collections.Counter()
    for pod in pods:
        status = pod.get("status") or {}
        states = [(c.get("state") or {}).get("waiting") or {} for c in status.get("containerStatuses") or []]
        reasons = sorted({state["reason"] for state in states if state.get("reason")})
        counts[status.get("phase", "Unknown") + (f" ({', '.join(reasons)})" if reasons else "")] += 1
    return ", ".join(f"{count} {what}" for what, count in sorted(counts.items())) or "none yet"


class Cluster:
    """The Kubernetes API calls a TrainJob needs, with errors turned into messages a user can act on."""

    def __init__(self, api_client: Any, namespace: str, poll_s: float = 10.0):
        from kubernetes import client

        self.api_client, self.namespace, self.poll_s = api_client, namespace, poll_s
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, poll_s: float = 10.0) -> Cluster:
        """In a pod: its service account and namespace; elsewhere: the kubeconfig's current context."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except config.ConfigException:
            try:
                config.load_kube_config()
                _, context = config.list_kube_config_contexts()
            except (config.ConfigException, OSError) as exc:
                raise CongError(
                    f"no Kubernetes cluster to run a TrainJob on ({exc}). A training stage with nodes > 1 runs as a "
                    "Kubeflow TrainJob, which needs a cluster: run it with nodes: 1 here."
                ) from None
            namespace = context["context"].get("namespace", "default")
        return cls(client.ApiClient(), namespace, poll_s)

    def prerequisite_problems(self) -> list[str]:
        """What keeps this namespace from running a TrainJob: the TrainJob API missing (Kubeflow Trainer not
        installed), or a verb the service account lacks. Asked of the API server itself (API discovery, and a
        SelfSubjectAccessReview per verb), which every authenticated account may do."""
        from kubernetes import client

        try:
            self.custom.get_api_resources(GROUP, VERSION)
        except Exception as exc:
            return [str(self._error(exc, f"looking up the trainjob API {API_VERSION}"))]
        authorization = client.AuthorizationV1Api(self.api_client)
        denied = []
        for group, resource, verbs in NEEDED:
            name, _, subresource = resource.partition("/")
            for verb in verbs:
                attributes = client.V1ResourceAttributes(
                    group=group, resource=name, subresource=subresource or None, verb=verb, namespace=self.namespace
                )
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                )
                doing = f"asking whether this service account may {verb} {resource}"
                answer = self._call(doing, authorization.create_self_subject_access_review, review)
                if not answer.status.allowed:
                    denied.append(f"{verb} {resource}")
        if not denied:
            return []
        return [
            f"the service account may not {', '.join(denied)} in namespace {self.namespace}, which a training stage "
            f"with nodes > 1 needs. Bind it a Role with: {RBAC} (manifests/base/role.yaml)."
        ]

    def _error(self, exc: Exception, doing: str) -> CongError:
        from kubernetes.client.exceptions import ApiException

        host = self.api_client.configuration.host
        if not isinstance(exc, ApiException):
            return CongError(f"{doing}: cannot reach the Kubernetes API at {host} ({type(exc).__name__}: {exc}).")
        try:
            message = json.loads(exc.body).get("message") or exc.reason
        except (TypeError, ValueError):
            message = exc.body or exc.reason
        if exc.status in (401, 403):
            return CongError(
                f"{doing}: the Kubernetes API refused ({exc.status} {exc.reason}: {message}). The pipeline's service "
                f"account needs a Role in namespace {self.namespace} with: {RBAC}."
            )
        if exc.status == 404 and "trainjob" in doing:
            return CongError(
                f"{doing}: {message}. Is Kubeflow Trainer v2 installed (the TrainJob API {API_VERSION})? Install it, "
                "or train this stage on one node (nodes: 1)."
            )
        return CongError(f"{doing}: the Kubernetes API answered {exc.status} {exc.reason}: {message}")

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._error(exc, doing) from None

    def run_owner(self) -> dict[str, str] | None:
        """An owner reference to the run's Argo Workflow, read off this task's own pod, so that Kubernetes' garbage
        collector deletes what the task creates with the run's other objects. Argo makes the Workflow its pods'
        controller (argo-workflows v4.0.5, workflow/controller/workflowpod.go) and KFP gives every executor its pod's
        name (kubeflow/pipelines 2.17.0, backend/src/v2/compiler/argocompiler/common.go, KFP_POD_NAME). None
        outside a KFP pod."""
        pod_name = os.environ.get("KFP_POD_NAME")
        if not pod_name:
            return None
        pod = self._call(
            f"reading this task's pod {self.namespace}/{pod_name}",
            self.core.read_namespaced_pod,
            pod_name,
            self.namespace,
        )
        for owner in pod.metadata.owner_references or []:
            if owner.kind == "Workflow" and owner.api_version.startswith("argoproj.io/"):
                return {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid}
        return None

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc, f"reading trainjob {self.namespace}/{name}") from None
        except Exception as exc:
            raise self._error(exc, f"reading trainjob {self.namespace}/{name}") from None

    def create_or_adopt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the job; if it exists (a retry of the same task), adopt it, or replace it when it failed."""
        from kubernetes.client.exceptions import ApiException

        name, run_id = body["metadata"]["name"], body["metadata"]["annotations"][RUN_ANNOTATION]
        doing = f"creating trainjob {self.namespace}/{name}"
        try:
            job = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            log(STAGE, f"created {name} in {self.namespace}")
            return job
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, doing) from None
        except Exception as exc:
            raise self._error(exc, doing) from None
        existing = self.get(name)
        if existing is None:  # deleted between our create and get: try once more
            return self._call(
                doing, self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body
            )
        owner = (existing.get("metadata", {}).get("annotations") or {}).get(RUN_ANNOTATION)
        if owner != run_id:
            raise CongError(
                f"a trainjob named {name} already exists in {self.namespace} and belongs to run {owner!r}, not to this "
                f"run ({run_id}). Delete it (kubectl delete trainjob {name} -n {self.namespace}) and retry."
            )
        state = _condition(existing)
        if state and state[0] == "Failed":
            log(STAGE, f"{name} exists from an earlier attempt and failed ({state[1]}); replacing it")
            self.delete(name, wait=True)
            return self._call(
                doing, self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body
            )
        log(STAGE, f"{name} exists from an earlier attempt of this task; following it")
        return existing

    def delete(self, name: str, wait: bool = False) -> bool:
        """Delete the job and what it made (foreground); False if it was not there. `wait`: until it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._error(exc, f"deleting trainjob {self.namespace}/{name}") from None
        except Exception as exc:
            raise self._error(exc, f"deleting trainjob {self.namespace}/{name}") from None
        log(STAGE, f"deleted {name}")
        while wait and self.get(name) is not None:
            time.sleep(self.poll_s)
        return True

    def pods(self, name: str) -> list[dict[str, Any]]:
        found = self._call(
            f"listing the pods of trainjob {self.namespace}/{name}",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{JOBSET_LABEL}={name}",
        )
        return [self.api_client.sanitize_for_serialization(pod) for pod in found.items]

    def wait(self, name: str, runtime: str) -> None:
        """Poll the job until it ends, streaming its rank-0 log meanwhile; a failure is a CongError."""
        followed: set[str] = set()
        streams: list[threading.Thread] = []
        shown = ""
        while True:
            job = self.get(name)
            if job is None:
                raise CongError(f"trainjob {self.namespace}/{name} disappeared while this task waited for it.")
            pods = self.pods(name)
            if (summary := _pod_summary(pods)) != shown:
                log(STAGE, f"{name}: pods {summary}")
                shown = summary
            for pod in pods:
                if self._shows_progress(pod, runtime) and pod["metadata"]["uid"] not in followed:
                    if pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed"):
                        followed.add(pod["metadata"]["uid"])
                        thread = threading.Thread(target=self._follow, args=(pod["metadata"]["name"],), daemon=True)
                        thread.start()
                        streams.append(thread)
            state = _condition(job)
            if state is not None:
                for thread in streams:
                    thread.join(timeout=30)
                if state[0] == "Failed":
                    failed = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Failed"]
                    where = (
                        f" Failed pods: {', '.join(failed)} (kubectl logs -n {self.namespace} POD -c {CONTAINER})."
                        if failed
                        else ""
                    )
                    raise CongError(f"trainjob {self.namespace}/{name} failed: {state[1]}.{where}")
                log(STAGE, f"{name} completed: {state[1]}")
                return
            time.sleep(self.poll_s)

    @staticmethod
    def _shows_progress(pod: dict[str, Any], runtime: str) -> bool:
        labels = pod["metadata"].get("labels") or {}
        return labels.get(REPLICATED_JOB_LABEL) == RUNTIMES[runtime].log_job and labels.get(INDEX_LABEL) == "0"

    def _follow(self, pod: str) -> None:
        """Print the pod's log line by line as it comes, until the container ends."""
        try:
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, follow=True, _preload_content=False
            )
            pending = b""
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    log(pod, line.decode(errors="replace"))
            if pending:
                log(pod, pending.decode(errors="replace"))
        except Exception as exc:  # a lost log stream must not fail the training it shows
            log(STAGE, f"stopped following the log of {pod}: {self._error(exc, 'reading its log')}")
