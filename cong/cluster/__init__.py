"""The cluster: multi-node training as Kubeflow TrainJobs (trainjob.py builds the manifest, kube.py talks to the
Kubernetes API, trainjob_run.py runs a stage that way), the Kubeflow Pipelines REST API (kfp_api.py), its runs as
`cong runs` and `cong lineage` show them (kfp_runs.py), and cron schedules (cron.py)."""
