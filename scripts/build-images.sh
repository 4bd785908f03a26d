#!/usr/bin/env bash
# Builds local Docker images of sluicegate and the echo agent (the workspace
# package crates/echo-agent, binary echo_agent) without pulling
# anything: a `FROM scratch` image holding the host-built binary plus the shared
# libraries `ldd` lists (and the dynamic loader), sent to `docker build -` as a
# tar context. With --static the binary is linked statically against glibc
# (`-C target-feature=+crt-static`, the installed x86_64-unknown-linux-gnu
# target; no musl needed) and the image holds the binary alone.
#
#   scripts/build-images.sh                      # release, both images
#   scripts/build-images.sh --only echo --profile debug --tag-suffix -t123 --no-build
#
# Images: sluicegate:local<SUFFIX> and sluicegate-echo:local<SUFFIX>.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/build-images.sh [options]
  --profile release|debug   cargo profile of the binaries (default release)
  --static                  link glibc statically; image holds the binary only
  --only sluicegate|echo    build one image (default both)
  --tag-suffix SUFFIX       appended to the ":local" tag (tests use unique ones)
  --label KEY=VALUE         extra image label (repeatable; tests mark their images)
  --no-build                do not run cargo; use binaries already built
  --target-dir DIR          cargo target directory (default: $CARGO_TARGET_DIR or ./target)
EOF
}

root="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
static=0
only=all
suffix=""
build=1
target_dir="${CARGO_TARGET_DIR:-$root/target}"
labels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --static) static=1; shift ;;
        --only) only="$2"; shift 2 ;;
        --tag-suffix) suffix="$2"; shift 2 ;;
        --label) labels+=(--label "$2"); shift 2 ;;
        --no-build) build=0; shift ;;
        --target-dir) target_dir="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-images: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$profile" in release|debug) ;; *) echo "build-images: --profile must be release or debug" >&2; exit 2 ;; esac
case "$only" in all|sluicegate|echo) ;; *) echo "build-images: --only must be sluicegate or echo" >&2; exit 2 ;; esac

cargo_args=()
[ "$profile" = release ] && cargo_args+=(--release)
bin_dir="$target_dir/$profile"
if [ "$static" = 1 ]; then
    # --target keeps build scripts and proc-macros dynamic; only the outputs are static.
    triple=x86_64-unknown-linux-gnu
    cargo_args+=(--target "$triple")
    bin_dir="$target_dir/$triple/$profile"
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi

# One cargo build of the packages asked for. Both together (the default) is one
# dependency graph: the echo agent asks no crate or feature sluicegate's own graph
# lacks, so after `cargo build --release` (or the demo) only the agent compiles.
# The echo image alone builds the agent's smaller graph (what the Docker tests do).
packages=()
[ "$only" != echo ] && packages+=(-p sluicegate)
[ "$only" != sluicegate ] && packages+=(-p sluicegate-echo-agent)
if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --locked "${cargo_args[@]}" "${packages[@]}" --bins --target-dir "$target_dir")
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# image NAME BINARY DEST_NAME DOCKERFILE_TAIL
image() {
    local tag="$1" binary="$2" dest="$3" tail="$4"
    [ -x "$binary" ] || { echo "build-images: $binary not found; build it or drop --no-build" >&2; exit 1; }
    local ctx="$tmp/$dest"
    mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp"
    # Debug info is most of a debug binary's size and useless in the image.
    objcopy --strip-debug "$binary" "$ctx/rootfs/usr/local/bin/$dest" 2>/dev/null \
        || cp "$binary" "$ctx/rootfs/usr/local/bin/$dest"
    if [ "$static" = 0 ]; then
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
        local lib
        for lib in $(ldd "$binary" | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }'); do
            mkdir -p "$ctx/rootfs$(dirname "$lib")"
            cp -L "$lib" "$ctx/rootfs$lib"
        done
    fi
    chmod 1777 "$ctx/rootfs/tmp"
    {
        echo "FROM scratch"
        echo "COPY rootfs/ /"
        echo "ENV PATH=/usr/local/bin"
        echo "USER 10001:10001"
        echo "EXPOSE 8080"
        echo "STOPSIGNAL SIGTERM"
        printf '%s\n' "$tail"
    } >"$ctx/Dockerfile"
    tar -C "$ctx" -c . | docker build --quiet "${labels[@]}" -t "$tag" - >/dev/null
    echo "built $tag ($(du -sh "$ctx/rootfs" | cut -f1) from $binary)"
}

if [ "$only" != echo ]; then
    # `sluicegate health` asks the admin API's /readyz on 127.0.0.1:9901 (no curl in
    # the image); a config without [admin] leaves the container "unhealthy".
    image "sluicegate:local$suffix" "$bin_dir/sluicegate" sluicegate \
'HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/sluicegate", "health", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/sluicegate"]
CMD ["run", "-c", "/etc/sluicegate/routes.toml"]'
fi
if [ "$only" != sluicegate ]; then
    image "sluicegate-echo:local$suffix" "$bin_dir/echo_agent" echo_agent \
'ENV AGENT_LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 CMD ["/usr/local/bin/echo_agent", "--probe", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["/usr/local/bin/echo_agent"]'
fi
