"""Widgets the pages share; each owns its session-state keys."""
