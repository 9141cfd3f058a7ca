#!/usr/bin/env bash
# Installs keras_ersm with every extra (pinned by constraints.txt) and runs the
# whole test suite once per Keras backend. This is the README's test command and
# what CI runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -c constraints.txt -e ".[all,dev,docs]"
# Debian's chromium for the docs rendering test (skipped when unavailable).
bash scripts/install_chromium.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore NO_MKDOCS_2_WARNING=1
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
