"""Export & receive page: where programs send traces in, where the dashboard forwards its own, files.

- Receive: the receiver's address and the exact `OTEL_EXPORTER_OTLP_ENDPOINT`
  line that points any OpenTelemetry program at the dashboard (or why there
  is no receiver).
- Forward: a form (endpoint, protocol, headers) that sends every trace kept
  from now on to an OTLP endpoint; the exporter's counters and last error.
  Header values are taken once and never shown back (only their names).
- Proxy: a switch that starts the recording proxy (`app.proxying`) in front
  of the dashboard's llama-server, so a program that knows nothing of obs
  has its model calls recorded here; its address, the lines that point a
  program at it, and its counters.
- Files: the command that writes the stored traces to a file.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app import proxying, receiving, sidebar, state
from obs.proxy import ProxyStartError

_PROTOCOLS = ["http/protobuf", "http/json"]
_COUNTERS_EVERY_S = 2.0
_PROXY_UPSTREAM, _PROXY_PORT, _PROXY_CAPTURE, _PROXY_PROBLEM = "w_proxy_upstream", "w_proxy_port", \
    "w_proxy_capture", "proxy_problem"


def _receive() -> None:
    st.subheader("Receive traces")
    info = receiving.receiver()
    if not info.enabled:
        st.info(f"The receiver is off ({receiving.RECEIVER_PORT_ENV}=0). Set it to a port (4318 is "
                "OTLP/HTTP's own) to take traces from other programs.", icon=":material/sensors_off:")
        return
    if not info.running:
        st.warning(info.problem, icon=":material/sensors_off:")
        return
    st.markdown(f"Any OpenTelemetry program, in any language, sends its traces here "
                f"(OTLP/HTTP, `POST {info.endpoint}/v1/traces`). Set in its environment:")
    st.code("\n".join(receiving.sdk_settings(info)), language="bash")
    if info.token_required:
        st.caption("The dashboard asks for its access token, so the receiver does too: `<token>` is the "
                   "value of OBS\\_ACCESS\\_TOKEN (`Authorization: Bearer <token>`).")
    st.caption("Spans with GenAI attributes (gen\\_ai.\\*) count as requests in the charts; every trace "
               f"shows on the Traces page. Prometheus metrics of what arrives: `{info.endpoint}/metrics`.")


_ENDPOINT, _PROTOCOL, _HEADERS, _PROBLEM = "w_forward_endpoint", "w_forward_protocol", "w_forward_headers", \
    "forward_problem"


def _apply() -> None:
    """The submit: configure the forwarder, then empty the headers field (values are never sent back)."""
    forwarder = receiving.forwarder()
    try:
        forwarder.configure(str(st.session_state.get(_ENDPOINT) or "").strip(),
                            str(st.session_state.get(_PROTOCOL) or _PROTOCOLS[0]),
                            receiving.parse_headers(str(st.session_state.get(_HEADERS) or "")))
    except ValueError as exc:
        st.session_state[_PROBLEM] = str(exc)
    else:
        st.session_state[_PROBLEM] = ""
    st.session_state[_HEADERS] = ""


def _forward_form(current: receiving.ForwarderStatus | None) -> None:
    with st.form("forward", clear_on_submit=True):
        st.text_input("OTLP endpoint", placeholder="http://localhost:4318", key=_ENDPOINT,
                      help="Base URL of a collector or backend (Jaeger, Tempo, Phoenix, an "
                           "OpenTelemetry Collector); a URL with no path gets /v1/traces")
        st.selectbox("Protocol", _PROTOCOLS, key=_PROTOCOL)
        st.text_area("Headers", placeholder="authorization=Bearer ...", key=_HEADERS,
                     help="One name=value per line. Values are sent, never shown again.")
        label = "Forward to this endpoint" if current is None else "Forward here instead"
        st.form_submit_button(label, icon=":material/send:", on_click=_apply)
    problem = st.session_state.get(_PROBLEM)
    if problem:
        st.error(problem, icon=":material/error:")


def _forward() -> None:
    st.subheader("Forward traces")
    st.caption("Every trace kept from now on (chats, received traces, the proxy's calls) is also sent to an "
               "OTLP endpoint.")
    current = receiving.forwarder().status()
    if current is not None:
        names = ", ".join(current.header_names) or "none"
        st.markdown(f"Forwarding to `{current.endpoint}` ({current.protocol}); "
                    f"headers: {sidebar.md_escape(names)}")
        st.fragment(run_every=_COUNTERS_EVERY_S)(_counters)()
    _forward_form(current)


def _counters() -> None:
    """The forwarder's counters and last error: a fragment, redrawn every few seconds and by Refresh.

    Only this part reruns, not the whole app: a full run (sidebar, every
    section) can take longer than the time between two clicks on a busy
    machine, and Streamlit restarts a run in progress on each click, so
    counters drawn by full runs alone could stay at their first value.
    """
    forwarder = receiving.forwarder()
    current = forwarder.status()
    if current is None:  # stopped meanwhile (from another tab): the whole page changes
        st.rerun()
    cols = st.columns(5)
    cols[0].metric("Exported traces", current.exported)
    cols[1].metric("Exported spans", current.exported_spans)
    cols[2].metric("Retries", current.retries)
    cols[3].metric("Failed traces", current.failed)
    cols[4].metric("Dropped (queue full)", current.dropped)
    if current.last_error:
        when = dt.datetime.fromtimestamp(current.last_error_at or 0).strftime("%H:%M:%S")
        st.error(f"Last error ({when}): {current.last_error}", icon=":material/error:")
    left, right = st.columns([1, 3])
    if left.button("Stop forwarding", icon=":material/stop:"):
        forwarder.stop()
        st.rerun()  # the whole page: the form's label and this panel change
    right.button("Refresh counters", icon=":material/refresh:",
                 help=f"The counters also refresh by themselves every {_COUNTERS_EVERY_S:g} s")


def _start_proxy() -> None:
    """The submit: start the proxy with what the form holds, or keep the reason it could not."""
    try:
        proxying.dashboard_proxy().start(str(st.session_state.get(_PROXY_UPSTREAM) or ""),
                                         int(st.session_state.get(_PROXY_PORT) or 0),
                                         capture_content=bool(st.session_state.get(_PROXY_CAPTURE)))
    except (ValueError, ProxyStartError) as exc:
        st.session_state[_PROXY_PROBLEM] = str(exc)
    else:
        st.session_state[_PROXY_PROBLEM] = ""


def _proxy_form() -> None:
    app = state.get_app()
    state.init_widget(_PROXY_UPSTREAM, app.settings.server_url)
    state.init_widget(_PROXY_PORT, proxying.DEFAULT_PROXY_PORT)
    state.init_widget(_PROXY_CAPTURE, app.settings.capture_content)
    with st.form("proxy"):
        left, right = st.columns([3, 1])
        left.text_input("Upstream llama-server", key=_PROXY_UPSTREAM,
                        help="Where the proxy forwards every request: this dashboard's server (the embedded "
                             "one when the app started it) unless you name another")
        right.number_input("Proxy port", min_value=1, max_value=65535, step=1, key=_PROXY_PORT)
        st.checkbox("Record prompts and answers", key=_PROXY_CAPTURE)
        st.form_submit_button("Start the proxy", icon=":material/play_arrow:", on_click=_start_proxy)
    problem = st.session_state.get(_PROXY_PROBLEM)
    if problem:
        st.error(problem, icon=":material/error:")


def _proxy() -> None:
    st.subheader("Record any program (proxy)")
    st.caption(f"A program that talks to llama-server (Open WebUI, a LangChain app, curl, any language) "
               f"sends its requests to the proxy instead: each is forwarded unchanged, and its model calls "
               f"show here as the service {proxying.PROXY_SERVICE}, with nothing changed in the program.")
    current = proxying.dashboard_proxy().status()
    if current is None:
        _proxy_form()
        return
    content = "with prompts and answers" if current.capture_content else "without prompts and answers"
    st.markdown(f"Proxy at `{current.url}` → `{current.upstream}`, recording {content}. "
                "It listens on this machine only.")
    curl, env = proxying.examples(current.url)
    st.code(curl, language="bash")
    st.caption("OpenAI clients (the openai package, LangChain, Open WebUI's OpenAI connection): set")
    st.code(env, language="bash")
    st.fragment(run_every=_COUNTERS_EVERY_S)(_proxy_counters)()


def _proxy_counters() -> None:
    """The proxy's counters: a fragment, redrawn every few seconds without rerunning the page."""
    proxy = proxying.dashboard_proxy()
    current = proxy.status()
    if current is None:  # stopped meanwhile (from another tab): the whole page changes
        st.rerun()
    cols = st.columns(4)
    cols[0].metric("Requests relayed", current.requests)
    cols[1].metric("Model calls recorded", current.recorded)
    cols[2].metric("Upstream unreachable", current.no_answer,
                   help="Requests the proxy answered itself (502, or 504 for a timeout): nothing answered "
                        "upstream")
    cols[3].metric("Recording errors", current.telemetry_errors)
    if st.button("Stop the proxy", icon=":material/stop:"):
        proxy.stop()
        st.rerun()  # the whole page: the form comes back


def _files() -> None:
    st.subheader("Export to a file")
    st.markdown("The Traces and Sessions pages download what they show. For everything kept in a time "
                "window, from a shell:")
    st.code("python -m obs.export --format otlp-json --since 24h --out traces.json", language="bash")
    st.caption("Formats: otlp-json (OpenTelemetry), jaeger (Jaeger UI: Search → Upload), zipkin (Zipkin UI); "
               "--since 15m, 1h, 24h, 7d or all.")


def main() -> None:
    """Draw the page."""
    st.title("Export & receive")
    _receive()
    _forward()
    _proxy()
    _files()


main()
