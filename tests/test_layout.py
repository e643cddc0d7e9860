"""The package layout holds: imports go only the allowed directions (tools/layers.py), no
module import cycles, pyproject.toml packages every folder, model/weights holds only shipped
models and git tracks no training run state.

The first test checks the real tree; the others build small fake trees to show that the check
really fails on what it must refuse (a core -> cli import, a cycle, a lazy or relative import
the wrong way, an import of a module that is gone).
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import layers  # noqa: E402  (tools/layers.py: the rules and the check)


def test_the_tree_keeps_its_layers():
    problems = layers.check()
    assert not problems, "\n".join(problems)


def test_the_cli_is_imported_by_nothing_and_the_core_by_no_host():
    """The acceptance's two rules, read off the real import edges (not only off ALLOWED)."""
    edges = layers.imports(layers.find_modules(layers.package_dirs()))
    into_cli = [e for e in edges if layers.layer_of(e.dst) == layers.CLI
                and layers.layer_of(e.src) not in (layers.CLI, layers.MAIN)]
    assert not into_cli, into_cli
    hosts = {layers.CLI, layers.APPS, layers.IO, layers.BENCH, layers.MIDI, layers.BRIDGE}
    from_core = [e for e in edges if layers.layer_of(e.src) == layers.CORE
                 and layers.layer_of(e.dst) in hosts]
    assert not from_core, from_core
    assert {e.dst for e in edges if e.src == "livestems.stream.__main__"} == {
        "livestems.stream.cli.main"}


def test_the_rules_themselves_form_no_cycle():
    assert layers.layer_cycles() == []
    bad = dict(layers.ALLOWED)
    bad[layers.CORE] = bad[layers.CORE] + (layers.APPS,)
    assert layers.layer_cycles(bad), "a rule table with core -> apps -> core must be refused"


def _tree(tmp_path, files: dict[str, str]):
    """A fake livestems in tmp_path: {path under the package: source}; every folder gets an
    __init__.py. Returns the package-dir mapping the check reads."""
    root = tmp_path / "pkg"
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        for d in [p.parent, *p.parent.relative_to(root).parents]:
            (root / d / "__init__.py").touch()
        p.write_text(src)
    return {"livestems.stream": tmp_path / "pkg"}


def _check(tmp_path, files):
    return layers.check(repo=tmp_path, dirs=_tree(tmp_path, files))


def test_a_core_module_importing_the_cli_fails(tmp_path):
    problems = _check(tmp_path, {
        "core/engine.py": "from livestems.stream.cli.main import main\n",
        "cli/main.py": "def main():\n    return 0\n",
    })
    assert len(problems) == 1, problems
    assert "livestems.stream.core.engine (livestems.stream.core) imports " \
           "livestems.stream.cli.main (livestems.stream.cli)" in problems[0]
    assert problems[0].startswith("pkg/core/engine.py:1: ")


def test_lazy_and_relative_imports_count_too(tmp_path):
    problems = _check(tmp_path, {
        "core/ring.py": "def f():\n    from ..apps import demo\n    return demo\n",
        "core/mixer.py": "def g():\n    import livestems.stream.io.files\n",
        "apps/demo.py": "",
        "io/files.py": "",
    })
    assert len(problems) == 2, problems
    assert any("core.ring (livestems.stream.core) imports livestems.stream.apps.demo" in p
               for p in problems)
    assert any("core.mixer (livestems.stream.core) imports livestems.stream.io.files" in p
               for p in problems)


CYCLES = {
    "within one layer, one side lazy": {
        "apps/a.py": "from livestems.stream.apps.b import g\n\ndef f():\n    return g\n",
        "apps/b.py": "def g():\n    from livestems.stream.apps.a import f  # lazy\n    return f\n",
    },
    "the old cmd_jack <-> cmd_midi, relative": {
        "apps/a.py": "def serve():\n    from .b import start_midi\n",
        "apps/b.py": "from .a import serve\n\ndef start_midi():\n    pass\n",
    },
}


@pytest.mark.parametrize("files", CYCLES.values(), ids=CYCLES)
def test_an_import_cycle_fails(tmp_path, files):
    assert _check(tmp_path, files) == [
        "import cycle: livestems.stream.apps.a -> livestems.stream.apps.b -> "
        "livestems.stream.apps.a"]


def test_an_import_of_a_module_that_is_gone_fails(tmp_path):
    problems = _check(tmp_path, {
        "apps/demo.py": "def run():\n    from livestems.stream.engine import Engine\n",
    })
    assert problems == ["pkg/apps/demo.py:2: livestems.stream.apps.demo imports "
                        "livestems.stream.engine, which does not exist"]


