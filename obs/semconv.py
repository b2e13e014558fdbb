"""Every attribute key obs writes, spelled once.

GenAI keys follow the OpenTelemetry GenAI semantic conventions (v1.41.1);
llama.cpp numbers that have no convention live under `llama_cpp.`; numbers
obs derives itself live under `obs.`.
"""

from __future__ import annotations

# OpenTelemetry GenAI: operation and provider.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"

# Grouping chat turns: Phoenix (and OpenInference) read `session.id`; set with the GenAI key.
SESSION_ID = "session.id"

# Request parameters.
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"

# Response.
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"

# Usage.
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"

# Opt-in content (JSON strings on spans).
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"

# General OpenTelemetry keys.
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
ERROR_MESSAGE = "error.message"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
SERVICE_NAME = "service.name"

# Values.
PROVIDER_LLAMA_CPP = "llama.cpp"
OPERATION_CHAT = "chat"
ERROR_TYPE_OTHER = "_OTHER"

# llama.cpp timings and server facts (no convention exists: one prefix).
LLAMA_CPP_TIMINGS_PROMPT_N = "llama_cpp.timings.prompt_n"
LLAMA_CPP_TIMINGS_PROMPT_MS = "llama_cpp.timings.prompt_ms"
LLAMA_CPP_TIMINGS_PROMPT_PER_SECOND = "llama_cpp.timings.prompt_per_second"
LLAMA_CPP_TIMINGS_PREDICTED_N = "llama_cpp.timings.predicted_n"
LLAMA_CPP_TIMINGS_PREDICTED_MS = "llama_cpp.timings.predicted_ms"
LLAMA_CPP_TIMINGS_PREDICTED_PER_SECOND = "llama_cpp.timings.predicted_per_second"
LLAMA_CPP_TIMINGS_CACHE_N = "llama_cpp.timings.cache_n"
LLAMA_CPP_TIMINGS_DRAFT_N = "llama_cpp.timings.draft_n"
LLAMA_CPP_TIMINGS_DRAFT_N_ACCEPTED = "llama_cpp.timings.draft_n_accepted"
LLAMA_CPP_DRAFT_ACCEPTANCE_RATE = "llama_cpp.draft_acceptance_rate"
LLAMA_CPP_PROMPT_CACHE_RATIO = "llama_cpp.prompt_cache_ratio"
LLAMA_CPP_N_CTX = "llama_cpp.n_ctx"
LLAMA_CPP_BUILD = "llama_cpp.build"
LLAMA_CPP_MODEL_PATH = "llama_cpp.model_path"

# Numbers obs derives per request.
OBS_LATENCY_MS = "obs.latency_ms"
OBS_TTFT_MS = "obs.ttft_ms"
OBS_TOKENS_PER_SECOND = "obs.tokens_per_second"
OBS_NON_MODEL_MS = "obs.non_model_ms"
OBS_INTER_TOKEN_MEAN_MS = "obs.inter_token_latency.mean_ms"
OBS_INTER_TOKEN_P50_MS = "obs.inter_token_latency.p50_ms"
OBS_INTER_TOKEN_P95_MS = "obs.inter_token_latency.p95_ms"
OBS_CACHE_HIT = "obs.cache_hit"
OBS_COST_USD = "obs.cost.usd"
OBS_COST_PRICING = "obs.cost.pricing"
OBS_STREAM_CHUNKS = "obs.stream.chunks"
OBS_PARTIAL_OUTPUT = "obs.partial_output"
OBS_STREAM_CLOSED_EARLY = "obs.stream.closed_early"
# Markers: message content cut at its cap; usage fields the server sent out of range.
OBS_CONTENT_TRUNCATED = "obs.content.truncated"
OBS_USAGE_INVALID = "obs.usage.invalid"
# Where a store noted the values it replaced with placeholders (a span's attribute, a trace's metadata).
OBS_REPLACED = "obs.replaced"
# An explicit trace's own name, times, status and metadata, carried on its root span by exporters
# (OTLP has no trace object) only when the spans alone do not say them.
OBS_TRACE_PREFIX = "obs.trace."
OBS_TRACE_NAME = "obs.trace.name"
OBS_TRACE_START_TIME_UNIX_NANO = "obs.trace.start_time_unix_nano"
OBS_TRACE_END_TIME_UNIX_NANO = "obs.trace.end_time_unix_nano"
OBS_TRACE_STATUS = "obs.trace.status"
OBS_TRACE_METADATA_PREFIX = "obs.trace.metadata."

# Values of `obs.cost.pricing`: how a request's cost was reached.
PRICING_TOKENS = "tokens"  # per-1K-token prices
PRICING_COMPUTE = "compute"  # dollars per hour of server time (llama.cpp's prompt_ms + predicted_ms)
PRICING_FREE = "free"  # the model's price is zero: $0 on purpose
PRICING_CACHE = "cache"  # answered from the response cache: no tokens, no server time
PRICING_UNKNOWN = "unknown"  # priced by compute, but the server reported no timings

# Span event names.
EVENT_REQUEST_START = "request_start"
EVENT_FIRST_TOKEN = "first_token"
EVENT_RESPONSE_RECEIVED = "response_received"
EVENT_EXCEPTION = "exception"
