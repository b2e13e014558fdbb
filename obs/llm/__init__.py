"""Talking to the LLM server: the `InstrumentedClient` (`client`), its streams
(`stream`), how one call is recorded (`_recording`), the errors failures become
(`errors`, `_server_errors`), the response cache (`cache`), and llama-server
specifics (`llama`).
"""
