"""Backchannel: server-side conversion tracking for TikTok's Events API and Meta's CAPI."""

from __future__ import annotations

__version__ = "0.1.0"
