"""aligner-proxy: inference-time alignment for any LLM behind an OpenAI-compatible proxy.

The package is split into a *core* that knows nothing of HTTP (prompt rendering,
text generation backends, the corrector, the cost scorers and the policy that
combines them) and the *proxy* built on top of it (settings, wire protocol,
upstreams, serving layer, routes). Training, batch tools and evals import the
core directly.
"""

__version__ = "0.1.0"
