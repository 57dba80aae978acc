"""``python -m bruno_memstore.cli``."""

from . import main

main()
