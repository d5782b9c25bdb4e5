"""The one place that names the image every component runs in (built from images/train/Dockerfile)."""

BASE_IMAGE = "cong-train:0.1.0"
