"""Trained adapters: versioned artifacts in the database (weights included)."""

from __future__ import annotations

from django.db import models


class AdapterArtifact(models.Model):
    """One training run of the heads for one spec: weights, what they were trained on, metrics.

    The encoders are shared by every spec, so at most one artifact is live (trained on one
    spec, ``model_label``, applied to all) ; ``previous`` is what was live before it
    was made live, so a rollback knows where to go back to (None = the plain encoders).
    """

    model_label = models.CharField(max_length=100)
    version = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=False)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    #: the base encoders' versions the heads were trained on (an artifact fits only those)
    base_versions = models.JSONField(default=dict)
    #: training configuration, timings, label-free reliability per modality, measured metrics
    meta = models.JSONField(default=dict)
    weights = models.BinaryField()

    class Meta:
        app_label = "similarity"
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=models.Q(active=True), name="one_active_adapter"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_label} adapter {self.version}{' (active)' if self.active else ''}"
