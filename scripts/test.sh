#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs what the tests need (a Python venv
# with moto[server]), then formatting, clippy and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/vpc-cni-tuner"
# A target directory outside the clone, so a fresh clone (CI) reuses earlier builds of the
# AWS SDK instead of compiling it again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
venv="${VPC_CNI_TUNER_VENV:-$cache/venv}"

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating Python venv at $venv"
  python3 -m venv "$venv"
fi
echo "==> installing test tools (tests/requirements.txt)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
export MOTO_SERVER="$venv/bin/moto_server"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked
if [ -n "${VPC_CNI_TUNER_E2E_KUBECONFIG:-}" ]; then
  echo "==> end-to-end against the cluster in $VPC_CNI_TUNER_E2E_KUBECONFIG"
  cargo test --locked --test e2e -- --ignored
fi
