"""Tracing: ids, span and trace values, the Tracer, sampling, and the processor seam.

The flow inside this package: `tracer` hands out running handles (`handles`);
ending them makes immutable `spans.Span` and `traces.Trace` values; a finished
trace is sampled (`sampling.head` when it begins, `sampling.tail` when it
ends) and a kept one goes to every `processors.TraceProcessor`, which hand it
to exporters (the store is one of them).
"""
