"""The parts of :mod:`locallab_cpp.serving.tools` (import from there): call types
(calls.py), scanning (scan.py), the streaming reader (streamer.py), the families
(formats.py), grammars (grammar.py), argument validation (validate.py)."""
