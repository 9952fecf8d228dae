"""The repository speaks for itself: no tracked file points at a file outside the repository (such as the
design notes a session read beside it) or at this project's tracker by number. A reader of a comment gets the
fact itself: an upstream issue is cited by its URL, a design decision by its reason."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = (".py", ".md", ".toml", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".ini", ".html", ".js", ".css", ".jinja")
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(?:bedrock_wire|reference|litellm_proxy_api|STYLE)\.md")
TRACKER = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
# an upstream project's issue, cited with its project or its address, is a fact a reader can check
UPSTREAM = re.compile(r"github\.com|litellm|pluggy|botocore|boto3|uvicorn|starlette|h11|httptools|openai", re.I)


def tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [n for n in out.splitlines() if n.endswith(TEXT) or n == ".ci/run"]
    return [ROOT / n for n in names if (ROOT / n).is_file() and not n.startswith("tests/fixtures/dists/")]


def test_no_file_names_a_file_outside_the_repository_or_a_tracker_number():
    found = []
    for path in tracked():
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line) or (TRACKER.search(line) and not UPSTREAM.search(line)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
