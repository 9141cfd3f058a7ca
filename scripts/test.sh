#!/usr/bin/env bash
# The README's test command and what CI runs:
#
#   bash scripts/test.sh [pytest arguments]
#
# installs keras_ersm with the `all`, `dev` and `docs` extras (pinned by
# constraints.txt) into the active Python (use a virtual environment),
# installs Debian's chromium with apt-get for the docs rendering test when
# root or passwordless sudo allows it (scripts/install_chromium.sh), builds
# the docs with `mkdocs build --strict`, then runs the whole test suite once
# per Keras backend (jax, tensorflow, torch). Extra arguments go to pytest.
#
#   bash scripts/test.sh --fast [pytest arguments]
#
# is the development loop: no installs, no docs build, the tests not marked
# `slow`, one backend (KERAS_BACKEND, default jax), stopping at the first
# failure. Run the full command before a merge.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore NO_MKDOCS_2_WARNING=1

if [ "${1:-}" = "--fast" ]; then
  shift
  backend=${KERAS_BACKEND:-jax}
  echo "=== KERAS_BACKEND=$backend, not slow ==="
  exec env KERAS_BACKEND="$backend" python -m pytest -q -p no:cacheprovider \
    -m "not slow" -x "$@"
fi

if ! python -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  echo "test.sh: no virtual environment is active; installing into $(python -c 'import sys; print(sys.prefix)')" >&2
fi
python -m pip install -q -c constraints.txt -e ".[all,dev,docs]"
bash scripts/install_chromium.sh
echo "=== mkdocs build --strict ==="
site_dir=$(mktemp -d)
python -m mkdocs build --strict -q -d "$site_dir"
rm -rf "$site_dir"
status=0
for backend in jax tensorflow torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@" || status=1
done
exit $status
