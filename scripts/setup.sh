#!/usr/bin/env bash
# Set up robot_rl on a fresh Debian bookworm machine (or re-run on a set-up one: idempotent).
#
#   bash scripts/setup.sh          # runtime: Vulkan driver (if no NVIDIA driver), torch, package
#   bash scripts/setup.sh --test   # the same, plus the test extras
#
# Steps, each skipped when already done:
#  1. Without an NVIDIA driver, SAPIEN (ManiSkill's simulator) still needs a Vulkan device. Mesa's
#     lavapipe from bookworm (22.3) lacks VK_KHR_external_semaphore_fd; the one in
#     bookworm-backports (>= 24.3) has it. We add a backports source derived from the machine's
#     own debian.sources, so no mirror host is hard-coded here.
#  2. A virtual environment in .venv (override with ROBOT_RL_VENV).
#  3. torch==2.13.0 (CPU wheel) only when the venv has no torch: a GPU user keeps their CUDA build.
#  4. The package, editable, with its extras.
#  5. With --test: openpi-client==0.1.2 with --no-deps (it pins numpy<2; it runs with numpy 2).
#  6. Optional: mikasa-robo-suite==1.0.0 (MIKASA-Robo memory tasks, envs/mikasa.py, issue 13), with --no-deps
#     (its metadata pins mani_skill==3.0.0b15, torch==2.2.1, numpy==1.23.5; its RL tasks run on our stack).
#     A failure only warns: robot_rl works without it (those task ids are then unknown). Its wheel also ships a
#     top-level package `baselines` (MIKASA's PPO scripts): nothing of ours or our dependencies is named so, and
#     the step is skipped (with a warning) where another distribution already provides `baselines`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ROBOT_RL_VENV:-.venv}"
EXTRAS=""
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS="[test]" ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (known: --test)" >&2; exit 2 ;;
  esac
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

have_nvidia() { [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null 2>&1; }

lavapipe_ok() {
  # lavapipe's ICD ships with mesa-vulkan-drivers; SAPIEN needs Mesa >= 24.3.
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 24.3 && dpkg -s libvulkan1 >/dev/null 2>&1
}

if have_nvidia; then
  echo "[setup] NVIDIA driver found: using it for Vulkan (no software driver installed)"
elif lavapipe_ok; then
  echo "[setup] software Vulkan driver (Mesa lavapipe >= 24.3) already installed"
else
  echo "[setup] installing Mesa lavapipe from bookworm-backports (software Vulkan for SAPIEN)"
  src=/etc/apt/sources.list.d/debian.sources
  bp=/etc/apt/sources.list.d/robot-rl-backports.sources
  if [ ! -f "$bp" ]; then
    if [ -f "$src" ]; then
      # First stanza's URIs (the main archive), with Suites replaced by bookworm-backports.
      uris=$(awk '/^URIs:/{print; exit}' "$src")
      keyring=$(awk '/^Signed-By:/{print; exit}' "$src")
    else
      uris=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print "URIs: " $2; exit}' /etc/apt/sources.list)
      keyring="Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
    [ -n "$uris" ] || { echo "[setup] cannot find a Debian source to derive backports from" >&2; exit 1; }
    printf 'Types: deb\n%s\nSuites: bookworm-backports\nComponents: main\n%s\n' "$uris" "$keyring" \
      | $SUDO tee "$bp" >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports \
    mesa-vulkan-drivers libvulkan1 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null

if "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] torch $("$PY" -c 'import torch; print(torch.__version__)') already installed: kept"
else
  echo "[setup] installing torch==2.13.0"
  "$PY" -m pip install -q "torch==2.13.0"
fi

echo "[setup] installing robot_rl$EXTRAS (editable)"
"$PY" -m pip install -q -e ".$EXTRAS"
if [ "$EXTRAS" = "[test]" ]; then
  # openpi-client 0.1.2 (the real client the openpi tests talk to, FACTS.md): its metadata pins numpy<2 but it
  # runs with numpy 2, so --no-deps, with what it imports (dm-tree, typing-extensions; msgpack and websockets
  # are ours already).
  if "$PY" -c "import openpi_client.websocket_client_policy" >/dev/null 2>&1; then
    echo "[setup] openpi-client already installed"
  else
    echo "[setup] installing openpi-client==0.1.2 (test only, --no-deps)"
    "$PY" -m pip install -q --no-deps "openpi-client==0.1.2" "dm-tree>=0.1.8" "typing-extensions>=4"
  fi
fi
MIKASA_VERSION="1.0.0"
install_mikasa() {
  local have owner
  have=$("$PY" -m pip show mikasa-robo-suite 2>/dev/null | awk '/^Version:/{print $2}')
  if [ "$have" = "$MIKASA_VERSION" ] && "$PY" -c "import mikasa_robo_suite.rl.memory_envs" >/dev/null 2>&1; then
    echo "[setup] mikasa-robo-suite $MIKASA_VERSION already installed"
    return 0
  fi
  # Who provides a top-level `baselines` now (empty: nobody; the wheel would add MIKASA's own).
  owner=$("$PY" - <<'PYEOF'
import importlib.metadata as md
import importlib.util

spec = importlib.util.find_spec("baselines")
if spec is not None:
    names = [d.metadata["Name"] for d in md.distributions()
             if "baselines" in (d.read_text("top_level.txt") or "").split()]
    others = [n for n in names if n.lower().replace("_", "-") != "mikasa-robo-suite"]
    print(",".join(others) if others else "" if names else f"not from any distribution: {spec.origin}")
PYEOF
  ) || return 1
  if [ -n "$owner" ]; then
    echo "[setup] WARNING: a 'baselines' package is already installed ($owner); mikasa-robo-suite's own top-level" \
         "'baselines' would overwrite it: not installing it" >&2
    return 1
  fi
  echo "[setup] installing mikasa-robo-suite==$MIKASA_VERSION (optional, --no-deps)"
  "$PY" -m pip install -q --no-deps "mikasa-robo-suite==$MIKASA_VERSION" || return 1
  "$PY" -c "import mikasa_robo_suite.rl.memory_envs" >/dev/null 2>&1 || return 1
}
install_mikasa || echo "[setup] WARNING: the optional mikasa-robo-suite==$MIKASA_VERSION (MIKASA-Robo memory tasks)" \
  "could not be installed; robot_rl works without it (RRL-TakeItBack-v0 and RRL-RememberColor3-v0 are then unknown)" >&2

echo "[setup] done: $("$PY" -c 'import robot_rl, mani_skill, stable_baselines3 as sb3; print("mani_skill", mani_skill.__version__, "| sb3", sb3.__version__)')"
