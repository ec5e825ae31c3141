#!/usr/bin/env python3
"""CPU flame graph from `perf script` output, as one self-contained SVG (no network, no
dependencies beyond Python). Debian packages no flame graph tool; this does the two steps of
Brendan Gregg's FlameGraph: fold each sample's stack into one line, then draw every frame as a
box as wide as its share of the samples, callers below callees. Hover a box for its name and
share. Usage (docs/BENCHMARKS.md, "A CPU flame graph"):

  perf record -F 999 -g -p "$(pidof anima-llm-broker)" -o broker.data -- sleep 10
  perf script -i broker.data | tools/bench/flamegraph.py --title broker > broker.svg
  perf script -i broker.data | tools/bench/flamegraph.py --folded > broker.folded
"""
import argparse
import collections
import html
import re
import sys
import zlib

WIDTH, ROW, FONT = 1200, 16, 11


def fold(lines):
    """`perf script` text -> Counter of "comm;outer;...;inner" stacks."""
    stacks = collections.Counter()
    comm, frames = None, []

    def flush():
        if comm is not None and frames:
            stacks[";".join([comm] + frames[::-1])] += 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line[0].isspace():
            flush()  # a header without the blank line before it
            comm, frames = line.split()[0], []
        elif comm is not None:
            # "\t    7f12 symbol+0x1f (/usr/lib/x.so)": keep the symbol without its offset.
            parts = line.strip().split(None, 1)
            symbol = parts[1] if len(parts) > 1 else parts[0]
            symbol = re.sub(r"\s+\([^()]*\)$", "", symbol)
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
            frames.append(symbol.replace(";", ":") or "[unknown]")
    flush()
    return stacks


def tree(stacks):
    root = {"n": 0, "kids": {}}
    for stack, n in stacks.items():
        node = root
        node["n"] += n
        for frame in stack.split(";"):
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
    return root


def depth(node):
    return 1 + max((depth(k) for k in node["kids"].values()), default=0)


def svg(root, title):
    total = max(root["n"], 1)
    rows = depth(root)
    height = (rows + 2) * ROW
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="monospace" font-size="{FONT}">',
           f'<text x="4" y="{ROW - 4}">{html.escape(title)} ({total} samples)</text>']

    def draw(name, node, x, level):
        w = WIDTH * node["n"] / total
        if w < 0.5:
            return
        y = height - (level + 1) * ROW
        share = 100.0 * node["n"] / total
        hue = 10 + zlib.crc32(name.encode()) % 40  # stable colours across runs
        label = html.escape(name)
        out.append(f'<g><title>{label} ({node["n"]} samples, {share:.2f}%)</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
                   f'fill="hsl({hue},80%,60%)"/>')
        chars = int(w / (FONT * 0.6))
        if chars >= 3:
            text = name if len(name) <= chars else name[:chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{html.escape(text)}</text>')
        out.append("</g>")
        for kid_name, kid in sorted(node["kids"].items()):
            draw(kid_name, kid, x, level + 1)
            x += WIDTH * kid["n"] / total

    x = 0.0
    for name, node in sorted(root["kids"].items()):
        draw(name, node, x, 0)
        x += WIDTH * node["n"] / total
    out.append("</svg>")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--title", default="CPU")
    parser.add_argument("--folded", action="store_true", help="print the folded stacks instead")
    args = parser.parse_args()
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("flamegraph.py: no samples with call stacks on stdin (perf record -g?)")
    if args.folded:
        for stack, n in stacks.most_common():
            print(stack, n)
    else:
        print(svg(tree(stacks), args.title))


if __name__ == "__main__":
    main()
