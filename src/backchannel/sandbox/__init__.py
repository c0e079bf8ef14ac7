"""Local emulators of the TikTok Events API and Meta's Conversions API.

Why: so a new install sees events flow end to end without real tokens, and so every test of
delivery (validation errors, rate limits, outages, duplicates) runs against the platforms'
real error shapes over real HTTP, offline. See :mod:`backchannel.sandbox.app` for the routes.
"""

from backchannel.sandbox.app import create_app
from backchannel.sandbox.config import SandboxConfig
from backchannel.sandbox.faults import Faults, faults_from_options

__all__ = ["Faults", "SandboxConfig", "create_app", "faults_from_options"]
