"""The `livestems` command line: argument parsing and thin commands that call the layers below.

- ``main``: the entry point (``livestems = livestems.stream.cli.main:main``), the parser, the
  `separate`, `demo` and `models` commands, errors turned into advice and exit codes.
- one module per other command (``NAME``, ``add_parser``, ``run``): ``bench``, ``campaign``,
  ``devices``, ``eval``, ``import_demucs``, ``jack``, ``karaoke``, ``midi``, ``synth``,
  ``train``. ``jack`` holds the options every live command shares.

May import anything in livestems. Nothing imports it but ``livestems.stream.__main__``.
"""
