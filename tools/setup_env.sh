#!/usr/bin/env bash
# Create or update .venv/ with every dependency of the toolkit.
# Idempotent: a stamp records the hash of this script and requirements.txt,
# so a second run with nothing changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3.11}
STAMP=$VENV/.setup-stamp
HASH=$( (cat tools/setup_env.sh requirements.txt pyproject.toml; echo "$ROOT ${DETECTRON2_SOURCE:-wheel}") | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "[setup] base tools"
$PIP install -q "pip>=23" "setuptools<81" wheel ninja

echo "[setup] torch"
$PIP install -q torch==2.14.1 torchvision==0.29.1

echo "[setup] pinned requirements"
# mmsegmentation/mmdet declare mmcv as a dependency; mmcv is built below, so
# install them without pulling a prebuilt mmcv first.
grep -vE '^(mmsegmentation|mmdet)==' requirements.txt > "$VENV/.req-base.txt"
$PIP install -q -r "$VENV/.req-base.txt"

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  echo "[setup] building mmcv 2.1.0 with ops (about 12 minutes on 2 cores; pip caches the wheel)"
  # torch pulls a newer setuptools; mmcv's setup.py still imports pkg_resources.
  $PIP install -q "setuptools<81"
  # mmcv's setup.py hard-codes -std=c++17; torch 2.14 headers need C++20.
  WRAP=$VENV/cxx20
  mkdir -p "$WRAP"
  for tool in c++ g++ gcc cc; do
    real=$(command -v "$tool")
    cat > "$WRAP/$tool" <<WRAPPER
#!/usr/bin/env bash
args=()
for a in "\$@"; do [ "\$a" = "-std=c++17" ] && a="-std=c++20"; args+=("\$a"); done
exec $real "\${args[@]}"
WRAPPER
    chmod +x "$WRAP/$tool"
  done
  PATH="$WRAP:$VENV/bin:$PATH" CC="$WRAP/gcc" CXX="$WRAP/g++" MMCV_WITH_OPS=1 FORCE_CUDA=0 \
    MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    $PIP install --no-build-isolation mmcv==2.1.0
fi
$PIP install -q mmsegmentation==1.2.2 mmdet==3.3.0

echo "[setup] detectron2"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -n "${DETECTRON2_SOURCE:-}" ]; then
  # Upstream source (git URL or local checkout): builds the compiled ops.
  rm -f "$SITE/detectron2_wheel.pth"
  $PIP install --no-build-isolation "${DETECTRON2_SOURCE/#http/git+http}"
else
  D2=$VENV/detectron2-wheel
  if [ ! -d "$D2/detectron2" ]; then
    rm -rf "$D2"
    $PIP install -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
      --target "$D2" sal-detectron2==0.7.2
  fi
  # The wheel's _C is built for CPython 3.10; replace it with a module that
  # names the missing compiled op when one is called.
  rm -f "$D2"/detectron2/_C*.so
  cp tools/detectron2_C_stub.py "$D2/detectron2/_C.py"
  echo "$D2" > "$SITE/detectron2_wheel.pth"
fi

# Install the repository's packages (pyproject.toml) in editable mode; replaces the former .pth file.
rm -f "$SITE/eva02_toolkit.pth"
$PIP install -q --no-deps --no-build-isolation -e .

"$VENV/bin/python" - <<'PY'
import torch, torchvision, mmcv, mmcv.ops, mmseg, mmengine, timm, detectron2, lvis, pycocotools
print("[setup] ok: torch", torch.__version__, "mmcv", mmcv.__version__, "mmseg", mmseg.__version__,
      "timm", timm.__version__, "detectron2", detectron2.__version__)
PY
echo "$HASH" > "$STAMP"
