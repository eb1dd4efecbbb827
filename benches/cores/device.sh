#!/usr/bin/env bash
# The scaling bench on a larger machine that cannot install anything (a lent
# 16-core machine with no registry in reach): `pack` builds here what the
# bench needs into .device-kit/ (ignored by git); `run` runs it there.
#
#   bash benches/cores/device.sh pack [REV]   # here; REV: an earlier build to
#                                             # measure too, as "before"
#   KEYWARD_PACK_FEATURES=aws-lc bash benches/cores/device.sh pack [REV]
#                                             # the same, built with those features
#   bash benches/cores/device.sh run [N]      # there, from the repository root;
#                                             # N server cores (default: half)
#
# The kit holds this build's `keyward` and bench binary (stripped, gzipped),
# REV's `keyward` when given, and the load generators this machine has
# installed (wrk, h2load, nginx, taskset) with the libraries they link beyond
# glibc, each behind a wrapper that points only it at those libraries.
# PostgreSQL does not travel: there the bench measures SQLite and says so.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
kit="$root/.device-kit"

pack() {
    local rev=${1:-}
    local cargo_flags=(--locked)
    if [ -n "${KEYWARD_PACK_FEATURES:-}" ]; then
        cargo_flags+=(--features "$KEYWARD_PACK_FEATURES")
    fi
    cd "$root"
    for tool in wrk h2load nginx taskset; do
        command -v "$tool" >/dev/null || {
            echo "pack needs $tool here (apt-get install wrk nghttp2-client nginx-light util-linux)" >&2
            exit 1
        }
    done
    cargo build --release "${cargo_flags[@]}"
    local bench
    bench=$(cargo bench --bench service --no-run "${cargo_flags[@]}" --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "service" and m.get("executable"):
        print(m["executable"])')
    [ -x "$bench" ] || { echo "no bench binary found" >&2; exit 1; }
    rm -rf "$kit"
    mkdir -p "$kit/bin" "$kit/tools" "$kit/lib"
    strip -o "$kit/bin/keyward" "${CARGO_TARGET_DIR:-$root/target}/release/keyward"
    strip -o "$kit/bin/service" "$bench"
    if [ -n "$rev" ]; then
        before_tree=$(mktemp -d)
        trap 'git -C "$root" worktree remove --force "$before_tree" 2>/dev/null || true' EXIT
        git worktree add --detach "$before_tree" "$rev" >/dev/null
        (cd "$before_tree" && CARGO_TARGET_DIR="$root/target/device-before" cargo build --release "${cargo_flags[@]}")
        strip -o "$kit/bin/keyward-before" target/device-before/release/keyward
        git rev-parse --short "$rev" >"$kit/bin/before.rev"
    fi
    git rev-parse --short HEAD >"$kit/bin/after.rev"
    echo "${KEYWARD_PACK_FEATURES:-default features}" >"$kit/bin/features"
    gzip -9 "$kit"/bin/keyward* "$kit/bin/service"
    for tool in wrk h2load nginx taskset; do
        local path
        path=$(command -v "$tool")
        cp "$path" "$kit/tools/$tool.real"
        # Everything it links but glibc and the C++ runtime, which the
        # other machine has in a newer version.
        local lib
        for lib in $(ldd "$path" | awk '$3 ~ /^\// {print $3}'); do
            case "$(basename "$lib")" in
            libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | libstdc++.so* | libgcc_s.so*) ;;
            *) cp -L "$lib" "$kit/lib/" ;;
            esac
        done
        printf '#!/bin/sh\nhere=$(dirname "$0")\nLD_LIBRARY_PATH="$here/../lib" exec "$here/%s.real" "$@"\n' \
            "$tool" >"$kit/tools/$tool"
        chmod +x "$kit/tools/$tool"
    done
    du -sh "$kit"
    echo "packed; on the larger machine: bash benches/cores/device.sh run (carry .device-kit)"
}

run() {
    [ -d "$kit/bin" ] || { echo "no $kit: run pack first and carry it" >&2; exit 1; }
    local work cores server
    work=$(mktemp -d)
    for f in "$kit"/bin/*.gz; do
        gunzip -c "$f" >"$work/$(basename "$f" .gz)"
        chmod +x "$work/$(basename "$f" .gz)"
    done
    export PATH="$kit/tools:$PATH"
    # Debian's nginx creates its temporary folders under this one at start.
    mkdir -p /var/lib/nginx 2>/dev/null || true
    cores=$(nproc)
    server=${1:-$((cores / 2))}
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "after: $(cat "$kit/bin/after.rev"), $(cat "$kit/bin/features")"
    KEYWARD_BENCH_BIN="$work/keyward" "$work/service" --bench --server-cores "$server"
    if [ -x "$work/keyward-before" ]; then
        echo
        echo "before: $(cat "$kit/bin/before.rev")"
        KEYWARD_BENCH_BIN="$work/keyward-before" "$work/service" --bench --server-cores "$server"
    fi
}

case "${1:-}" in
pack) shift; pack "$@" ;;
run) shift; run "$@" ;;
*)
    echo "usage: $0 pack [REV] | run [N]" >&2
    exit 2
    ;;
esac
