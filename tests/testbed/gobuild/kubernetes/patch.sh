#!/usr/bin/env bash
# Prepares a patched copy of the k8s.io/kubernetes module for provision.sh and prints the path
# of a go.mod (for `go build -modfile`) that replaces the module with that copy. Argument: the
# work dir, which is kept between builds so that Go's build cache recognises the sources.
#
# Go's -overlay cannot replace files in the module cache, hence the copy. Only what is built
# (cmd/, pkg/, plugin/, third_party/) is copied. The build fails when a patch no longer
# changes its file, so a version bump that moves the patched code is noticed at once.
set -euo pipefail
work="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
copy="$work/kubernetes"
rm -rf "$copy"
mkdir -p "$copy"
for part in go.mod go.sum cmd pkg plugin third_party; do
    if [[ -e "$src/$part" ]]; then
        cp -R "$src/$part" "$copy/"
    fi
done
chmod -R u+w "$copy"

target="pkg/apis/core/validation/validation.go"
sed -f "$here/patches/endpoint-ip-loopback.sed" "$src/$target" >"$copy/$target"
if cmp -s "$src/$target" "$copy/$target"; then
    echo "patch: patches/endpoint-ip-loopback.sed no longer changes $target" >&2
    exit 1
fi

cp "$here/go.mod" "$work/go.mod"
cp "$here/go.sum" "$work/go.sum"
printf '\nreplace k8s.io/kubernetes => %s\n' "$copy" >>"$work/go.mod"
echo "$work/go.mod"
