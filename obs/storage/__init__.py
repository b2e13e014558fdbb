"""Storage: where finished traces are kept and queried.

`protocol.TraceStoreProtocol` is the shape every store has; `memory.TraceStore`
keeps traces in memory (bounded), `sqlite.SqliteTraceStore` in a SQLite file.
"""
