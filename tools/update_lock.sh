#!/usr/bin/env bash
# Re-resolves requirements.in, requirements_torch.in and requirements_mlflow.in
# into the hash-pinned requirements_lock.txt, requirements_torch_lock.txt and
# requirements_mlflow_lock.txt that @databazel_python, @databazel_torch and
# @databazel_mlflow install. Run after editing any of them; commit them all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q pip-tools
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements_lock.txt requirements.in
# PyTorch for torch_digits/ (@databazel_torch): its own lock, so that nothing of
# it enters the other trials. The CPU build's wheel comes from pip's find-links.
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements_torch_lock.txt requirements_torch.in
# The MLflow client for the `<search>.mlflow` export targets (@databazel_mlflow).
"$venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements_mlflow_lock.txt requirements_mlflow.in
