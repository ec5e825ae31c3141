#!/usr/bin/env bash
# Makes docs/images/anima-cli-code.png: `anima-cli code` with the demo task, run on a
# pseudo-terminal (util-linux `script`) against a running gateway, its screen drawn by headless
# Chromium. Usage: tools/screenshots/cli.sh [ws://HOST:PORT/] [TOKEN]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
url="${1:-ws://127.0.0.1:3002/}"
token="${2:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmd=("$ROOT/build/bin/anima-cli" --url "$url" code --request "$ROOT/docs/examples/self-coding-demo.json")
[[ -z "$token" ]] || cmd=("$ROOT/build/bin/anima-cli" --token "$token" --url "$url" code \
  --request "$ROOT/docs/examples/self-coding-demo.json")
COLUMNS=100 script -qec "stty cols 100 rows 40; $(printf '%q ' "${cmd[@]}")" /dev/null >"$work/typescript" || true
# The terminal's screen twice: while the job retries (the bar redrawn in place), and at the end.
# A screen is each line's text after its last carriage return, without the escape sequences that
# cleared it.
python3 - "$work/typescript" "$work/screen.html" <<'PY'
import html, re, sys
raw = open(sys.argv[1], encoding="utf-8", errors="replace", newline="").read()

def screen(text):
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r\n", "\n")
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines

retry = raw.find("retrying")
during = screen(raw[: raw.find("\x1b[K", retry)]) if retry >= 0 else []
prompt = "$ anima-cli code --request docs/examples/self-coding-demo.json"
def block(caption, lines):
    return (f'<p>{html.escape(caption)}</p><pre>{html.escape(chr(10).join(lines))}</pre>')
parts = [block("while the job runs (the bar is redrawn in place):", [prompt] + during)] if during else []
parts.append(block("at the end:", [prompt] + screen(raw)))
open(sys.argv[2], "w").write(f"""<!doctype html><meta charset="utf-8">
<style>body{{margin:0;padding:8px 20px;background:#1e1f22}}
p{{margin:10px 0 2px;color:#9aa0a6;font:italic 13px sans-serif}}
pre{{margin:0 0 6px;color:#e6e6e6;font:14px/1.45 'DejaVu Sans Mono',monospace;white-space:pre}}
</style>{"".join(parts)}""")
PY
rows="$(($(wc -l <"$work/screen.html") + 4))"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=900,$((rows * 21 + 40)) --screenshot="$ROOT/docs/images/anima-cli-code.png" \
  "file://$work/screen.html" >/dev/null 2>&1
echo "wrote $ROOT/docs/images/anima-cli-code.png"
