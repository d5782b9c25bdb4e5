"""Storage: S3-compatible stores (s3.py), model and data folders with manifests (folders.py), the embedded SeaweedFS
server (embedded.py), a run's inputs and outputs (publish.py), how models pass between stages (handoff.py), a run's
artifact lineage (lineage.py), the local cache (cache.py) and the storage benchmark (bench.py)."""
