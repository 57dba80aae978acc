"""Machinery shared by backends whose engines lack a native feature.

* ``codec`` — one record codec: every record kind in one field order, to and from rows and
  documents (formats already stored keep their order and names).
* ``user_cache`` — one per-user version-tagged cache of derived state.
* ``keyword_index`` — one in-process keyword index (BM25 over the shared analysis) per
  user, every filter applied inside, and the search over a cache of them.
* ``vectors`` — one exact vector index with the user filter inside, its per-user cache and
  the append-log indexes of engines that log appended vectors.
* ``hits`` — search answers as record ids, and the hits they become.
* ``batches`` — work in chunks, records in export batches.
* ``kv``, ``kv_memory`` — values of any size and append-only logs over a key-value
  engine with ``add`` and ``cas``, and the storage primitives built on them.
* ``apart`` — isolating the writer that broke a group commit.
* ``appends`` — one ``_append_messages`` call as a value, as writers queue it.
* ``settings`` — constructor settings checked one way (positive ints and seconds, typed
  settings with a default and a lower bound).
* ``driver_url`` — the base of backends configured by one driver URL (built from it, shown
  and quoted in errors with its secrets hidden).
"""
