"""The review page: its files, and the same page as a self-contained report (:mod:`.page`).

The proxy serves the page at ``/ui`` (:mod:`aligner_proxy.server.ui`), and
``aligner-proxy review`` writes it with a batch output's rows embedded; one
script renders both, so the live page and the report show a diff the same way.
This package imports neither the server nor the batch tools.
"""
