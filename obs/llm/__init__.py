"""Talking to the LLM server: the `InstrumentedClient` (`client`), its streams
(`stream`), the same for asyncio (`async_client`, `async_stream`),
conversations of per-turn traces (`conversation`), how one call is recorded
(`_recording`), the errors failures become (`errors`, `_server_errors`), the
response cache (`cache`), and llama-server specifics (`llama`). Private
helpers: what the two clients share but the I/O (`_client_base`,
`_stream_state`), the validated configuration and the wiring of a client's
sinks (`_config`), the metrics summary text (`_summary`), the time and size
limits and the readers held to them (`_limits`), keeping secrets out of
what is recorded (`_redaction`), the request body (`_request`) and the
server's `/props` (`_props`).
"""
