#!/usr/bin/env bash
# make package-test: the .deb as a user gets it. A fresh Debian 12 chroot builds it from the
# committed checkout (`make deb`; `make install` is tried there too); a second fresh one, with
# no compiler and nothing of the project, installs it with apt-get and tries it: the quickstart
# lab's checks, the Python package and its pytest11 entry point, man labctl, the completions.
# Then removes it and checks that nothing is left.
# Uses FRESH_DEBIAN (../shared/tools/fresh-debian.sh). Takes 20-40 minutes.
# PACKAGE_TEST_DEB=FILE skips the first half: installs and tries that .deb (make deb's).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
fresh=${FRESH_DEBIAN:-$here/../shared/tools/fresh-debian.sh}
[ -x "$fresh" ] || { echo "package-test: no $fresh (set FRESH_DEBIAN)"; exit 2; }
carry=$(mktemp -d /var/tmp/labctl-package-test.XXXXXX)
trap 'rm -rf "$carry"' EXIT
start=$SECONDS

if [ -n "${PACKAGE_TEST_DEB:-}" ]; then   # only the second half, with this .deb
  cp "$PACKAGE_TEST_DEB" "$carry/"
else
echo "== 1/2: building the .deb in a fresh Debian 12"
FRESH_OUT=$carry "$fresh" "$here" \
  'set -e; make deb CMAKE_ARGS=-DBUILD_TESTING=OFF JOBS=$(nproc); cp build/labctl_*.deb /srv/out/
   make install; MANPAGER=cat man labctl | grep -q "labctl up"; python3 -c "import labctl"
   python3 -m pytest --help | grep -q -- --labctl-keep; echo "make install: man, import, plugin ok"'
ls "$carry"/labctl_*.deb >/dev/null
echo "built $(basename "$carry"/labctl_*.deb) in $((SECONDS - start)) s"
fi

echo "== 2/2: installing it in a second fresh Debian 12"
FRESH_IN=$carry "$fresh" "" "$(cat <<'INNER'
set -euxo pipefail
export LC_ALL=C.UTF-8
cd /srv/in
apt-get update -qq
apt-get install -y -qq ./labctl_*.deb man-db >/dev/null
if command -v g++ || command -v cc; then echo 'a compiler is installed'; exit 1; fi
labctl --version
version=$(labctl --version | awk '{print $2}')
[ "$(dpkg-query -W -f='${Version}' labctl)" = "$version" ]
[ "$(python3 -c 'import labctl; print(labctl.__version__)')" = "$version" ]
python3 -c 'import importlib.metadata as m; eps = m.entry_points(group="pytest11"); assert "labctl.pytest_plugin" in [e.value for e in eps], eps'
export LABCTL_STATE_DIR=/run/labctl-package-test
labctl up /usr/share/labctl/labs/quickstart/topology.json
labctl status quickstart >/dev/null
labctl down quickstart
if ip netns list | grep '^quickstart-'; then echo 'namespaces left'; exit 1; fi
MANPAGER=cat man labctl | grep -q 'labctl up'
labctl completion bash > /tmp/labctl.bash
bash -n /tmp/labctl.bash
[ "$(bash -c 'source /usr/share/bash-completion/completions/labctl; COMP_WORDS=(labctl sta); COMP_CWORD=1; _labctl; echo "${COMPREPLY[*]}"')" = status ]
test -f /usr/share/zsh/vendor-completions/_labctl
test -f /usr/share/fish/vendor_completions.d/labctl.fish
test -f /usr/share/labctl/topology.schema.json
labctl validate /usr/share/labctl/labs/bridge-lan/topology.json
apt-get remove -y -qq labctl >/dev/null
if [ -e /usr/lib/python3/dist-packages/labctl ] || [ -e /usr/bin/labctl ]; then echo 'files left'; exit 1; fi
echo "package-test: installed, used and removed"
INNER
)"
echo "package-test: passed in $((SECONDS - start)) s"
