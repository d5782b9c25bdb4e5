"""What the Kubeflow Pipelines backend does that kfp.local and our stand-ins would let pass, one rule per test.

kfp.local runs a pipeline the backend refuses, and a stand-in server answers what we wrote it to answer; so each rule
here was read in the backend's own code (kubeflow/pipelines at the tag named, `backend/src/...`), and each test checks
the project against that rule, not against kfp.local. Every test fails with its fix reverted.
"""

import pytest

from pipelines.cli import main


def cong(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("version", ["2.16.1", "2.15.0"])
def test_a_backend_older_than_2_17_is_refused_before_anything_is_uploaded(kfp, capsys, version):
    """2.17.0, backend/src/v2/driver/resolve.go (GetProducerTask): up to 2.16.1 a dsl.OneOf over artifacts resolves to
    its last selector, our Else placeholder, so every run fails at its first method branch (kubeflow/pipelines#13436,
    fixed by #13437, first in tag 2.17.0). The version is healthz's `tag_name` (backend/src/apiserver/main.go)."""
    kfp.version = version
    for command in (["submit"], ["schedule", "--cron", "0 3 * * *"]):
        code, out, err = cong(capsys, *command, "--preset", "tiny", "--host", kfp.url)
        assert code == 2, out
        assert f"is {version} (its healthz tag_name)" in err and "needs 2.17 or newer" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert [r["path"] for r in kfp.requests] == ["/apis/v2beta1/healthz"] * 2, "nothing uploaded, nothing started"


def test_a_2_17_backend_takes_the_run_and_an_unknown_version_is_warned_about(kfp, capsys):
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url)
    assert code == 0, err
    assert len(kfp.runs) == 1 and "warning" not in out

    kfp.version = "unknown"  # a backend image built without TAG_NAME
    code, out, err = cong(capsys, "submit", "--preset", "tiny", "--host", kfp.url)
    assert code == 0, err
    assert "warning: " in out and "reports version 'unknown'" in out and "needs 2.17 or newer" in out
    assert len(kfp.runs) == 2
