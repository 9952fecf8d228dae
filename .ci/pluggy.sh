#!/usr/bin/env bash
# The plugin tests on the lowest and on the newest pluggy that core/pyproject.toml allows ("pluggy>=LOW,<HIGH"):
# for each, a fresh venv with every distribution of this repository installed (not editable: the tests import
# what pip installed) and that pluggy, then the tests that register plugins and call hooks. The venvs are removed
# however the script ends; it exits non-zero when an install or a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

range=$(grep -oE '"pluggy>=[0-9.]+,<[0-9.]+"' core/pyproject.toml | tr -d '"')
low=$(sed -E 's/^pluggy>=([0-9.]+),<.*/\1/' <<<"$range")
[[ -n "$range" && -n "$low" ]] || { echo "core/pyproject.toml states no pluggy range pluggy>=LOW,<HIGH"; exit 1; }

# the tests that register plugins and call hooks: registration, routing, wrappers, failing hooks (SDK and proxy),
# entry points of installed distributions, image stores, and the families' routing contract
tests=(tests/test_plugins.py tests/test_hook_failures.py tests/test_entry_points.py tests/test_wrappers.py
       tests/test_image_store.py "tests/test_contracts.py::TestNovaContract::test_stage_hooks_reach_only_own_models"
       "tests/test_contracts.py::TestTitanContract::test_stage_hooks_reach_only_own_models"
       "tests/test_contracts.py::TestStabilityContract::test_stage_hooks_reach_only_own_models")
# what they need besides the distributions: hatchling builds the entry-point tests' fixture distributions, openai
# drives the proxy, moto serves S3 for the image stores
tools=(pytest pytest-timeout hypothesis "hatchling>=1.18" "openai>=1.40" "moto[server]>=5" "trustme>=1.1")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # run <label> <pluggy requirement>
  local venv="$work/$1"
  echo "== pluggy $1 ($2)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ./core[proxy] ./plugins/bedrock ./plugins/bedrock_nova ./plugins/bedrock_titan \
    ./plugins/bedrock_stability "${tools[@]}" "$2"
  "$venv/bin/python" -c "import pluggy; print('pluggy', pluggy.__version__)"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
  rm -rf "$venv"
}

run lowest "pluggy==$low"
run newest "$range"
