"""Where a chat lands: start_trace is active only in its own context, as OpenTelemetry's context is."""

from __future__ import annotations

import contextvars
import threading

from tests.llm import servers
from tests.llm.client_support import MESSAGES, make_rig


def test_a_chat_on_another_thread_does_not_join_a_trace_begun_here() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        handle = rig.client.start_trace("agent")
        spans = []
        worker = threading.Thread(target=lambda: spans.append(rig.client.chat(MESSAGES).span))
        worker.start()
        worker.join()
        (other,) = spans
        # The worker's chat is a trace of its own, finished (and stored) as soon as it ended.
        assert other.trace_id != handle.trace_id and other.parent_id is None
        assert [t.id for t in rig.store.all()] == [other.trace_id]
        _, here = rig.client.chat(MESSAGES)
        trace = rig.client.end_current_trace()
    assert trace is not None and [s.id for s in trace.spans] == [here.id]


def test_a_chat_in_a_fresh_context_does_not_join_a_trace_begun_here() -> None:
    # A later request served in a context of its own (a web framework's, a script rerun's).
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        handle = rig.client.start_trace("agent")
        _, other = contextvars.Context().run(rig.client.chat, MESSAGES)
        trace = rig.client.end_current_trace()
    assert other.trace_id != handle.trace_id
    assert trace is not None and trace.spans == ()


def test_a_copied_context_carries_the_trace_along() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        handle = rig.client.start_trace("agent")
        context = contextvars.copy_context()
        spans = []
        worker = threading.Thread(target=lambda: spans.append(context.run(rig.client.chat, MESSAGES).span))
        worker.start()
        worker.join()
        trace = rig.client.end_current_trace()
    assert trace is not None and [s.id for s in trace.spans] == [spans[0].id]
    assert spans[0].trace_id == handle.trace_id


def test_end_current_trace_ends_only_the_trace_current_here() -> None:
    with servers.serve(servers.good) as server:
        rig = make_rig(server.url)
        handle = rig.client.start_trace("agent")
        elsewhere = []
        worker = threading.Thread(target=lambda: elsewhere.append(rig.client.end_current_trace()))
        worker.start()
        worker.join()
        assert elsewhere == [None] and not handle.ended
        # A trace begun with the tracer directly is not the client's to end.
        with rig.tracer.begin_trace("mine") as mine:
            assert rig.client.end_current_trace() is None
            assert not mine.ended
        trace = rig.client.end_current_trace()
    assert trace is not None and trace.id == handle.trace_id and handle.ended