def test_allowed_imports_pass(tmp_path):
    assert _check(tmp_path, {
        "core/engine.py": "from .ring import Ring\n",
        "core/ring.py": "class Ring:\n    pass\n",
        "io/files.py": "from livestems.stream.core.engine import Ring\n",
        "apps/demo.py": "from livestems.stream.io import files\nfrom ..core import engine\n",
        "cli/main.py": "from livestems.stream.apps.demo import files\n",
    }) == []


def test_tests_and_tools_import_only_what_exists():
    """The tests' imports (lazy ones included) name modules and names that exist: a move
    leaves no `from livestems.model import registry` behind."""
    mods = layers.find_modules(layers.package_dirs())
    files = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "tools").glob("*.py"))
    importers = {f"tests_and_tools.{i}": f for i, f in enumerate(files)}
    problems = layers.unresolved(mods, importers=importers)
    assert not problems, "\n".join(problems)


def test_an_import_of_a_name_a_package_lacks_fails(tmp_path):
    dirs = _tree(tmp_path, {"model/registry.py": "SHIPPED = {}\n"})
    mods = layers.find_modules(dirs)
    user = tmp_path / "test_x.py"
    user.write_text("def test():\n    from livestems.stream.model import registry, SHIPPED\n"
                    "    from livestems.stream.model.registry import SHIPPED, GONE\n")
    assert layers.unresolved(mods, tmp_path, importers={"t": user}) == [
        "test_x.py:2: t imports SHIPPED from livestems.stream.model, which does not define it",
        "test_x.py:3: t imports GONE from livestems.stream.model.registry, which does not "
        "define it"]


def test_pyproject_packages_every_folder_and_the_package_data():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = layers.package_dirs()
    found = {m for m, p in layers.find_modules(dirs).items() if p.name == "__init__.py"}
    assert listed == found, (f"in pyproject.toml, not on disk: {sorted(listed - found)}; "
                             f"on disk, not in pyproject.toml: {sorted(found - listed)}")
    for pkg, globs in cfg["package-data"].items():
        base = dirs.get(pkg) or layers.find_modules(dirs)[pkg].parent
        for g in globs:
            assert list(base.glob(g)), f"package-data {pkg}: {g} matches nothing in {base}"


def _tracked(*paths):
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "--", *paths],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    return r.stdout.split()


def test_model_weights_hold_only_shipped_models_and_no_run_state_is_tracked():
    from livestems.model.nets.registry import SHIPPED, WEIGHTS_DIR

    assert WEIGHTS_DIR == REPO / "model" / "weights"
    shipped = {f"model/weights/{p.name}" for p in SHIPPED.values()}
    shipped |= {s.replace(".json", ".safetensors") for s in shipped}
    assert set(_tracked("model/weights")) == shipped
    assert _tracked("runs") == []
    # the one resume checkpoint kept in git: campaign/NAME/resume (docs/MODEL.md)
    for f in _tracked("model", "stream", "dsp", "bridge", "livestems_root"):
        assert "/checkpoints/" not in f and "/resume/" not in f, f


def test_the_readme_layout_matches_the_tree():
    """Every folder the README's Layout section names exists, and every package folder and
    every top-level folder git tracks is named there."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Layout\n"):text.index("\n## ", text.index("## Layout\n") + 1)]
    named, top = [], None
    for line in block.splitlines():
        if not line.startswith("    ") or not line.strip() or line.startswith(" " * 8 + " "):
            continue
        token = line.split()[0]
        if not ("/" in token or token.endswith(".py")):
            continue
        if line.startswith("      "):  # a child of the last top-level entry
            named.append(f"{top}{token}")
        else:
            top = token
            named.append(token)
    for path in named:
        if path in ("runs/", "campaign/NAME/"):  # made by training: runs/ git-ignored,
            continue  # campaign/NAME/ committed once a campaign has saved (none may have yet)
        real = REPO / path.replace("NAME/", "")
        assert real.exists(), f"README's Layout names {path}, which is not in the tree"
    # a package folder two levels down may be named on its parent's line ("backends/: ...");
    # the tests/ entry's own folder names do not count
    words = set(re.findall(r"[\w.]+/", block[:block.index("\n    tests/")]))
    for m, p in layers.find_modules(layers.package_dirs()).items():
        if p.name == "__init__.py":
            rel = p.parent.relative_to(REPO).as_posix() + "/"
            assert rel in named or f"{p.parent.name}/" in words, \
                f"package folder {rel} is missing from README's Layout"
    tracked_tops = {f.split("/")[0] + "/" for f in _tracked() if "/" in f
                    and not f.startswith(".")}
    named_tops = {n.split("/")[0] + "/" for n in named}
    assert tracked_tops <= named_tops, tracked_tops - named_tops
