"""Storage: where finished traces (and log entries, alert transitions) are kept and queried.

`base.TraceStoreProtocol` is the shape every trace store has; `memory.TraceStore`
keeps traces in memory (bounded), `sqlite.SqliteTraceStore` in a SQLite file
that several processes share (`schema` describes the file, `retention` how
long it keeps things). `exporter` writes into the file from the processor
seam and the logger; `queries.DashboardQueries` reads what the dashboard
shows, as SQL aggregates (`series` for its charts); `results` holds the values
they return.
"""
