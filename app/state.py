"""The dashboard's state: every session_state key in one place, and the obs objects behind the pages.

One `AppSession` per browser session holds the TraceStore, MetricsCollector,
LLMLogger, Tracer, InstrumentedClient and AlertManager, the chat history and
the last good sidebar settings. Pages get it with `get_app()`; nothing else
creates obs objects, so every number a page shows comes from these.

A page reload starts a new Streamlit session; so that it keeps the data, each
AppSession is also filed in a process-wide registry (`app.sessions`) under
the browser that made it and a random id that rides in the URL
(`?session=...`). The id alone opens nothing: only the same browser (its
secret XSRF cookie) finds the session again, so a shared link can neither
show the sender's data nor pull the receiver into the sender's session.
The embedded llama-server is a process-wide
resource too: started at most once per app process (`st.cache_resource`) when
no server answers at the configured URL, and stopped when the process exits.
So is the alert evaluator (`alert_evaluator()`): one thread per process that
evaluates every live session's alert rules in the background, whether a page
is open or not, and the webhook their firing and resolving are POSTed to
(`alert_webhook()`, from `OBS_ALERT_WEBHOOK_URL`). Pages read alert states
and history; they do not evaluate.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import streamlit as st

from app import alerting, backend
from app.charts import Threshold
from app.sessions import SessionRegistry, browser_owner
from obs import semconv
from obs.alerting.evaluator import AlertEvaluator
from obs.alerting.manager import AlertManager, AlertState, Notifier, WebhookNotifier
from obs.config import DB_PATH_ENV, db_path_from_env
from obs.llm.client import DEFAULT_MAX_CONTENT_CHARS, ChatStream, InstrumentedClient
from obs.llm.conversation import conversation_attributes, new_conversation_id
from obs.llm.llama.attributes import ContentBudget, input_messages_json
from obs.llm.llama.server import DEFAULT_HOST, DEFAULT_PORT, port_is_free, start_embedded_server
from obs.logs import LLMLogger
from obs.metrics.collector import MetricsCollector
from obs.storage.exporter import SqliteExporter, SqliteLogSink
from obs.storage.memory import TraceStore
from obs.storage.queries import DashboardQueries
from obs.storage.schema import MEMORY
from obs.storage.sqlite import SqliteTraceStore
from obs.trace.handles import SpanHandle
from obs.trace.processors import BatchProcessor
from obs.trace.sampling.head import ParentBased, TraceIdRatio
from obs.trace.sampling.tail import KeepSlow, TailSampler
from obs.trace.tracer import Tracer
from obs.trace.traces import Trace

__all__ = [
    "ALERTS_PAGE",
    "APP",
    "CHAT_PAGE",
    "DASHBOARD_PAGE",
    "LOADTEST_PAGE",
    "LOGS_PAGE",
    "QUERY_CONVERSATION",
    "QUERY_SESSION",
    "QUERY_TRACE",
    "SELECTED_TRACE",
    "SESSIONS_PAGE",
    "SESSION_ID",
    "TRACES_PAGE",
    "TURN_SPAN",
    "AppSession",
    "ChatTurn",
    "HistoryFile",
    "Settings",
    "alert_evaluator",
    "alert_webhook",
    "browser_owner_id",
    "get_app",
    "history_file",
    "init_widget",
    "keep_alive",
]

_log = logging.getLogger(__name__)

# Page scripts, relative to streamlit_app.py (st.navigation and st.page_link take these).
CHAT_PAGE = "app/pages/chat.py"
DASHBOARD_PAGE = "app/pages/dashboard.py"
TRACES_PAGE = "app/pages/traces.py"
LOGS_PAGE = "app/pages/logs.py"
SESSIONS_PAGE = "app/pages/sessions.py"
ALERTS_PAGE = "app/pages/alerts.py"
LOADTEST_PAGE = "app/pages/loadtest.py"

# Query-string parameters.
QUERY_SESSION = "session"
QUERY_TRACE = "trace"
QUERY_CONVERSATION = "conversation"

# The root span of each chat turn's trace (and so the trace's name).
TURN_SPAN = "chat turn"

# st.session_state keys. Widget keys start with "w_"; their values are only
# proposals until validated into AppSession.settings.
APP = "obs_app"
SESSION_ID = "obs_session_id"
OWNER = "obs_owner"
ACCESS_GRANTED = "obs_access_granted"
SELECTED_TRACE = "obs_selected_trace"
TRACE_TABLE_IDS = "obs_trace_table_ids"
TRACE_TABLE_PICK = "obs_trace_table_pick"
W_ACCESS_TOKEN = "w_access_token"
W_SERVER_URL = "w_server_url"
W_SYSTEM_PROMPT = "w_system_prompt"
W_TEMPERATURE = "w_temperature"
W_MAX_TOKENS = "w_max_tokens"
W_PROMPT_PRICE = "w_prompt_price"
W_COMPLETION_PRICE = "w_completion_price"
W_COMPUTE_PRICE = "w_compute_price"
W_CAPTURE = "w_capture_content"
W_REFRESH_S = "w_refresh_s"
W_PAUSED = "w_paused"
W_BUCKET_S = "w_bucket_s"
W_RANGE = "w_range"
W_KEEP_DAYS = "w_keep_days"
W_KEEP_TRACES = "w_keep_traces"
CLEAR_ASKED = "obs_clear_asked"
CLEAR_RESULT = "obs_clear_result"
W_SCOPE = "w_scope"
W_ERRORS_ONLY = "w_errors_only"
W_SLOWER_MS = "w_slower_ms"
W_SEARCH = "w_search"
W_TRACE_TABLE = "w_trace_table"
W_TRACE_PAGE = "w_trace_page"
W_LOG_LEVEL = "w_log_level"
W_LOG_TRACE = "w_log_trace"
W_LOG_TABLE = "w_log_table"
W_LOG_PAGE = "w_log_page"
W_SESSION_SEARCH = "w_session_search"
W_SESSION_MODEL = "w_session_model"
W_SESSION_ERRORS = "w_session_errors"
W_SESSION_TABLE = "w_session_table"
W_SESSION_PICK = "w_session_pick"
W_SESSION_PAGE = "w_session_page"
SESSION_TABLE_IDS = "obs_session_table_ids"
SESSION_TABLE_KEY = "obs_session_table_key"
SESSION_TABLE_PICK = "obs_session_table_pick"
W_SAMPLE_PCT = "w_sample_pct"
W_KEEP_ERRORS = "w_keep_errors"
W_KEEP_SLOW = "w_keep_slow"
W_SLOW_MS = "w_slow_ms"
W_ALERT_ERROR_PCT = "w_alert_error_pct"
W_ALERT_P95_MS = "w_alert_p95_ms"
W_ALERT_MIN_REQUESTS = "w_alert_min_requests"

_STORE_SIZE = 1000
SERVICE_NAME = "obs-dashboard"
# Traces reach the file at most this long after they end, off the chat's thread.
_EXPORT_DELAY_S = 0.5
_RETENTION_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The last good value of every sidebar setting (bad input never lands here).

    Sampling: `sample_rate` is the share of new traces head sampling keeps
    (0..1); the tail keeps errors and, with `keep_slow`, traces of at least
    `slow_ms`. Alerts: `alert_error_rate` (a fraction) and `alert_p95_ms` are
    the thresholds of obs's default rules; `alert_min_requests` replaces their
    minimum number of requests in the window (None keeps the defaults).
    Prices: `prompt_price` and `completion_price` are dollars per 1K tokens;
    `compute_price`, when set, prices every request by the server time
    llama.cpp reports instead, in dollars per hour (0: free).
    """

    server_url: str
    system_prompt: str = "You are a helpful assistant. Answer briefly."
    temperature: float = 0.7
    max_tokens: int = 256
    prompt_price: float = 0.001
    completion_price: float = 0.002
    capture_content: bool = True
    refresh_s: int = 5
    paused: bool = False
    bucket_s: int = 1
    sample_rate: float = 1.0
    keep_errors: bool = True
    keep_slow: bool = False
    slow_ms: float = 2000.0
    alert_error_rate: float = 0.05
    alert_p95_ms: float = 5000.0
    alert_min_requests: int | None = None
    compute_price: float | None = None


