#!/usr/bin/env bash
# Install the project with its test extras and run the fast test suite.
# pytest exit code 5 ("no tests collected") is a failure here, like any other non-zero code.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
# The Khronos glTF validator (npm) checks every GLB the tests write.
if [ ! -d tests/js/node_modules/gltf-validator ]; then
  npm install --silent --no-audit --no-fund --prefix tests/js >/dev/null
fi
ruff check .
# The torch-free runtime install: fresh venv, pip install ., size <= 600 MiB, python -m facenet3d.infer (about a minute).
python scripts/check_runtime_install.py
python -m pytest -q "$@"
