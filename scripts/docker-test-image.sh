#!/usr/bin/env bash
# Builds the tiny image the Docker containerizer's tests run, without any
# registry: a root filesystem holding Debian's statically linked busybox
# (with its applets linked in /bin) and a /www directory for `busybox httpd`,
# imported with `docker import`.
#
#   scripts/docker-test-image.sh [IMAGE]     (default strata-test/busybox:latest)
#
# Idempotent: does nothing when the image exists. Installs busybox-static with
# apt-get when there is no statically linked /bin/busybox (needs root). Exits 0 when the image
# exists at the end, non-zero with a message otherwise.
set -euo pipefail
image="${1:-strata-test/busybox:latest}"

if ! command -v docker >/dev/null 2>&1; then
    echo "docker-test-image: the docker command is not installed" >&2
    exit 1
fi
if docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
# Tests run in parallel may all find the image missing: one builds it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/strata-docker-test-image.lock"
    flock 9
    if docker image inspect "$image" >/dev/null 2>&1; then
        exit 0
    fi
fi

busybox=/bin/busybox
is_static() {
    [ -x "$busybox" ] || return 1
    local out
    out=$(LC_ALL=C ldd "$busybox" 2>&1 || true)
    grep -q "not a dynamic" <<<"$out"
}
if ! is_static; then
    echo "docker-test-image: installing busybox-static" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q busybox-static >/dev/null; }
fi
if ! is_static; then
    echo "docker-test-image: no statically linked $busybox (apt-get install busybox-static)" >&2
    exit 1
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,www,proc,sys,dev}
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
echo "hello from strata-test" >"$rootfs/www/index.html"

# The default command, for a task without one, is `sh` (which exits at once
# with no input).
tar -C "$rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$image" >/dev/null
echo "docker-test-image: built $image" >&2
