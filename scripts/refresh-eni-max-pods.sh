#!/usr/bin/env bash
# Refreshes the committed copy of amazon-vpc-cni-k8s misc/eni-max-pods.txt that
# tests/instance_table.rs checks the instance catalog against, and records where it came from.
# Maintainers run it (it needs GitHub); CI only reads the copy.
#
#   scripts/refresh-eni-max-pods.sh [REF]     REF: a branch, tag or commit (default master)
#
# Then run `cargo test --test instance_table`: a disagreement names the type and the fix
# (regenerate the table, README "Instance data", or add a reviewed override).
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:-master}"
repo=aws/amazon-vpc-cni-k8s
dir=tests/fixtures/upstream
commit="$(curl -fsSL "https://api.github.com/repos/$repo/commits/$ref" \
  | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["sha"], c["commit"]["committer"]["date"][:10])')"
sha="${commit% *}"
date="${commit#* }"
curl -fsSL "https://raw.githubusercontent.com/$repo/$sha/misc/eni-max-pods.txt" -o "$dir/eni-max-pods.txt"
cat > "$dir/eni-max-pods.source" <<SOURCE
repository: https://github.com/$repo
path: misc/eni-max-pods.txt
commit: $sha
commit-date: $date
copied: $(date -u +%Y-%m-%d)
SOURCE
echo "eni-max-pods.txt from $repo@$sha ($date)"
