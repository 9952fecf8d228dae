#!/bin/sh
# Every command the container image's stages run (deploy/Dockerfile), in one script, so that .ci/run runs them
# too, on a machine with no container daemon: what the image would do is tested even where it is not built.
#
#   sh deploy/image.sh wheels DIR        stage 1: every distribution's wheel and every dependency's, into DIR
#   sh deploy/image.sh install DIR VENV  stage 2: gesso-core[proxy] and the Bedrock plugins into a new venv,
#                                        from DIR alone (--no-index: nothing else is fetched)
#   sh deploy/image.sh check VENV        what the image's entry point and health check need, answered
set -eu
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DISTRIBUTIONS="gesso-core[proxy] gesso-bedrock gesso-bedrock-nova gesso-bedrock-titan gesso-bedrock-stability gesso-bedrock-nova2"
case "${1:-}" in
  wheels)
    cd "$(dirname "$0")/.."
    python3 -m pip wheel --quiet --wheel-dir "$2" "./core[proxy]" ./plugins/bedrock ./plugins/bedrock_nova \
      ./plugins/bedrock_titan ./plugins/bedrock_stability ./plugins/bedrock_nova2
    ;;
  install)
    python3 -m venv "$3"
    # shellcheck disable=SC2086  # (the distributions are words)
    "$3/bin/pip" install --quiet --no-index --find-links "$2" $DISTRIBUTIONS
    ;;
  check)
    "$2/bin/gesso" serve --help >/dev/null
    "$2/bin/gesso" plugins >/dev/null
    "$2/bin/python" -c "import gesso.proxy.app, gesso.proxy.ui, uvloop, httptools, asyncpg, aiosqlite, alembic"
    ;;
  *)
    echo "usage: sh deploy/image.sh wheels DIR | install DIR VENV | check VENV" >&2
    exit 2
    ;;
esac
