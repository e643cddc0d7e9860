"""The package layers of livestems, which may import which, and a check of the code against them.

    python tools/layers.py            check the tree; exit 1 with the offending imports
    python tools/layers.py --png docs/architecture.png
                                      also draw the layers and their imports (`make architecture`)

A layer is a package prefix (``livestems.stream.core``); a module belongs to the layer with the
longest prefix that names it. :data:`ALLOWED` lists, for each layer, the other layers its modules
may import; imports inside one layer are free, but no cycle of modules may form anywhere.
Every import counts, at the top of a module or inside a function (a lazy import is still a
dependency). The modules are found through pyproject.toml's ``package-dir``, so the check reads
the same files the installed package is made of. tests/test_layout.py runs :func:`check`.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ROOT = "livestems"
DSP = "livestems.dsp"
NETS = "livestems.model.nets"
EVALUATION = "livestems.model.evaluation"
TRAINING = "livestems.model.training"
MODEL = "livestems.model"
STREAM = "livestems.stream"
CORE = "livestems.stream.core"
MIDI = "livestems.stream.midi"
IO = "livestems.stream.io"
BRIDGE = "livestems.bridge"
APPS = "livestems.stream.apps"
BENCH = "livestems.stream.bench"
CLI = "livestems.stream.cli"
MAIN = "livestems.stream.__main__"

#: layer -> the layers its modules may import (besides their own). Read bottom-up: nothing
#: below may name anything above. ``livestems.stream`` is the package itself and its shared
#: ``errors`` module; ``livestems.model`` its package only; ``__main__`` runs the CLI.
ALLOWED: dict[str, tuple[str, ...]] = {
    ROOT: (),
    DSP: (),
    MODEL: (),
    NETS: (DSP,),
    EVALUATION: (NETS, DSP),
    TRAINING: (EVALUATION, NETS, DSP),
    STREAM: (),
    CORE: (STREAM, DSP),
    BRIDGE: (CORE, STREAM, NETS, DSP),
    MIDI: (CORE, STREAM, DSP),
    IO: (BRIDGE, MIDI, CORE, STREAM, NETS, DSP),
    APPS: (IO, MIDI, CORE, STREAM, EVALUATION, NETS, DSP),
    BENCH: (APPS, IO, MIDI, CORE, STREAM, TRAINING, EVALUATION, NETS, DSP),
    CLI: (BENCH, APPS, IO, MIDI, CORE, STREAM, BRIDGE, TRAINING, EVALUATION, NETS, DSP, ROOT),
    MAIN: (CLI,),
}

#: One line per layer: what lives there (the picture's labels, docs/ARCHITECTURE.md).
ROLE = {
    ROOT: "version", DSP: "numba kernels: STFT, resample, pitch", MODEL: "(package)",
    NETS: "networks + loading: what inference needs", EVALUATION: "metrics, test songs",
    TRAINING: "trainer, datasets, synth, campaign", STREAM: "errors", CORE: "per block: ring, "
    "engine, params, mixer", BRIDGE: "C ABI's Python half", MIDI: "parser, mappings, control",
    IO: "files, NI stems, PortAudio/JACK", APPS: "karaoke, demo, separate, JACK app",
    BENCH: "measurements behind docs/", CLI: "argument parsing, thin commands", MAIN: "python -m",
}


@dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported module (or package)
    path: str  # file of src, relative to the repo
    line: int


def layer_of(module: str, layers=ALLOWED) -> str | None:
    """The layer with the longest prefix naming ``module`` (None: not one of ours)."""
    best = None
    for name in layers:
        if (module == name or module.startswith(name + ".")) and (best is None
                                                                  or len(name) > len(best)):
            best = name
    return best


def package_dirs(repo: Path = REPO) -> dict[str, Path]:
    """pyproject.toml's ``package-dir``: top package name -> folder."""
    cfg = tomllib.loads((repo / "pyproject.toml").read_text())
    return {k: repo / v for k, v in cfg["tool"]["setuptools"]["package-dir"].items()}


