"""The one place that names the image every component runs in (built from images/train/Dockerfile).

`make image` reads IMAGE from this file and tags the build with the package version, so the compiled pipeline
names exactly the image it builds. To run on a cluster, set IMAGE to a repository your nodes can pull from
(e.g. registry.example.com/ml/cong-train), then `make image`, push it, and `make compile`.
"""

from cong import __version__

IMAGE = "cong-train"
BASE_IMAGE = f"{IMAGE}:{__version__}"
# The image `make image` builds where no registry answers, for `cong run --local --runner container`.
LOCAL_IMAGE = f"{BASE_IMAGE}-cpu"
