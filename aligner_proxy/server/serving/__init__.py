"""The serving layer: one serving class per endpoint, each doing the work its route only translates.

Laid out as vLLM's ``entrypoints/openai`` keeps protocol, serving and router
apart: :mod:`~aligner_proxy.server.routes` parses HTTP and calls
:class:`~.chat.ChatServing`, :class:`~.completions.CompletionServing` or
:class:`~.aligner.AlignerServing`, which speak the wire models of
:mod:`~aligner_proxy.server.protocol` and the core's types. The alignment
policy, streamed answers included, is the core's
(:class:`~aligner_proxy.core.policy.AlignmentPipeline`); this layer only calls
it, annotates its outcomes (:mod:`.annotation`) and encodes streams as SSE
(:mod:`.sse`, :mod:`.stream`).
"""