def find_modules(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module under the mapped folders: dotted name -> file. A mapped folder inside
    another (``livestems.stream`` = stream/ beside ``livestems`` = livestems_root/) is only
    read under its own name."""
    mods: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder).with_suffix("").parts
            if any(not p.isidentifier() for p in rel):  # build output, fuzz corpora...
                continue
            parts = list(rel[:-1]) if rel[-1] == "__init__" else list(rel)
            if parts and (folder / parts[0]).resolve() in {d.resolve() for d in dirs.values()}:
                continue
            mods[".".join([pkg, *parts])] = f
    return mods


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imports(mods: dict[str, Path], repo: Path = REPO) -> list[Edge]:
    """Every import of one of ``mods`` by one of ``mods``, lazy ones included."""
    edges = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        try:
            rel = str(path.relative_to(repo))
        except ValueError:
            rel = str(path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (_resolve(mod, is_pkg, node.level, node.module) if node.level
                        else node.module)
                for a in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                # `import a.b.c` names a.b.c; keep the longest known module it names
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    edges.append(Edge(mod, t, rel, node.lineno))
    return edges


def _top_names(path: Path) -> set[str] | None:
    """Names a module binds at its top level (None: it has a module ``__getattr__``)."""
    names: set[str] = set()
    todo = list(ast.parse(path.read_text(), filename=str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for tgt in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(tgt) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return names


def unresolved(mods: dict[str, Path], repo: Path = REPO, top: str = ROOT,
               importers: dict[str, Path] | None = None) -> list[str]:
    """Imports of a ``livestems`` module that does not exist, or of a name its module does not
    define (a lazy import a move broke), by ``importers`` (default: ``mods`` themselves;
    tests pass their own files, named by path)."""
    out, names = [], {}
    for mod, path in (importers if importers is not None else mods).items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        where = path.relative_to(repo) if path.is_relative_to(repo) else path
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (_resolve(mod, is_pkg, node.level, node.module) if node.level
                        else node.module)
                wanted = [(base, a.name) for a in node.names]
            else:
                continue
            for m, name in wanted:
                if not (m == top or m.startswith(top + ".")):
                    continue
                if m not in mods:
                    out.append(f"{where}:{node.lineno}: {mod} imports {m}, which does not exist")
                elif name and name != "*" and f"{m}.{name}" not in mods:
                    if m not in names:
                        names[m] = _top_names(mods[m])
                    if names[m] is not None and name not in names[m]:
                        out.append(f"{where}:{node.lineno}: {mod} imports {name} from {m}, "
                                   f"which does not define it")
    return out


def violations(edges: list[Edge], layers=ALLOWED) -> list[str]:
    """The imports that break :data:`ALLOWED` (or come from a module in no layer)."""
    out = []
    for e in edges:
        a, b = layer_of(e.src, layers), layer_of(e.dst, layers)
        if a is None:
            out.append(f"{e.path}:{e.line}: {e.src} is in no layer (add it to ALLOWED)")
        elif b is None:
            out.append(f"{e.path}:{e.line}: {e.dst} is in no layer (add it to ALLOWED)")
        elif a != b and b not in layers[a]:
            out.append(f"{e.path}:{e.line}: {e.src} ({a}) imports {e.dst} ({b}): "
                       f"{a} may import {', '.join(layers[a]) or 'nothing of livestems'}")
    return out


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Module import cycles (each as a closed list of modules), one per strongly connected set."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan, iterative enough for our depth
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_one_cycle(sorted(comp), graph))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_cycle(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected set."""
    members, start = set(comp), comp[0]
    prev, queue = {start: None}, [start]
    for v in queue:
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def layer_cycles(layers=ALLOWED) -> list[list[str]]:
    """Cycles in the rule table itself (it must be a DAG to mean anything)."""
    return cycles([Edge(a, b, "ALLOWED", 0) for a, bs in layers.items() for b in bs])


def check(repo: Path = REPO, layers=ALLOWED, dirs: dict[str, Path] | None = None) -> list[str]:
    """Everything wrong with the tree at ``repo``: forbidden imports, module cycles, and rules
    that form a cycle themselves. Empty when the layering holds."""
    mods = find_modules(dirs if dirs is not None else package_dirs(repo))
    edges = imports(mods, repo)
    problems = unresolved(mods, repo) + violations(edges, layers)
    problems += ["import cycle: " + " -> ".join(c) for c in cycles(edges)]
    problems += ["rule cycle in ALLOWED: " + " -> ".join(c) for c in layer_cycles(layers)]
    return problems


def layer_edges(repo: Path = REPO, layers=ALLOWED) -> dict[tuple[str, str], int]:
    """(importing layer, imported layer) -> number of module imports, as the code has them."""
    mods = find_modules(package_dirs(repo))
    out: dict[tuple[str, str], int] = {}
    for e in imports(mods, repo):
        a, b = layer_of(e.src, layers), layer_of(e.dst, layers)
        if a and b and a != b:
            out[a, b] = out.get((a, b), 0) + 1
    return out


def _ranks(layers) -> dict[str, int]:
    """Height of each layer: 0 for those that import nothing, else 1 + the highest it may."""
    rank: dict[str, int] = {}

    def r(x):
        if x not in rank:
            rank[x] = 1 + max((r(y) for y in layers[x]), default=-1)
        return rank[x]

    for x in layers:
        r(x)
    return rank


def _reduce(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Transitive reduction: drop a -> c when a -> ... -> c some other way."""
    succ: dict[str, set[str]] = {}
    for a, b in pairs:
        succ.setdefault(a, set()).add(b)

    def reach(a, skip):
        seen, todo = set(), [b for b in succ.get(a, ()) if (a, b) != skip]
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(succ.get(x, ()))
        return seen

    return {(a, b) for a, b in pairs if b not in reach(a, (a, b))}


def draw(png: Path, repo: Path = REPO, layers=ALLOWED) -> None:
    """The layers bottom-up, an arrow for each layer-to-layer import the code makes (after
    transitive reduction), each box naming the layer's files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    used = layer_edges(repo, layers)
    shown = _reduce(set(used))
    mods = find_modules(package_dirs(repo))
    rank = _ranks(layers)
    rows: dict[int, list[str]] = {}
    for x in sorted(layers, key=lambda x: (rank[x], x)):
        if x in (ROOT, MODEL):  # the bare packages: a version string, a docstring
            continue
        rows.setdefault(rank[x], []).append(x)
    order = {MAIN: 0, CLI: 0, BENCH: 0, APPS: 0, IO: 0, BRIDGE: 1, MIDI: 0, CORE: 0,
             TRAINING: 1, EVALUATION: 1, NETS: 1, STREAM: -1, DSP: 0}
    for k in rows:
        rows[k].sort(key=lambda x: (order.get(x, 0), x))
    width, box_w, box_h, gap_y = 16.0, 4.6, 1.25, 0.75
    pos = {}
    height = len(rows) * (box_h + gap_y)
    fig, ax = plt.subplots(figsize=(width, height * 0.95))
    for r, names in rows.items():
        y = r * (box_h + gap_y)
        step = width / len(names)
        for i, x in enumerate(names):
            cx = step * (i + 0.5)
            pos[x] = (cx, y)
            files = sorted({p.stem if p.stem != "__init__" else "" for m, p in mods.items()
                            if layer_of(m, layers) == x} - {""})
            text = ", ".join(files)
            if len(text) > 60:
                cut = text[:60].rsplit(", ", 1)[0]
                text = cut + ",\n" + text[len(cut) + 2:]
            color = "#dbe9f6" if x.startswith(STREAM) else ("#e6f2dd" if x.startswith(MODEL)
                                                              else "#f4e6d4")
            ax.add_patch(FancyBboxPatch((cx - box_w / 2, y), box_w, box_h,
                                        boxstyle="round,pad=0.05", fc=color, ec="#333333"))
            ax.text(cx, y + box_h - 0.22, x.replace("livestems.", ""), ha="center", va="top",
                    fontsize=11, weight="bold")
            ax.text(cx, y + box_h - 0.55, ROLE.get(x, ""), ha="center", va="top", fontsize=8,
                    style="italic")
            ax.text(cx, y + 0.08, text, ha="center", va="bottom", fontsize=6.5,
                    color="#333333")
    for a, b in sorted(shown):
        if a not in pos or b not in pos:  # the bare packages are not drawn
            continue
        (xa, ya), (xb, yb) = pos[a], pos[b]
        bend = 0.0 if abs(xa - xb) < 0.1 or abs(rank[a] - rank[b]) == 1 else 0.15
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb + box_h), arrowstyle="-|>",
                                     mutation_scale=12, color="#555555", lw=1.0,
                                     connectionstyle=f"arc3,rad={bend}", shrinkA=2, shrinkB=2))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.3, height)
    ax.axis("off")
    ax.set_title("livestems: layers bottom-up; an arrow A -> B: A's modules import B's "
                 "(drawn where no other path of arrows leads from A to B).\n"
                 "Generated by tools/layers.py from the imports in the code; "
                 "tests/test_layout.py fails on any import the rules do not allow.",
                 fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="check livestems' import layers; draw them")
    p.add_argument("--png", type=Path, default=None, help="also draw the layers to this PNG")
    args = p.parse_args(argv)
    problems = check()
    for line in problems:
        print(line)
    if args.png:
        draw(args.png)
        print(f"wrote {args.png}")
    if not problems:
        print("layers OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
