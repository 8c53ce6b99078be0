# Sourced by the scripts: puts a privately unpacked kubectl on PATH when the machine has none.
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prewarm
if ! command -v kubectl >/dev/null 2>&1 && [ -x "$CACHE/kubectl/usr/bin/kubectl" ]; then
  export PATH="$CACHE/kubectl/usr/bin:$PATH"
fi
