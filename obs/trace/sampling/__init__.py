"""Sampling: which traces are kept (processed, stored and exported) and which are dropped.

Two moments decide. *Head* sampling (`head`) decides when a trace begins, from
the trace id alone and the parent's decision. *Tail* sampling (`tail`) decides
when the trace has ended and everything about it is known: `TailSampler` keeps
errors, slow traces, traces that match an attribute, and a random share of the
rest.

Sampling decides what reaches the processors, never what is counted: request
metrics are recorded for every request whatever happens to its trace.
"""
