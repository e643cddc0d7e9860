"""The cffi embedding build of liblivestems.so: emits the C source; `make -C bridge` compiles it.

Run with the Python whose packages the library should use (the project's .venv)::

    .venv/bin/python bridge/build.py bridge/build

It writes three files into the build folder:

- ``_livestems_cffi.c``: cffi's embedding module. Its C part is ``src/ls_core.c`` (the public
  API of ``include/livestems.h``, the C11-atomic rings and the real-time ``process``); its
  Python part is the init code below, which defines the two ``extern "Python"`` functions
  ``ls_py_create`` / ``ls_py_destroy`` that ``livestems_create`` / ``livestems_destroy`` call.
  cffi runs the init code on the first such call, never from ``livestems_process``.
- ``ls_buildinfo.h``: where this Python lives (its home, libpython and the venv's
  site-packages), baked in so that a host that is not Python can start the same interpreter
  with the same packages.
- ``python.mk``: the compiler and linker flags for that Python (``python3-config --embed``).

We emit C and compile it with make (``ffibuilder.emit_c_code``) rather than
``ffibuilder.compile()``, so the link line is ours: an rpath to libpython, ``-z nodelete``
(Python keeps pointers into this library forever, so it must never be unloaded) and a version
script that exports only ``livestems_*``.
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent
MODULE = "_livestems_cffi"

# What the Python side may call in C. Everything here is static in ls_core.c (not exported).
CDEF = """
typedef struct livestems livestems_t;

const char *ls__cfg_model(livestems_t *h);
const char *ls__cfg_quality(livestems_t *h);
double ls__cfg_safety_ms(livestems_t *h);
double ls__cfg_rate(livestems_t *h);
uint32_t ls__cfg_max_block(livestems_t *h);
uint32_t ls__cfg_channels(livestems_t *h);
uint32_t ls__cfg_flags(livestems_t *h);
void ls__set_error(livestems_t *h, const char *msg);
int ls__configure(livestems_t *h, uint32_t n_stems, uint32_t n_buses, uint64_t cap_in,
                  uint64_t cap_wet, uint64_t cap_dry, uint32_t latency, uint32_t model_rate,
                  uint32_t hop, double decay, uint32_t xfade_len);
void ls__set_stem_name(livestems_t *h, uint32_t stem, const char *name);
float *ls__ring_buffer(livestems_t *h, int ring);
uint32_t ls__ring_rows(livestems_t *h, int ring);
uint64_t ls__ring_capacity(livestems_t *h, int ring);
uint64_t ls__ring_load(livestems_t *h, int ring, int which);
void ls__ring_store(livestems_t *h, int ring, int which, uint64_t value);
void ls__ring_reset(livestems_t *h, int ring);
uint64_t ls__audio_pos(livestems_t *h);
uint32_t ls__param_gen(livestems_t *h);
float ls__param_value(livestems_t *h, uint32_t id);
void ls__publish(livestems_t *h, uint64_t hops, uint64_t skipped, uint64_t nonfinite,
                 uint64_t last_ns, uint64_t worst_ns);
void ls__set_worker_failed(livestems_t *h);
"""

# Implemented in Python (the init code); called from C at create / destroy only.
EMBEDDING_API = """
int ls_py_create(livestems_t *h);
int ls_py_destroy(livestems_t *h);
"""

# Runs once, inside the host's process, on the first ls_py_* call. It must not fail: an
# exception here is printed by cffi on the host's stderr and every later call returns 0, so
# all imports that can fail happen inside the functions, where they become error strings.
INIT_CODE = r'''
import os
import site
import sys

from _livestems_cffi import ffi, lib

_BAKED_SITE = %(site)r
_ERR_PYTHON = -8
_VERBOSE = 2


def _add_site_dirs():
    """Make the venv's packages importable; addsitedir also runs its .pth files, which is
    how an editable install of livestems (pip install -e) is found."""
    env = os.environ.get("LIVESTEMS_SITE_PACKAGES")
    for d in (env.split(os.pathsep) if env else _BAKED_SITE):
        if d and d not in sys.path:
            site.addsitedir(d)


def _host():
    _add_site_dirs()
    from livestems.bridge import host
    return host


@ffi.def_extern()
def ls_py_create(h):
    try:
        host = _host()
    except BaseException as exc:
        if lib.ls__cfg_flags(h) & _VERBOSE:
            import traceback
            traceback.print_exc()
        msg = ("cannot import the livestems Python package (%%s: %%s); set "
               "LIVESTEMS_SITE_PACKAGES to the site-packages folder of a Python %%d.%%d "
               "environment where livestems is installed" %% (
                   type(exc).__name__, exc, sys.version_info[0], sys.version_info[1]))
        lib.ls__set_error(h, msg.encode("utf-8", "replace"))
        return _ERR_PYTHON
    return host.create(ffi, lib, h)


@ffi.def_extern()
def ls_py_destroy(h):
    try:
        return _host().destroy(ffi, lib, h)
    except BaseException:
        return _ERR_PYTHON
'''


def make_ffi(site_dirs: list[str]) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.embedding_api(EMBEDDING_API)
    # the C part: ls_core.c through #include, so compiler messages point at the real file
    ffi.set_source(MODULE, '#include "ls_core.c"')
    ffi.embedding_init_code(INIT_CODE % {"site": site_dirs})
    return ffi


def python_info() -> dict:
    """Where the running Python lives, for the C side and the link line."""
    cv = sysconfig.get_config_var
    version = cv("VERSION")  # "3.11"
    libdir = cv("LIBDIR")
    ldlibrary = cv("LDLIBRARY") or f"libpython{version}.so"
    if not ldlibrary.endswith(".so") and ".so." not in ldlibrary:
        raise SystemExit(
            f"this Python ({sys.executable}) has no shared libpython ({ldlibrary}); an "
            "embedding library needs one: build Python with --enable-shared (pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared) or use Debian's python3")
    return {
        "version": version,
        "home": sys.base_prefix,
        "libdir": libdir,
        "libpython": cv("INSTSONAME") or ldlibrary,  # e.g. libpython3.11.so.1.0
        "include": sysconfig.get_paths()["include"],
        "ldlibs": f"-L{libdir} -lpython{version}{cv('ABIFLAGS') or ''}",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = python_info()
    site_dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    ffi = make_ffi(site_dirs)
    ffi.emit_c_code(str(out / f"{MODULE}.c"))
    _write_if_changed(out / "ls_buildinfo.h", (
        "/* written by bridge/build.py: the Python liblivestems.so was built against */\n"
        f'#define LS_LIBPYTHON "{info["libpython"]}"\n'
        f'#define LS_PYTHONHOME "{info["home"]}"\n'
        f'#define LS_PYVERSION "{info["version"]}"\n'
        f'#define LS_SITE_PACKAGES "{":".join(site_dirs)}"\n'))
    _write_if_changed(out / "python.mk", (
        "# written by bridge/build.py\n"
        f"PY_CFLAGS := -I{info['include']}\n"
        f"PY_LDLIBS := {info['ldlibs']} -Wl,-rpath,{info['libdir']}\n"))
    return 0


def _write_if_changed(path: Path, text: str) -> None:
    """Keep the timestamp when nothing changed, so make's rebuilds stay incremental."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
