#!/usr/bin/env bash
# The docs site: install requirements-docs.txt into its own venv (.venv-docs, git-ignored, kept between runs)
# and build docs/ with `mkdocs build --strict` into a throwaway directory: a broken link, anchor, snippet or
# a page missing from the nav fails it. Prints how long the build took.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off NO_MKDOCS_2_WARNING=1

if [ ! -x .venv-docs/bin/mkdocs ]; then
  python3 -m venv .venv-docs
fi
.venv-docs/bin/pip install -q -r requirements-docs.txt

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
start=$(date +%s.%N)
.venv-docs/bin/mkdocs build --strict --site-dir "$site"
end=$(date +%s.%N)
pages=$(find "$site" -name index.html | wc -l)
python3 -c "import sys; print(f'docs: mkdocs build --strict: {int(sys.argv[3])} pages in {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$start" "$end" "$pages"
