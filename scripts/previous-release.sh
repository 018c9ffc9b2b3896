#!/usr/bin/env bash
# Builds the previous release, the one users upgrade from, into
# .cache/releases/<tag>/ (binary and .deb) for the upgrade tests, once.
# The release is named here by tag and commit: a clone without tags still
# has the commit, and a tag that moved is refused.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=v0.1.0
COMMIT=b7f91ddb1dc1668c2fa1c93dba8276aec1b9068b

out=.cache/releases/$TAG
if [ -x "$out/k8s-master" ] && ls "$out"/k8s-master_*_amd64.deb >/dev/null 2>&1; then
  echo "$out"
  exit 0
fi
if tagged=$(git rev-parse -q --verify "refs/tags/$TAG^{commit}"); then
  if [ "$tagged" != "$COMMIT" ]; then
    echo "tag $TAG points at $tagged, not the release commit $COMMIT; fix the tag (git tag -f $TAG $COMMIT)" >&2
    exit 1
  fi
fi
if ! git cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  echo "commit $COMMIT ($TAG) is not in this clone; fetch the full history (git fetch --unshallow --tags)" >&2
  exit 1
fi

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
echo "building $TAG ($COMMIT) into $out" >&2
git archive "$COMMIT" | tar -x -C "$src"
# No .git in the archive: the version is given, as a release build has it.
make -C "$src" build package VERSION="$TAG" >&2
rm -rf "$out.partial"
mkdir -p "$out.partial"
cp "$src/bin/k8s-master" "$src"/dist/k8s-master_*_amd64.deb "$out.partial/"
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out"
