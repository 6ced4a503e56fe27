"""session-manager: durable, resumable sessions for AI-assisted work."""

__version__ = "0.1.0"
