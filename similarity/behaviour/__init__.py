"""Behaviour: learn from what shoppers do (bought together, recommended from recent views, trending).

Events (``models.Event``) come from ``import_events``, the storefront view hook (``recording``)
and ``record_purchase``; ``train`` fits item–item models and makes one live; ``serving`` answers
the widgets through Qdrant, blended with content; ``evaluation`` scores held-out events.
See docs/behaviour.md.
"""
