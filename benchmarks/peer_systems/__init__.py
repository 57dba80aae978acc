"""The systems measured by ``benchmarks.peers``, one module per family.

Everything here runs inside a worker process started with the system's own interpreter
(a virtualenv holding that library, or the project's own), so the package and
:mod:`.data`, :mod:`.contract` and :mod:`.worker` use the standard library only; each
family module imports its library when a system of it is opened.
"""
