#!/usr/bin/env bash
# Rebuilds each vendored crate from its pristine crates.io release plus vendor/patches/<crate>.patch,
# and checks that vendor/<crate> is exactly that (default, what CI runs), or rewrites it (--write,
# after changing a patch or moving to a new release: update the version and checksum below).
# Needs curl, sha256sum, tar and git (for `git apply`); fetches from static.crates.io.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:---check}"
case "$mode" in --check | --write) ;; *) echo "usage: vendor/rebuild.sh [--check | --write]" >&2; exit 2 ;; esac

# name, version, sha256 of the .crate (as crates.io publishes it), then the paths of the package
# petrel does not keep (CI files, examples and benches it never builds).
CRATES=(
  "foca 2.0.0 cfdf03bd44a0044a679493054cf0a78696bcb8dc4140dadaa350af0a04b3bbe1 .cargo_vcs_info.json Cargo.lock"
  "hyper 1.12.0 2c3e324da4c95177d6291d4c8730197c0d1822f8a9766814a4a44fa5ab797c9c .cargo_vcs_info.json"
  "h2 0.4.20 7d29020232d6aa3fb1daca64c1127cf662cf97f254ae16c18c05b8ab635fc118 .cargo_vcs_info.json .github .gitignore benches examples"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for line in "${CRATES[@]}"; do
  read -r name version sha prune <<<"$line"
  crate="$work/$name-$version.crate"
  curl -sSfL --retry 3 --max-time 60 -o "$crate" "https://static.crates.io/crates/$name/$name-$version.crate"
  if ! echo "$sha  $crate" | sha256sum -c --quiet; then
    echo "vendor: $name $version from crates.io does not have the recorded checksum" >&2
    exit 1
  fi
  tar xzf "$crate" -C "$work"
  dir="$work/$name-$version"
  for p in $prune; do rm -rf "${dir:?}/$p"; done
  (cd "$dir" && git apply -p1 --whitespace=nowarn "$OLDPWD/patches/$name.patch")
  if [ "$mode" = --write ]; then
    rm -rf "$name"
    cp -a "$dir" "$name"
    echo "vendor/$name: $name $version + patches/$name.patch"
  elif diff -r "$dir" "$name" >"$work/$name.diff"; then
    echo "vendor/$name = $name $version + patches/$name.patch"
  else
    head -40 "$work/$name.diff" >&2
    echo "vendor/$name is NOT $name $version + patches/$name.patch (run vendor/rebuild.sh --write, or fix the patch)" >&2
    status=1
  fi
done
exit "$status"
