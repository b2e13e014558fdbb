"""llama-server specifics: response and stream parsing, the embedded server launcher,
and the /props, /metrics and /health readers."""
