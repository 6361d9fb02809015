"""Renderers for results: terminal (rich), HTML, Markdown and JSON."""