@dataclass(slots=True)
class ChatTurn:
    """One message of the chat history as shown: text, and for answers the caption and trace.

    `pending` is True while an answer is still arriving (its `content` is
    the text so far).
    """

    role: Literal["user", "assistant"]
    content: str
    caption: str | None = None
    trace_id: str | None = None
    error: str | None = None
    pending: bool = False


@dataclass(eq=False)
class AppSession:
    """The obs objects and chat of one browser session; shared by its pages, thread-safe.

    `client` talks to `settings.server_url`. Each chat turn is a trace of
    its own (`start_turn`, `stream_reply`, `end_turn`), finished, sampled
    and stored as soon as its answer is in; the turns of the current
    conversation share its id (`conversation`, a new one from
    `new_conversation`), which survives a change of server. The tracer's
    head and tail samplers follow the sampling
    settings (`set_sampling`). `alerts` watches the collector with obs's
    default rules at the settings' thresholds (`set_alert_thresholds`),
    logs to `logger` and tells `notifiers` (the process's webhook, if any);
    the process's alert evaluator evaluates it. `thresholds` maps a chart name ("latency_ms",
    "ttft_ms", "error_rate") to the lines drawn on it, derived from those rules.
    With `db` (the process's history file), kept traces, log entries and
    alert state changes are also written there, through `writers` (the
    process's shared trace and log writers; new ones when not given), and
    `queries` reads it; `conversations` lists this session's conversation ids.
    """

    settings: Settings
    connection_note: str = ""
    store: TraceStore = field(default_factory=lambda: TraceStore(max_traces=_STORE_SIZE))
    collector: MetricsCollector = field(default_factory=MetricsCollector)
    logger: LLMLogger = field(default_factory=lambda: LLMLogger(min_level="info"))
    messages: list[ChatTurn] = field(default_factory=list)
    thresholds: dict[str, list[Threshold]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    notifiers: tuple[Notifier, ...] = ()
    db: SqliteTraceStore | None = None
    writers: tuple[BatchProcessor, SqliteLogSink] | None = None
    tracer: Tracer = field(init=False)
    client: InstrumentedClient = field(init=False)
    alerts: AlertManager = field(init=False)
    conversation: str = field(default_factory=new_conversation_id, init=False)
    conversations: list[str] = field(default_factory=list, init=False)
    queries: DashboardQueries | None = field(default=None, init=False)
    _log_sink: SqliteLogSink | None = field(default=None, init=False, repr=False)
    _saved_alerts: int = field(default=0, init=False, repr=False)
    _turns: dict[str, tuple[SpanHandle, str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.collector.set_prices(self.settings.prompt_price, self.settings.completion_price)
        self.collector.set_compute_price(self.settings.compute_price)
        processors = []
        if self.db is not None:
            # Kept traces and log entries go to the shared file from background threads, so a
            # chat never waits for the disk.
            processor, self._log_sink = self.writers or _writers(self.db)
            processors.append(processor)
            self.logger = LLMLogger(min_level="info", stream=self._log_sink)
        self.tracer = Tracer(store=self.store, collector=self.collector, logger=self.logger,
                             processors=processors, service_name=SERVICE_NAME)
        self.client = self._make_client(self.settings.server_url)
        settings = self.settings
        self.tracer.head_sampler, self.tracer.tail_sampler = _samplers(
            settings.sample_rate, settings.keep_errors, settings.keep_slow, settings.slow_ms)
        rules = alerting.dashboard_rules(settings.alert_error_rate, settings.alert_p95_ms,
                                         settings.alert_min_requests)
        self.alerts = _SavingAlertManager(self.collector, rules, self.notifiers, logger=self.logger)
        self.alerts.saved_by = self
        self.queries = None if self.db is None else DashboardQueries(self.db)
        self.thresholds.update(alerting.chart_thresholds(rules))

    def _make_client(self, url: str) -> InstrumentedClient:
        return InstrumentedClient(
            base_url=url,
            tracer=self.tracer,
            capture_content=self.settings.capture_content,
        )

    def update(self, **changes: Any) -> None:
        """Adopt new settings that were already validated; a new server URL gets a new client.

        Prices go through `set_prices` instead, since the collector validates them.
        """
        with self.lock:
            new = replace(self.settings, **changes)
            if new == self.settings:
                return
            old = self.settings
            self.settings = new
            if new.server_url != old.server_url:
                previous, self.client = self.client, self._make_client(new.server_url)
                previous.close()
                self.connection_note = ""
            if new.capture_content != old.capture_content:
                self.client.capture_content = new.capture_content

    def set_prices(self, prompt_price: float, completion_price: float) -> None:
        """Apply prices through the collector; raises its ValueError for a bad price, changing nothing."""
        with self.lock:
            current = (self.settings.prompt_price, self.settings.completion_price)
            if (prompt_price, completion_price) == current:
                return
            self.collector.set_prices(prompt_price, completion_price)
            self.settings = replace(self.settings, prompt_price=float(prompt_price),
                                    completion_price=float(completion_price))

    def set_compute_price(self, dollars_per_hour: float | None) -> None:
        """Price new requests by server time at `dollars_per_hour` (0: free), or by tokens again for None.

        Applied through the collector; raises its ValueError for a bad price,
        changing nothing.
        """
        with self.lock:
            if dollars_per_hour == self.settings.compute_price:
                return
            self.collector.set_compute_price(dollars_per_hour)
            price = None if dollars_per_hour is None else float(dollars_per_hour)
            self.settings = replace(self.settings, compute_price=price)

    def set_sampling(self, rate: float, keep_errors: bool, keep_slow: bool, slow_ms: float) -> None:
        """Sample new traces with ParentBased(TraceIdRatio(rate)); keep errors / slow traces at the tail.

        `slow_ms` is validated even while `keep_slow` is off, so a bad value
        is reported at once. Raises obs's ValueError (naming the argument) for
        a bad rate or threshold, changing nothing. A turn being answered
        keeps the head decision it got when it began.
        """
        with self.lock:
            current = self.settings
            if (rate, keep_errors, keep_slow, slow_ms) == (
                current.sample_rate, current.keep_errors, current.keep_slow, current.slow_ms
            ):
                return
            head, tail = _samplers(rate, keep_errors, keep_slow, slow_ms)
            self.tracer.head_sampler, self.tracer.tail_sampler = head, tail
            self.settings = replace(current, sample_rate=float(rate), keep_errors=bool(keep_errors),
                                    keep_slow=bool(keep_slow), slow_ms=float(slow_ms))

    def set_alert_thresholds(self, error_rate: float, p95_ms: float, min_requests: int | None = None) -> None:
        """Alert on an error rate above `error_rate` (a fraction) and a p95 latency above `p95_ms`.

        The rules are obs's defaults with these thresholds (`min_requests`
        replaces their minimum when given); a rule keeps its state in the
        manager, and the charts' threshold lines follow. Raises ValueError
        naming the bad value, changing nothing.
        """
        with self.lock:
            current = self.settings
            if (error_rate, p95_ms, min_requests) == (
                current.alert_error_rate, current.alert_p95_ms, current.alert_min_requests
            ):
                return
            rules = alerting.dashboard_rules(error_rate, p95_ms, min_requests)
            self.alerts.set_rules(rules)
            self.thresholds.clear()
            self.thresholds.update(alerting.chart_thresholds(rules))
            self.settings = replace(current, alert_error_rate=float(error_rate), alert_p95_ms=float(p95_ms),
                                    alert_min_requests=min_requests)

    def evaluate_alerts(self, now: float | None = None) -> list[AlertState]:
        """Evaluate the alert rules now (or at `now`, epoch s) and return every rule's state.

        Firing and resolving are logged to the session's logger; failures of
        evaluation are logged and counted by the manager, never raised. The
        process's alert evaluator does this in the background; pages read
        `alert_states()` instead.
        """
        return self.alerts.evaluate(now)

    def save_alert_transitions(self) -> int:
        """Store the alert state changes not stored yet in the shared file; return how many (0 without one).

        Never raises: a failure is logged and the changes are tried again next time.
        """
        if self.db is None:
            return 0
        with self.lock:
            try:
                history = self.alerts.history
                # The history is bounded: when it has rolled over, what is left is all new.
                fresh = history[self._saved_alerts:] if self._saved_alerts <= len(history) else history
                if fresh:
                    self.db.add_alert_transitions(fresh, service=SERVICE_NAME)
                self._saved_alerts = len(history)
                return len(fresh)
            except Exception:
                _log.exception("storing alert transitions failed")
                return 0

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write every finished trace and log entry waiting to the shared file now; True if done in time."""
        done = self.tracer.force_flush(timeout_s)
        if self._log_sink is not None:
            done = self._log_sink.flush(timeout_s) and done
        return done

    def alert_states(self) -> list[AlertState]:
        """Every rule's state as the last evaluation left it (the background evaluator's, usually)."""
        return self.alerts.states()

    def add_turn(self, turn: ChatTurn) -> None:
        """Append a message to the chat history."""
        with self.lock:
            self.messages.append(turn)

    def history(self) -> list[ChatTurn]:
        """Copies of the chat history's turns, as they stand now (an answer may still be arriving)."""
        with self.lock:
            return [replace(turn) for turn in self.messages]

    def answering(self) -> bool:
        """True while an answer is still arriving."""
        with self.lock:
            return any(turn.pending for turn in self.messages)

    def request_messages(self) -> list[dict[str, str]]:
        """The chat so far as OpenAI messages: the system prompt, then every turn that has text."""
        with self.lock:
            messages = []
            if self.settings.system_prompt.strip():
                messages.append({"role": "system", "content": self.settings.system_prompt})
            messages.extend({"role": t.role, "content": t.content} for t in self.messages if t.content)
            return messages

    def start_turn(self) -> str:
        """Begin the trace of a chat turn, for the question last added to the history; return its id.

        The trace's root span (`TURN_SPAN`) carries the conversation's ids
        (`gen_ai.conversation.id` and `session.id`) and, while message
        contents are recorded, the question alone (`gen_ai.input.messages`).
        It is always a new trace, whatever span is current here.
        `stream_reply` sends the request under it; `end_turn` ends it.
        """
        with self.lock:
            attrs: dict[str, Any] = conversation_attributes(self.conversation)
            question = next((t.content for t in reversed(self.messages) if t.role == "user"), None)
            if self.settings.capture_content and question is not None:
                budget = ContentBudget(DEFAULT_MAX_CONTENT_CHARS)
                attrs[semconv.GEN_AI_INPUT_MESSAGES] = input_messages_json(
                    [{"role": "user", "content": question}], budget)
                if budget.truncated:
                    attrs[semconv.OBS_CONTENT_TRUNCATED] = True
            span = contextvars.Context().run(self.tracer.begin_span, TURN_SPAN, attrs)
            if self.conversation not in self.conversations:
                self.conversations.append(self.conversation)
            self._turns[span.trace_id] = (span, self.conversation)
            return span.trace_id

    def stream_reply(self, turn: str) -> ChatStream:
        """Send the chat so far as one streamed request, a span under the root span of turn `turn`.

        The request's span carries the turn's conversation ids too. Raises
        the client's LLMServerError when the request cannot be sent or the
        server refuses it (errors while streaming raise from iteration), and
        ValueError for a `turn` that `start_turn` did not return or that has
        ended.
        """
        with self.lock:
            begun = self._turns.get(turn)
            client, settings = self.client, self.settings
            messages = self.request_messages()
        if begun is None:
            raise ValueError(f"stream_reply: turn must be a trace id from start_turn that has not ended, "
                             f"got {turn!r}")
        root, conversation = begun
        return client.chat_stream(messages, parent=root, conversation_id=conversation,
                                  temperature=settings.temperature, max_tokens=settings.max_tokens)

    def end_turn(self, turn: str, error: str | None = None) -> None:
        """End the root span of turn `turn`, failed with `error` if given; no-op for an unknown or ended turn.

        The turn's trace finishes (sampled, stored, counted) once its
        request's span has ended as well: at once after a complete answer.
        A failure to end it is logged, never raised into the chat.
        """
        with self.lock:
            begun = self._turns.pop(turn, None)
        if begun is None:
            return
        try:
            begun[0].end(error=error) if error else begun[0].end()
        except Exception:
            _log.exception("ending the trace of a chat turn failed")

    def new_conversation(self) -> str:
        """Start a new conversation: a new id for the turns to come, and an empty chat history; return the id.

        An answer still arriving ends in the conversation it began in.
        """
        with self.lock:
            self.conversation = new_conversation_id()
            self.messages.clear()
            return self.conversation

    def conversation_id(self) -> str:
        """The id of the current conversation (`gen_ai.conversation.id` on its turns' spans)."""
        with self.lock:
            return self.conversation

    def traces(self) -> list[Trace]:
        """The stored traces, oldest first (a turn is stored once its answer is in)."""
        return self.store.all()

    def find_trace(self, trace_id: str) -> Trace | None:
        """The stored trace with this id, or None."""
        return self.store.get(trace_id)

    def chart_thresholds(self, chart: str) -> list[Threshold]:
        """The threshold lines to draw on `chart` (empty until alert rules set some)."""
        return list(self.thresholds.get(chart, ()))


def _writers(db: SqliteTraceStore) -> tuple[BatchProcessor, SqliteLogSink]:
    """A background writer of finished traces and one of log entries, both into `db`."""
    return (BatchProcessor(SqliteExporter(db), schedule_delay_s=_EXPORT_DELAY_S),
            SqliteLogSink(db, service=SERVICE_NAME))


class _SavingAlertManager(AlertManager):
    """An AlertManager whose every evaluation (the background evaluator's too) stores its state changes."""

    saved_by: AppSession | None = None

    def evaluate(self, now: float | None = None) -> list[AlertState]:
        """Evaluate as AlertManager does, then store the new transitions in the session's history file."""
        states = super().evaluate(now)
        if self.saved_by is not None:
            self.saved_by.save_alert_transitions()
        return states


def _samplers(rate: float, keep_errors: bool, keep_slow: bool,
              slow_ms: float) -> tuple[ParentBased, TailSampler]:
    KeepSlow(slow_ms)  # validates the threshold even while the rule is off
    return ParentBased(TraceIdRatio(rate)), TailSampler(keep_errors=bool(keep_errors),
                                                        slow_threshold_ms=slow_ms if keep_slow else None)


@st.cache_resource(show_spinner=False)
def _registry() -> SessionRegistry[AppSession]:
    return SessionRegistry()


@st.cache_resource(show_spinner=False)
def _owner_key() -> bytes:
    # Lives only in this process: owner ids mean nothing outside it.
    return secrets.token_bytes(32)


def _cookies() -> Mapping[str, str]:
    return st.context.cookies


def browser_owner_id() -> str | None:
    """An id of the browser this page runs in (from its XSRF cookie), or None when it sent none."""
    try:
        return browser_owner(_cookies(), _owner_key())
    except Exception:  # no cookies to read (a bare script run): the session is simply not filed
        return None


@st.cache_resource(show_spinner=False)
def alert_evaluator() -> AlertEvaluator:
    """The process's alert evaluator: one thread evaluating every live session's rules, started once.

    Its interval is `OBS_ALERT_INTERVAL_S` (seconds, default 5); a bad value
    is logged and the default used. Sessions are held weakly: one nothing
    else holds any more is no longer evaluated.
    """
    try:
        interval = alerting.interval_from_env(os.environ)
    except ValueError as exc:
        _log.warning("%s; evaluating alerts every %g s", exc, alerting.DEFAULT_INTERVAL_S)
        interval = alerting.DEFAULT_INTERVAL_S
    evaluator = AlertEvaluator(interval_s=interval)
    evaluator.start()
    atexit.register(evaluator.stop, 1.0)
    return evaluator


@st.cache_resource(show_spinner=False)
def _webhook_for(url: str) -> tuple[WebhookNotifier | None, str]:
    try:
        hook = WebhookNotifier(url)
    except ValueError as exc:
        _log.warning("%s ignored: %s", alerting.WEBHOOK_ENV, exc)
        return None, f"{alerting.WEBHOOK_ENV} ignored: {exc}"
    atexit.register(hook.close, 2.0)  # deliver what is queued before the process ends
    return hook, ""


def alert_webhook() -> tuple[WebhookNotifier | None, str]:
    """The webhook at `OBS_ALERT_WEBHOOK_URL` (one per URL per process), and why not when it is unusable.

    (None, "") when the variable is unset; (None, the reason) for a URL the
    notifier refuses.
    """
    url = alerting.webhook_url_from_env(os.environ)
    return _webhook_for(url) if url else (None, "")


@dataclass(frozen=True, slots=True)
class HistoryFile:
    """The store every session of this process writes to, and what the user should know about it.

    `problem` is empty when the file asked for is in use; otherwise it says
    why not (the store's own message), and `store` keeps this run's history
    in memory instead.
    """

    store: SqliteTraceStore
    requested: str
    problem: str = ""
    writers: tuple[BatchProcessor, SqliteLogSink] | None = None

    @property
    def in_memory(self) -> bool:
        """True when nothing is kept after the app stops."""
        return self.store.path == MEMORY


def _make_directory(path: str) -> None:
    if path == MEMORY:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)  # traces hold prompts: the owner's alone
    except OSError as exc:
        raise ValueError(f"cannot create the directory {directory!r} for {path!r}: {exc.strerror or exc}; "
                         f"set {DB_PATH_ENV} to another path") from exc


@st.cache_resource(show_spinner=False)
def _open_history(path: str) -> HistoryFile:
    try:
        _make_directory(path)
        store = SqliteTraceStore(path)
    except ValueError as exc:
        _log.warning("history file not used: %s", exc)
        store = SqliteTraceStore(MEMORY)
        problem = str(exc)
    else:
        problem = ""
    try:
        store.start_retention(_RETENTION_INTERVAL_S)
    except Exception:  # retention is housekeeping: the app works without it
        _log.exception("starting retention failed")
    # One trace writer and one log writer (each a thread) for every session of the process.
    processor, sink = writers = _writers(store)

    def close() -> None:
        processor.shutdown(5.0)
        sink.close(5.0)
        store.close()

    atexit.register(close)
    return HistoryFile(store, path, problem, writers)


def history_file() -> HistoryFile:
    """The process's shared history file: `OBS_DB_PATH` (default `.obs/obs.db`; ":memory:" for none).

    Opened once per path per process. A file that cannot be used (damaged,
    of a newer version, not a database, in a directory that cannot be
    written) is never touched: history is kept in memory instead and
    `problem` says why.
    """
    return _open_history(db_path_from_env())


@st.cache_resource(show_spinner="Starting the embedded llama-server...")
def _embedded_server() -> Any:
    # The default port when free, so `make run` serves where the docs say; any free port otherwise.
    port = DEFAULT_PORT if port_is_free(DEFAULT_HOST, DEFAULT_PORT) else 0
    return start_embedded_server(port=port)


def _initial_server() -> tuple[str, str]:
    try:
        configured = backend.configured_server_url()
    except ValueError as exc:
        configured = backend.DEFAULT_SERVER_URL
        note = f"{backend.SERVER_URL_ENV} ignored: {exc}. "
    else:
        note = ""
    url, how = backend.choose_server_url(
        configured,
        allow_embedded=backend.embedded_allowed(),
        start_embedded=lambda: _embedded_server().url,
    )
    return url, note + how


def get_app() -> AppSession:
    """The AppSession of this browser session: this browser's session named in the URL, else a new one.

    The URL's `?session=` id is looked up only among the sessions of this
    browser (its XSRF cookie), so a link from someone else starts a fresh
    session rather than opening theirs. Creating one picks the server
    (configured URL, else the embedded server) and may take a few seconds the
    first time the embedded server starts.
    """
    app = st.session_state.get(APP)
    sid = st.session_state.get(SESSION_ID)
    if app is None:
        owner = browser_owner_id()
        wanted = st.query_params.get(QUERY_SESSION)
        app = _registry().get(owner, wanted) if owner and wanted else None
        if app is not None:
            sid = wanted
        else:
            if wanted:
                st.toast("That session is not open in this browser: this is a new one.",
                         icon=":material/lock:")
            url, how = _initial_server()
            hook, _ = alert_webhook()
            history = history_file()
            app = AppSession(Settings(server_url=url), connection_note=how,
                             notifiers=(hook,) if hook is not None else (), db=history.store,
                             writers=history.writers)
            sid = secrets.token_urlsafe(12)
            if owner is not None and not _registry().put(owner, sid, app):
                _log.warning("session registry full of active browsers: this session will not survive "
                             "a reload")
        alert_evaluator().watch(app.alerts)
        st.session_state[APP] = app
        st.session_state[SESSION_ID] = sid
        st.session_state[OWNER] = owner
    else:
        keep_alive()
    if st.query_params.get(QUERY_SESSION) != sid:
        st.query_params[QUERY_SESSION] = sid
    return app


def keep_alive() -> None:
    """Mark this page's session as in use, so that room for newcomers is never made from it."""
    owner, sid = st.session_state.get(OWNER), st.session_state.get(SESSION_ID)
    if owner and sid:
        _registry().touch(owner, sid)


def init_widget(key: str, value: Any) -> None:
    """Give widget `key` its value from the settings unless the user has one in play.

    Streamlit forgets a widget's state on pages that do not draw it, so each
    page seeds its widgets from the last good settings.
    """
    if key not in st.session_state:
        st.session_state[key] = value
