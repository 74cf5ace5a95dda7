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
export VPC_CNI_TUNER_PYTHON="$venv/bin/python"

# promtool (Debian's prometheus package) checks the chart's alert rules and runs their unit
# tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian package prometheus)"
  sudo_=""
  if [ "$(id -u)" -ne 0 ]; then sudo_="sudo"; fi
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# A real kube-apiserver and etcd for the end-to-end tests (tests/e2e.rs), in envtest's layout.
# Elsewhere: KUBEBUILDER_ASSETS="$(setup-envtest use -p path 1.36.x)". Without assets the e2e
# tests skip, saying so; with CI=true (.ci/run) they fail instead.
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x ../shared/k8s/assets ]; then
  echo "==> kube-apiserver and etcd from ../shared/k8s/assets"
  KUBEBUILDER_ASSETS="$(../shared/k8s/assets)"
  export KUBEBUILDER_ASSETS
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> the pure core builds without Kubernetes and AWS (--no-default-features)"
cargo check --locked --no-default-features --lib
echo "==> promtool: the chart's alert rules and their unit tests"
promtool check rules charts/vpc-cni-tuner/files/prometheus-rules.yaml
promtool test rules tests/fixtures/prometheus/rules_test.yaml
echo "==> cargo test"
cargo test --locked

# A short fuzz run of the user-data and image-tag parsers (cargo-fuzz on the project's own
# toolchain; RUSTC_BOOTSTRAP lets stable take libFuzzer's flags). Longer runs: README.
fuzz_seconds="${VPC_CNI_TUNER_FUZZ_SECONDS:-15}"
if [ "$fuzz_seconds" -gt 0 ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
  fi
  for target in user_data image_tag; do
    echo "==> fuzz $target for ${fuzz_seconds}s"
    log="$cache/fuzz-$target.log"
    mkdir -p "$cache"
    # The committed seeds (fuzz/seeds/TARGET: folded MIME headers, CRLF documents) start the
    # run next to the generated corpus (fuzz/corpus, not committed).
    corpora=("corpus/$target")
    if [ -d "fuzz/seeds/$target" ]; then corpora+=("seeds/$target"); fi
    mkdir -p "fuzz/corpus/$target"
    if ! (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$cache/fuzz-target" \
        cargo fuzz run "$target" "${corpora[@]}" -- -max_total_time="$fuzz_seconds" >"$log" 2>&1); then
      tail -n 60 "$log"
      echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/"
      exit 1
    fi
    grep -E '^Done' "$log" || true
  done
fi
